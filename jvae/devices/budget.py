"""Bytes one device may use, and bytes a compiled program plans to use on one.

The memory planner, ``auto`` placement and automatic tiling compare the
second (:func:`compiled_bytes`, read from XLA's plan) with the first. The
budget is the device's ``bytes_limit`` on GPU and TPU (what the allocator
may hand out) and, on CPU, the host's available memory (``MemAvailable`` in
``/proc/meminfo``) shared by the host's devices, times a fraction (headroom
for what a plan does not count: the runtime, the eval step, fragmentation).
"""

from __future__ import annotations

import os

import jax

__all__ = ["compiled_bytes", "device_memory_budget"]


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_memory_budget(device: jax.Device | None = None, *, fraction: float = 0.9) -> int:
    """Bytes one device may use: ``fraction`` of its allocator limit.

    Args:
      device: the device (the first local one when None).
      fraction: share of the limit to plan for.

    Returns:
      On GPU/TPU ``fraction * memory_stats()["bytes_limit"]``; on CPU, where
      devices are slices of one host, ``fraction * MemAvailable / local CPU
      device count``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        limit = int(stats["bytes_limit"])
    else:
        limit = _host_available_bytes() // len(jax.local_devices(backend=device.platform))
    return int(limit * fraction)


def compiled_bytes(compiled) -> int:
    """Peak bytes per device of a compiled program's memory plan.

    ``arguments + outputs - aliased + temporaries``: donated arguments alias
    their outputs and are counted once. Where the backend reports its own
    ``peak_memory_in_bytes`` (GPU, TPU) that figure is used instead.
    """
    m = compiled.memory_analysis()
    if m is None:
        raise RuntimeError("this backend reports no memory analysis for compiled programs")
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
    return int(max(total, getattr(m, "peak_memory_in_bytes", 0) or 0))
