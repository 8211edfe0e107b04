"""Where a computation runs: meshes, processes, memory budgets and host memory.

* :mod:`~jvae.devices.parallel`: the ``"data"`` mesh, batch and replicated shardings.
* :mod:`~jvae.devices.distributed`: multi-process jobs (``jax.distributed``),
  process-local batches, host copies.
* :mod:`~jvae.devices.budget`: the bytes one device may use and a compiled program's plan.
* :mod:`~jvae.devices.host_memory`: glibc keeps the host memory XLA:CPU frees.
"""

from jvae.devices.budget import (
    compiled_bytes,
    device_memory_budget,
)
from jvae.devices.distributed import (
    DistributedError,
    barrier,
    cluster_detected,
    initialize,
    is_primary,
    local_copy,
    local_rows,
    put_global_batch,
    put_process_batch,
    put_replicated,
    to_host,
)
from jvae.devices.host_memory import (
    HOST_MEMORY_POLICIES,
    apply_host_memory,
    reuse_host_memory,
)
from jvae.devices.parallel import (
    batch_sharding,
    data_mesh,
    replicate,
    replicated_sharding,
    shard_batch,
)

__all__ = [
    "DistributedError",
    "HOST_MEMORY_POLICIES",
    "apply_host_memory",
    "barrier",
    "batch_sharding",
    "cluster_detected",
    "compiled_bytes",
    "data_mesh",
    "device_memory_budget",
    "initialize",
    "is_primary",
    "local_copy",
    "local_rows",
    "put_global_batch",
    "put_process_batch",
    "put_replicated",
    "replicate",
    "replicated_sharding",
    "reuse_host_memory",
    "shard_batch",
    "to_host",
]
