"""Whole epochs on device: the training set resident, the step loop inside XLA.

:func:`~jvae.train_state.make_train_step` takes one host batch per call, so a
step costs a Python dispatch, a host gather and a host-to-device copy. For
datasets that fit in device memory (MNIST-sized data: 60k x 784 float32 is
188 MB) :func:`make_train_epoch` removes all three: the split lives on the
device, each batch is gathered there by index, and a chunk of steps (a whole
epoch by default) is one ``lax.scan`` over the very same update function
(:func:`~jvae.train_state.make_update_fn`), the metrics summed on device.
One dispatch per chunk, no host syncs inside it, the state's buffers
donated. (On XLA:CPU, models with convolutions run slower inside a loop; see
:func:`device_loop_is_fast`.)

The batch order is the permutation :func:`jvae.data.batches` draws from
``(seed, epoch)``, so the on-device path visits exactly the batches the host
iterator yields, and a resumed run replays an uninterrupted one. It is drawn
with NumPy on the host rather than with ``jax.random.permutation`` (a sort,
slow on XLA:CPU) and shipped as an int32
array of ``steps * batch_size`` entries.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jvae.base import Array, Batch
from jvae.datasets.order import epoch_order
from jvae.datasets.pixels import binarize
from jvae.devices.parallel import batch_sharding, data_mesh, replicated_sharding
from jvae.objectives import Objective
from jvae.training.noise import uniform_noise
from jvae.training.state import TrainState, make_update_fn

__all__ = ["epoch_order", "put_dataset", "make_train_epoch", "binarize_key", "chunk_length",
           "has_convolutions", "device_loop_is_fast"]


# Tag of the binarization stream, so it is independent of the keys a run
# splits from its seed for initialization, evaluation and sampling.
_BINARIZE_STREAM = 0x62696E

# The most memory a chunk's binarized images may take to be drawn ahead of its
# steps (10 steps of 100 MNIST images take 3 MB); larger chunks draw per step.
_MAX_BINARIZED_CHUNK = 64 * 2 ** 20


def binarize_key(seed: int, epoch: int) -> Array:
    """The key whose ``fold_in(key, step)`` draws epoch ``epoch``'s dynamic binarization."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _BINARIZE_STREAM), epoch)


def put_dataset(data: dict[str, np.ndarray], mesh: Mesh | None = None) -> dict[str, Array]:
    """Copies a split to every device of the mesh (replicated).

    Replication keeps any example reachable from any device, so batches are
    gathered from global indices and the run is the same on 1 or N devices.
    Each device holds the whole split; for data larger than one device's
    memory, feed host batches to :func:`~jvae.train_state.make_train_step`.
    """
    mesh = mesh or data_mesh()
    return jax.device_put(dict(data), replicated_sharding(mesh))


def make_train_epoch(objective: Objective, optimizer: optax.GradientTransformation, *,
                     mesh: Mesh | None = None, dynamic_binarize: bool = False,
                     donate: bool = True
                     ) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """Builds the jitted ``(state, data, order, key, start) -> (state, sums)``.

    Runs one step per row of ``order`` as a ``lax.scan``: step ``j`` gathers
    rows ``order[j]`` of every array in ``data``, shards the batch over the
    mesh's ``"data"`` axis, optionally binarizes it, and applies
    :func:`~jvae.train_state.make_update_fn`'s update. Pass a whole epoch's
    order for one dispatch per epoch, or equal slices of it (a progress bar);
    ``start`` is the index of the first row within the epoch, so the
    binarization noise and the results are the same however the epoch is cut.
    The number of steps is the static length of ``order``: XLA sees a loop of
    known trip count (without one, XLA:GPU reads the loop condition back to
    the host every iteration), and one executable serves every chunk of that
    length.

    Args:
      objective: the loss.
      optimizer: an optax transformation.
      mesh: device mesh; all local devices when None.
      dynamic_binarize: resample binary pixels ``1[u < x]`` for every step,
        with ``u`` drawn from ``fold_in(key, start + j)`` (see :func:`binarize_key`);
        a chunk's images (up to 64 MiB of them) are binarized together before its
        steps run, the same values as drawn step by step.
      donate: donate the input state's buffers to the output.

    Returns:
      The jitted function. Arguments: the replicated ``state``; ``data``, a
      dict of device arrays with a shared leading axis (:func:`put_dataset`);
      ``order``, int32 ``(steps, batch_size)`` (rows of :func:`epoch_order`);
      ``key``, a typed PRNG key (used only with ``dynamic_binarize``); ``start``,
      an int32 scalar. Returns the new state and the *sums* over the steps of
      each metric of :func:`~jvae.train_state.make_update_fn` (divide by
      ``len(order)`` for means).
    """
    mesh = mesh or data_mesh()
    update = make_update_fn(objective, optimizer)
    rep, shard = replicated_sharding(mesh), batch_sharding(mesh)

    def gather(data: Batch, rows: Array) -> Batch:
        # Sharded indices make each device gather only its own rows.
        idx = lax.with_sharding_constraint(rows, shard)
        return {k: lax.with_sharding_constraint(v[idx], shard) for k, v in data.items()}

    def binarized(x: Array, key: Array, i: Array) -> Array:
        return binarize(x, uniform_noise(jax.random.fold_in(key, i), x.shape, x.dtype))

    def run(state: TrainState, data: Batch, order: Array, key: Array, start: Array):
        steps = jnp.arange(order.shape[0], dtype=jnp.int32)
        images, per_step_data = None, data
        if dynamic_binarize and _chunk_bytes(data["image"], order) <= _MAX_BINARIZED_CHUNK:
            # The chunk's binary images are drawn before the loop, as one array the steps
            # read: drawn inside the step, XLA fuses the (cheap-looking) hash into every
            # kernel that reads a pixel, once per use and, where a batch is broadcast over
            # importance samples, once per sample (ten hashes a pixel for IWAE-10).
            order_shard = jax.sharding.NamedSharding(mesh, P(None, *shard.spec))
            rows = lax.with_sharding_constraint(order, order_shard)
            images = jax.vmap(binarized, (0, None, 0))(data["image"][rows], key, start + steps)
            per_step_data = {k: v for k, v in data.items() if k != "image"}

        def body(state, xs):
            j, rows, image = xs
            batch = gather(per_step_data, rows)
            if image is not None:
                batch["image"] = lax.with_sharding_constraint(image, shard)
            elif dynamic_binarize:
                batch["image"] = binarized(batch["image"], key, start + j)
            return update(state, batch)

        # The steps' metrics come out stacked and are summed after the loop: carrying
        # the sums would need their shapes first, a second trace of the whole update
        # (a tenth of the compile of a small model, more for one with special functions).
        state, per_step = lax.scan(body, state, (steps, order, images))
        return state, _sum_in_order(per_step)

    return jax.jit(run, in_shardings=(rep, rep, rep, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate else ())


def _chunk_bytes(images: Array, order: Array) -> int:
    return order.size * math.prod(images.shape[1:]) * images.dtype.itemsize


def _sum_in_order(stacked: dict[str, Array]) -> dict[str, Array]:
    """Each entry's ``x[0] + x[1] + ...`` added one step at a time, as the host loop adds
    a step's metrics to its running sums, so the device and host paths give equal bits."""
    zeros = jax.tree.map(lambda x: jnp.zeros_like(x[0]), stacked)
    total, _ = lax.scan(lambda total, x: (jax.tree.map(jnp.add, total, x), None), zeros, stacked)
    return total


def chunk_length(steps: int, chunks: int = 20) -> int:
    """A divisor of ``steps`` cutting an epoch into about ``chunks`` equal calls.

    Equal chunks share one executable. When no divisor gives between 4 and
    ``4 * chunks`` chunks (a prime number of steps) the whole epoch is one chunk.
    """
    options = [d for d in range(1, steps + 1)
               if steps % d == 0 and 4 <= steps // d <= 4 * chunks]
    if not options:
        return steps
    return min(options, key=lambda d: (abs(steps // d - chunks), d))


def has_convolutions(fn: Callable, *args) -> bool:
    """Whether ``fn(*args)`` traces to any convolution (nested jaxprs included)."""
    def walk(jaxpr) -> bool:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                return True
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                if walk(sub):
                    return True
        return False
    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def device_loop_is_fast(objective: Objective, state: TrainState, example: Batch) -> bool:
    """Whether :func:`make_train_epoch`'s on-device loop suits this model on this backend.

    XLA:CPU (jax 0.10) compiles convolutions inside a loop body without the
    XNNPACK kernels it uses at the top level of a program, and the conv VAE's
    step runs several times slower in the loop (``benchmarks/README.md``). On CPU, models
    with convolutions are therefore better served one dispatch per step
    (:func:`~jvae.train_state.make_train_step`); everything else, and every
    model on GPU and TPU, runs the loop. The objective's forward pass decides (a
    convolution's gradients are convolutions too): tracing the whole update for it
    took 4 s of a small Stable Diffusion VAE's start.
    """
    if jax.default_backend() != "cpu":
        return True

    def forward(params, batch, loss_state):
        return objective.terms(params, batch, jax.random.key(0), loss_state)
    return not has_convolutions(forward, state.params, example, state.loss_state)
