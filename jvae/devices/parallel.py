"""Device meshes and placement for data-parallel training.

jvae parallelizes by ``jax.jit`` over a one-axis mesh named ``"data"``: the
batch is sharded along its leading axis (``P("data")``) and the train state is
replicated (``P()``). XLA inserts the gradient all-reduce, so the step is the
same program on 1 or N devices and gives the same numbers up to summation
order. ``jax.pmap`` is not used (it is legacy in current JAX).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jvae.base import PyTree

__all__ = ["data_mesh", "batch_sharding", "replicated_sharding", "shard_batch", "replicate"]

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | int | None = None) -> Mesh:
    """A one-axis ``"data"`` mesh.

    Args:
      devices: the devices to use, a count of local devices (the first ``n``),
        or None for all local devices (across hosts after
        ``jax.distributed.initialize``, ``jax.devices()`` spans every host).

    Returns:
      A :class:`jax.sharding.Mesh`. Its axis is ``Auto`` so that XLA's sharding
      propagation handles the reshapes inside user models without annotations.
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f"asked for {devices} devices, {len(available)} available")
        devices = available[:devices]
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=list(devices))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading axis split over the ``"data"`` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of replicated values (parameters, optimizer state)."""
    return NamedSharding(mesh, P())


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Places host arrays on the mesh, split along the leading axis.

    On a mesh spanning several processes every process passes the same global
    batch and transfers only its own rows (:func:`jvae.devices.distributed.put_global_batch`).

    Raises:
      ValueError: if the leading axis is not divisible by the number of devices.
    """
    n = mesh.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % n:
            raise ValueError(f"batch of {leaf.shape[0]} examples cannot be split over {n} "
                             f"devices: use a batch size divisible by {n}")
    if jax.process_count() > 1:
        from jvae.devices.distributed import put_global_batch
        return put_global_batch(batch, batch_sharding(mesh))
    return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a copy of a pytree on every device of the mesh.

    Always copies: the train step donates its input state, which must not
    delete the caller's arrays. (``device_put`` alone may reuse the source
    buffer for the shard on the source's device, even with ``may_alias=False``.)
    """
    if jax.process_count() > 1:
        from jvae.devices.distributed import put_replicated
        return put_replicated(tree, replicated_sharding(mesh))
    fresh = jax.tree.map(lambda a: jnp.array(a, copy=True), tree)
    return jax.device_put(fresh, replicated_sharding(mesh))
