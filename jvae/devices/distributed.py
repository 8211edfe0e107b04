"""Training across processes (several hosts) with JAX's own distributed runtime.

After :func:`initialize`, ``jax.devices()`` lists the devices of every
process, so :func:`~jvae.devices.parallel.data_mesh` spans them all and the jitted
train step is one SPMD program whose gradient all-reduce crosses processes.
What changes for the caller:

* **feeding**: every process computes the same global batch order, and each
  hands over only the rows its own devices hold (:func:`put_global_batch`,
  ``jax.make_array_from_process_local_data``);
* **metrics**: outputs replicated over the mesh are global already; every
  process reads the same numbers;
* **files**: only process 0 writes metrics, images and the dashboard
  (:func:`is_primary`); checkpoints are written collectively by orbax, every
  process taking part (the workdir must be shared by all processes).

Launch one process per host, each with the same flags plus its own
``--process-id``::

    python -m jvae.train --workdir /shared/run --coordinator-address host0:1234 \\
        --num-processes 2 --process-id 0   # on host0
    python -m jvae.train --workdir /shared/run --coordinator-address host0:1234 \\
        --num-processes 2 --process-id 1   # on host1

Under SLURM, Open MPI and other clusters JAX detects all three values itself;
:func:`initialize` then needs none of them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Sharding

from jvae._compat import settle_compilation_cache
from jvae.base import ConfigError

PyTree = Any

__all__ = ["DistributedError", "cluster_detected", "initialize", "is_primary", "local_rows",
           "put_process_batch", "put_global_batch", "put_replicated", "to_host", "local_copy",
           "barrier"]


class DistributedError(ConfigError):
    """Distributed settings that cannot work; the message names the fix."""


# Environment variables by which a cluster launcher announces a multi-process job
# (those whose cluster JAX's ``jax.distributed.initialize()`` can auto-detect).
_CLUSTER_SIZES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def cluster_detected() -> bool:
    """Whether this process was started as one of several by a cluster launcher."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for name in _CLUSTER_SIZES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins the distributed job, when there is one; call before any other JAX use.

    With no arguments, a job started by a cluster launcher (:func:`cluster_detected`)
    is joined with JAX's auto-detection; otherwise nothing happens (one process).
    A job of several processes on CPUs under jax 0.12 compiles without the persistent
    compilation cache, whose executables would hang there
    (:func:`jvae._compat.settle_compilation_cache`).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: number of processes in the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.

    Returns:
      Whether more than one process takes part.

    Raises:
      DistributedError: inconsistent settings.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    if all(v is None for v in given.values()):
        if not cluster_detected():
            return False
        jax.distributed.initialize()
        settle_compilation_cache()
        return jax.process_count() > 1
    if not cluster_detected():
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise DistributedError(
                f"distributed training needs --{' and --'.join(m.replace('_', '-') for m in missing)}"
                " as well (outside a cluster launcher that sets them)")
    if coordinator_address is not None and ":" not in coordinator_address:
        raise DistributedError(f"coordinator_address={coordinator_address!r} must be HOST:PORT")
    if num_processes is not None and num_processes < 1:
        raise DistributedError(f"num_processes must be positive, got {num_processes}")
    if (process_id is not None and num_processes is not None
            and not 0 <= process_id < num_processes):
        raise DistributedError(f"process_id={process_id} must be in [0, {num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    settle_compilation_cache()
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def local_rows(sharding: Sharding, global_shape: tuple[int, ...]) -> slice:
    """The rows of a global batch that this process's devices hold.

    Batches are split along their leading axis only, and a one-axis mesh
    orders its devices by process, so the rows form one contiguous block.
    """
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map(global_shape).values():
        rows = index[0] if index else slice(None)
        start, stop, _ = rows.indices(global_shape[0])
        starts.append(start)
        stops.append(stop)
    return slice(min(starts), max(stops))


def put_process_batch(batch: PyTree, sharding: Sharding, global_size: int) -> PyTree:
    """Places this process's rows of a global batch of ``global_size`` examples on the mesh.

    Each process passes only the rows its devices hold (:func:`local_rows`)
    and transfers them (``make_array_from_process_local_data``).
    """
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:]))
    return jax.tree.map(put, batch)


def put_global_batch(batch: PyTree, sharding: Sharding) -> PyTree:
    """Places a host batch, identical on every process, on a multi-process mesh.

    Each process transfers only its own rows (:func:`put_process_batch`), so
    the host-to-device traffic per process is ``1 / num_processes`` of the batch.
    """
    def own_rows(x):
        x = np.asarray(x)
        return x[local_rows(sharding, x.shape)]
    size = len(jax.tree.leaves(batch)[0])
    return put_process_batch(jax.tree.map(own_rows, batch), sharding, size)


def put_replicated(tree: PyTree, sharding: Sharding) -> PyTree:
    """Places a pytree, identical on every process, on every device of a multi-process mesh.

    Goes through host memory: ``device_put`` accepts host values for a
    sharding with other processes' devices, not arrays on a local device.
    """
    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)
    return jax.tree.map(put, tree)


def to_host(tree: PyTree) -> PyTree:
    """NumPy copies of (replicated) arrays, on every process."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                x = multihost_utils.process_allgather(x, tiled=True)
                return np.asarray(x)
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(get, tree)


def local_copy(tree: PyTree) -> PyTree:
    """This process's copy of replicated arrays, on one local device.

    For work only process 0 does (sample images): a computation on arrays
    that span other processes' devices would wait for them forever.
    """
    return jax.tree.map(lambda x: x.addressable_data(0)
                        if isinstance(x, jax.Array) and not x.is_fully_addressable else x, tree)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
