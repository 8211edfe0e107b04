"""The train program: where the data lives, one ahead-of-time compile, the epoch driver.

One definition serves every caller that trains or plans training (the
``train`` command, the memory planner, the benchmarks, the dashboard):

* :func:`resolve_placement` picks ``device`` (the split resident on the
  devices, each chunk of an epoch one ``lax.scan``, :mod:`jvae.epoch`) or
  ``host`` (one host batch per dispatch, :func:`~jvae.train_state.make_train_step`);
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

from jvae.base import Array, Batch
from jvae.data import batches, num_batches
from jvae.epoch import (
    binarize_key,
    chunk_length,
    device_loop_is_fast,
    epoch_order,
    make_train_epoch,
    put_dataset,
)
from jvae.experiment import Experiment
from jvae.parallel import batch_sharding, replicate, replicated_sharding
from jvae.train_state import TrainState, make_train_step

__all__ = ["PLACEMENTS", "TrainProgram", "resolve_placement", "lower_program",
           "compile_program", "run_epoch", "accumulate", "evaluate_split"]

PLACEMENTS = ("auto", "device", "host")

# (steps done in the epoch, metric sums of the chunk just run, state) -> None
ChunkCallback = Callable[[int, dict[str, Array], TrainState], None]


class TrainProgram(NamedTuple):
    """A compiled train program and what driving it needs.

    Attributes:
      placement: ``"device"`` or ``"host"``.
      run: the compiled executable: ``(state, data, order, key, start)`` on
        device, ``(state, batch)`` on host.
      data: the training split (device arrays on device, host arrays on host).
      mesh: the device mesh.
      batch_size: global batch size.
      steps_per_epoch: steps of one epoch (the last partial batch is dropped).
      chunk: steps per dispatch (``device``) or per callback (``host``).
      seed: the run's seed (epoch order and binarization).
      dynamic_binarize: whether batches are binarized afresh each step.
      compile_s: seconds the compile took.
      flops: XLA's cost estimate of one step, or None.
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


def resolve_placement(placement: str, experiment: Experiment, state: TrainState,
                      example: Batch) -> str:
    """``"device"`` or ``"host"`` for a ``placement`` setting of ``auto``, ``device`` or ``host``.

    ``auto`` is ``device`` except for convolutional models on XLA:CPU, which
    runs them faster one dispatch per step (see :func:`~jvae.epoch.device_loop_is_fast`).
    """
    if placement != "auto":
        return placement
    fast = device_loop_is_fast(experiment.objective, experiment.optimizer, state, example)
    return "device" if fast else "host"


def _spec(shape, dtype, sharding):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def lower_program(experiment: Experiment, mesh: Mesh, state: Any, data: Any, *,
                  placement: str, batch_size: int, chunk: int,
                  dynamic_binarize: bool = False) -> jax.stages.Lowered:
    """Lowers the train program; ``state`` and ``data`` may be arrays or shapes.

    Args:
      experiment: from :func:`~jvae.experiment.build`.
      mesh: the device mesh.
      state: the train state or its ``jax.ShapeDtypeStruct`` tree (replicated).
      data: the training split (``device``: the resident arrays or their
        shapes; ``host``: anything with per-example shapes, only ``shape[1:]``
        and dtypes are read).
      placement: ``"device"`` or ``"host"``.
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
                    train: dict[str, np.ndarray], *, placement: str, batch_size: int,
                    seed: int, dynamic_binarize: bool = False,
                    chunks_per_epoch: int | None = 20) -> TrainProgram:
    """Places the training split and compiles the train program once.

    Args:
      experiment: from :func:`~jvae.experiment.build`.
      mesh: the device mesh.
      state: the replicated train state.
      train: the training split as host arrays (``"image"``, and the
        conditioning entry of a conditional model).
      placement: ``"device"`` or ``"host"`` (see :func:`resolve_placement`).
      batch_size: global batch size.
      seed: the run's seed.
      dynamic_binarize: binarize each batch afresh.
      chunks_per_epoch: about how many dispatches (and callbacks) an epoch is
        cut into, for a moving progress bar; None runs a device epoch in one
        dispatch.

    Returns:
      A :class:`TrainProgram`.
    """
    steps = num_batches(len(train["image"]), batch_size, True)
    chunk = steps if chunks_per_epoch is None else chunk_length(steps, chunks_per_epoch)
    train = {k: v for k, v in train.items() if k != "label"}
    data = put_dataset(train, mesh) if placement == "device" else train
    t0 = time.perf_counter()
    run = lower_program(experiment, mesh, state, data, placement=placement,
                        batch_size=batch_size, chunk=chunk,
                        dynamic_binarize=dynamic_binarize).compile()
    compile_s = time.perf_counter() - t0
    cost = run.cost_analysis() or {}
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    # XLA's cost analysis counts a loop body once: either way the figure is one step's.
    return TrainProgram(placement, run, data, mesh, batch_size, steps, chunk, seed,
                        dynamic_binarize, compile_s, cost.get("flops"))


def accumulate(total: dict | None, new: dict) -> dict:
    """Adds a dict of device scalars to a running total (None at the start), on device."""
    return new if total is None else jax.tree.map(jnp.add, total, new)


def run_epoch(program: TrainProgram, state: TrainState, epoch: int, *, start: int = 0,
              on_chunk: ChunkCallback | None = None) -> tuple[TrainState, dict[str, Array]]:
    """Runs steps ``start, ..., steps_per_epoch - 1`` of epoch ``epoch``.

    Both placements see the same batches in the same order (:func:`~jvae.epoch.epoch_order`
    is :func:`~jvae.data.batches`' permutation), so starting mid-epoch at the
    step after a checkpoint continues the uninterrupted run exactly.

    Args:
      program: from :func:`compile_program`.
      state: the train state (donated: do not reuse it).
      epoch: 0-based epoch index.
      start: first step within the epoch (a multiple of ``program.chunk`` on device).
      on_chunk: called after every chunk with the steps done so far in this
        epoch, the chunk's metric sums and the new state.

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
    stream = batches(program.data, program.batch_size, seed=program.seed, epoch=epoch,
                     dynamic_binarize=program.dynamic_binarize, mesh=program.mesh, start=start)
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
