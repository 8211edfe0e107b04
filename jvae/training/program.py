"""The train program: where the data lives, one ahead-of-time compile, the epoch driver.

One definition serves every caller that trains or plans training (the
``train`` command, the memory planner, the benchmarks, the dashboard):

* :func:`resolve_placement` picks ``device`` (the split resident on the
  devices, each chunk of an epoch one ``lax.scan``, :mod:`jvae.training.epoch`),
  ``host`` (one host batch per dispatch, :func:`~jvae.train_state.make_train_step`)
  or ``stream`` (the same per-step program, its batches read from disk by
  grain while the devices train, :class:`~jvae.datasets.stream.Feed`);
* :func:`lower_program` lowers that program for shapes alone, so the memory
  planner compiles exactly what training runs;
* :func:`compile_program` compiles it once per run (a shape change raises
  instead of silently recompiling) into a :class:`TrainProgram`;
* :func:`run_epoch` drives one epoch of it, chunk by chunk, from any step
  within the epoch, calling back after every chunk.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jvae._compile import fast_compile_options
from jvae.base import Array, Batch, ConfigError
from jvae.datasets.batching import batches
from jvae.datasets.order import num_batches
from jvae.datasets.stream import Feed, is_lazy
from jvae.devices.budget import device_memory_budget
from jvae.devices.distributed import put_process_batch
from jvae.devices.parallel import batch_sharding, replicate, replicated_sharding
from jvae.training.epoch import (
    binarize_key,
    chunk_length,
    device_loop_is_fast,
    epoch_order,
    make_train_epoch,
    put_dataset,
)
from jvae.training.experiment import Experiment
from jvae.training.state import TrainState, make_train_step

__all__ = ["TrainProgram", "data_budget", "split_bytes", "resolve_placement",
           "lower_program", "compile_program", "run_epoch", "accumulate", "evaluate_split"]

# Share of a device's memory the resident training split may take under
# ``auto``; the rest is the model's, its optimizer state's and activations'.
DATA_SHARE = 0.5

# (steps done in the epoch, metric sums of the chunk just run, state) -> None
ChunkCallback = Callable[[int, dict[str, Array], TrainState], None]


class TrainProgram(NamedTuple):
    """A compiled train program and what driving it needs.

    Attributes:
      placement: ``"device"``, ``"host"`` or ``"stream"``.
      run: the compiled executable: ``(state, data, order, key, start)`` on
        device, ``(state, batch)`` on host and when streaming.
      data: the training split (device arrays on device, host arrays on host,
        arrays or on-disk :class:`~jvae.datasets.stream.SplitView` s when streaming).
      mesh: the device mesh.
      batch_size: global batch size.
      steps_per_epoch: steps of one epoch (the last partial batch is dropped).
      chunk: steps per dispatch (``device``) or per callback (``host``).
      seed: the run's seed (epoch order and binarization).
      dynamic_binarize: whether batches are binarized afresh each step.
      compile_s: seconds the compile took.
      flops: XLA's cost estimate of one step, or None.
      feed: the :class:`~jvae.datasets.stream.Feed` when streaming, else None.
    """

    placement: str
    run: Any
    data: Batch
    mesh: Mesh
    batch_size: int
    steps_per_epoch: int
    chunk: int
    seed: int
    dynamic_binarize: bool
    compile_s: float
    flops: float | None
    feed: Any = None


def data_budget() -> int:
    """Bytes of one device's memory the training split may take under ``auto``.

    :data:`DATA_SHARE` of :func:`~jvae.devices.budget.device_memory_budget`: on
    GPU/TPU of the allocator's limit; on CPU, where ``memory_stats()`` gives
    none, of the host's available memory shared among the local CPU devices.
    """
    return device_memory_budget(fraction=DATA_SHARE)


def split_bytes(train: dict[str, Any]) -> int:
    """Bytes a split takes resident on one device (each device holds all of it)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
               for k, v in train.items() if k != "label")


def resolve_placement(placement: str, experiment: Experiment, state: TrainState,
                      example: Batch, train: dict[str, Any] | None = None) -> str:
    """``"device"``, ``"host"`` or ``"stream"`` for a ``placement`` setting.

    ``auto`` keeps a training split that fits (:func:`split_bytes` at most
    :func:`data_budget`) in device memory, except for convolutional models on
    XLA:CPU, which run faster one dispatch per step (see
    :func:`~jvae.training.epoch.device_loop_is_fast`): ``host`` for those. A split that
    does not fit streams from disk when it is there (a folder's
    :class:`~jvae.datasets.stream.SplitView`), else is fed from host memory.

    Args:
      placement: ``auto``, ``device``, ``host`` or ``stream``.
      experiment, state, example: the model and a batch, for the device-loop test.
      train: the training split (None: its size is not considered).
    """
    if placement != "auto":
        return placement
    if train is not None and split_bytes(train) > data_budget():
        return "stream" if is_lazy(train) else "host"
    fast = device_loop_is_fast(experiment.objective, state, example)
    return "device" if fast else "host"


def _spec(shape, dtype, sharding):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def lower_program(experiment: Experiment, mesh: Mesh, state: Any, data: Any, *,
                  placement: str, batch_size: int, chunk: int,
                  dynamic_binarize: bool = False) -> jax.stages.Lowered:
    """Lowers the train program; ``state`` and ``data`` may be arrays or shapes.

    Args:
      experiment: from :func:`~jvae.training.experiment.build`.
      mesh: the device mesh.
      state: the train state or its ``jax.ShapeDtypeStruct`` tree (replicated).
      data: the training split (``device``: the resident arrays or their
        shapes; ``host``: anything with per-example shapes, only ``shape[1:]``
        and dtypes are read).
      placement: ``"device"``, ``"host"`` or ``"stream"`` (the host program).
      batch_size: global batch size.
      chunk: steps per dispatch of the device loop.
      dynamic_binarize: binarize each batch afresh.

    Returns:
      The lowered program (``.compile()`` it, or read its memory plan).
    """
    rep = replicated_sharding(mesh)
    if placement == "device":
        run = make_train_epoch(experiment.objective, experiment.optimizer, mesh=mesh,
                               dynamic_binarize=dynamic_binarize)
        return run.lower(state, data, _spec((chunk, batch_size), jnp.int32, rep),
                         _spec((), jax.random.key(0).dtype, rep), _spec((), jnp.int32, rep))
    shard = batch_sharding(mesh)
    batch = {k: _spec((batch_size, *v.shape[1:]), v.dtype, shard) for k, v in data.items()
             if k != "label"}
    batch["mask"] = _spec((batch_size,), jnp.float32, shard)
    return make_train_step(experiment.objective, experiment.optimizer, mesh=mesh).lower(
        state, batch)


def compile_program(experiment: Experiment, mesh: Mesh, state: TrainState,
                    train: dict[str, Any], *, placement: str, batch_size: int,
                    seed: int, dynamic_binarize: bool = False,
                    chunks_per_epoch: int | None = 20, workers: int = 0,
                    prefetch: int = 4) -> TrainProgram:
    """Places the training split and compiles the train program once.

    Args:
      experiment: from :func:`~jvae.training.experiment.build`.
      mesh: the device mesh.
      state: the replicated train state.
      train: the training split as host arrays (``"image"``, and the
        conditioning entry of a conditional model); ``"image"`` may be a
        :class:`~jvae.datasets.stream.SplitView`, read into memory unless streaming.
      placement: ``"device"``, ``"host"`` or ``"stream"`` (see :func:`resolve_placement`).
      batch_size: global batch size.
      seed: the run's seed.
      dynamic_binarize: binarize each batch afresh.
      chunks_per_epoch: about how many dispatches (and callbacks) an epoch is
        cut into, for a moving progress bar; None runs a device epoch in one
        dispatch.
      workers: grain worker processes when streaming (0: reader threads here).
      prefetch: batches read ahead when streaming.

    Returns:
      A :class:`TrainProgram`.
    """
    steps = num_batches(len(train["image"]), batch_size, True)
    chunk = steps if chunks_per_epoch is None else chunk_length(steps, chunks_per_epoch)
    train = {k: v for k, v in train.items() if k != "label"}
    feed = None
    if placement == "stream":
        _check_grain()
        data = train
        feed = Feed(train, batch_size=batch_size, seed=seed, dynamic_binarize=dynamic_binarize,
                    workers=workers, prefetch=prefetch)
    else:  # a split left on disk is read in now
        data = {k: np.asarray(v) for k, v in train.items()}
        data = put_dataset(data, mesh) if placement == "device" else data
    t0 = time.perf_counter()
    run = lower_program(experiment, mesh, state, data, placement=placement,
                        batch_size=batch_size, chunk=chunk,
                        dynamic_binarize=dynamic_binarize).compile(
                            compiler_options=fast_compile_options())
    compile_s = time.perf_counter() - t0
    cost = run.cost_analysis() or {}
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    # XLA's cost analysis counts a loop body once: either way the figure is one step's.
    return TrainProgram(placement, run, data, mesh, batch_size, steps, chunk, seed,
                        dynamic_binarize, compile_s, cost.get("flops"), feed)


def _check_grain() -> None:
    import importlib.util
    if importlib.util.find_spec("grain") is None:
        raise ConfigError("--data-placement stream needs grain: pip install 'jvae[stream]' "
                          "(or choose --data-placement host)")


def _put_local(batch: dict[str, np.ndarray], mesh: Mesh, batch_size: int) -> Batch:
    """Places this process's rows of a global batch (all of it in one process) on the mesh."""
    if jax.process_count() == 1:
        return jax.device_put(batch, batch_sharding(mesh))
    return put_process_batch(batch, batch_sharding(mesh), batch_size)


def accumulate(total: dict | None, new: dict) -> dict:
    """Adds a dict of device scalars to a running total (None at the start), on device."""
    return new if total is None else jax.tree.map(jnp.add, total, new)


def run_epoch(program: TrainProgram, state: TrainState, epoch: int, *, start: int = 0,
              on_chunk: ChunkCallback | None = None, resume: dict | None = None
              ) -> tuple[TrainState, dict[str, Array]]:
    """Runs steps ``start, ..., steps_per_epoch - 1`` of epoch ``epoch``.

    Every placement sees the same batches in the same order (:func:`~jvae.training.epoch.epoch_order`
    is :func:`~jvae.data.batches`' permutation), so starting mid-epoch at the
    step after a checkpoint continues the uninterrupted run exactly. When
    streaming, ``program.feed.position()`` is where the input iterator stands
    (saved with a checkpoint, passed back as ``resume``).

    Args:
      program: from :func:`compile_program`.
      state: the train state (donated: do not reuse it).
      epoch: 0-based epoch index.
      start: first step within the epoch (a multiple of ``program.chunk`` on device).
      on_chunk: called after every chunk with the steps done so far in this
        epoch, the chunk's metric sums and the new state.
      resume: when streaming, a saved ``feed.position()`` of this epoch at ``start``.

    Returns:
      ``(state, sums)``: the metric sums over the steps run (divide by their
      number for means).
    """
    total = None
    if program.placement == "device":
        if start % program.chunk:
            raise ValueError(f"start={start} is not a multiple of the chunk {program.chunk}")
        rep = replicated_sharding(program.mesh)
        order = epoch_order(len(program.data["image"]), program.batch_size, seed=program.seed,
                            epoch=epoch)
        # Through replicate: a key array on one device cannot go to other processes' devices.
        key = replicate(binarize_key(program.seed, epoch), program.mesh)
        for first in range(start, program.steps_per_epoch, program.chunk):
            state, sums = program.run(state, program.data,
                                      jax.device_put(order[first:first + program.chunk], rep),
                                      key, np.int32(first))
            total = accumulate(total, sums)
            if on_chunk is not None:
                on_chunk(first + program.chunk, sums, state)
        return state, total
    chunk_sums = None
    if program.placement == "stream":
        stream = (_put_local(b, program.mesh, program.batch_size)
                  for b in program.feed.epoch_batches(epoch, start, resume))
    else:
        stream = batches(program.data, program.batch_size, seed=program.seed, epoch=epoch,
                         dynamic_binarize=program.dynamic_binarize, mesh=program.mesh,
                         start=start)
    for i, batch in enumerate(stream, start=start):
        state, metrics = program.run(state, batch)
        total = accumulate(total, metrics)
        chunk_sums = accumulate(chunk_sums, metrics)
        done = i + 1
        if on_chunk is not None and (done % program.chunk == 0
                                     or done == program.steps_per_epoch):
            on_chunk(done, chunk_sums, state)
            chunk_sums = None
    return state, total


def evaluate_split(eval_step: Callable[..., dict], params: Any, data: dict[str, np.ndarray],
                   batch_size: int, key: Array, mesh: Mesh, loss_state: Any = ()
                   ) -> dict[str, float]:
    """Means of an evaluation's per-example values over a whole split (every example once).

    Args:
      eval_step: ``(params, batch, key, loss_state) -> masked sums with "count"``
        (:func:`~jvae.train_state.make_eval_step`).
      params: model parameters.
      data: the split, float images.
      batch_size: evaluation batch size; the last batch is padded and masked.
      key: PRNG key; batch ``i`` uses ``fold_in(key, i)``.
      mesh: device mesh.
      loss_state: the objective's state.

    Returns:
      ``{name: mean}`` in nats per example.
    """
    data = {k: v for k, v in data.items() if k != "label"}
    totals = None
    for i, batch in enumerate(batches(data, batch_size, shuffle=False, drop_remainder=False,
                                      mesh=mesh)):
        totals = accumulate(totals, eval_step(params, batch, jax.random.fold_in(key, i),
                                              loss_state))
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}
