"""Keep the host memory XLA:CPU frees, instead of handing it back to the kernel every step.

A compiled XLA:CPU program allocates its temporaries afresh on each run and
frees them at its end. Under glibc's default policy any block over 32 MiB, and
every block a worker thread's arena cannot hold, is a fresh ``mmap`` that is
``munmap``-ed on free, so every train step touches brand-new pages: a page
fault and a zeroed 4 KiB page each. Measured on a 2-core VM, the SD-style
VAE's step (batch 4, 64x64x3) took about 600,000 minor faults, 2.3 GiB of
pages; the conv VAE's (batch 128) about 26,000. With the policy below most
steps take none (some still do, more often on a loaded machine), and the conv
VAE's step went from about 0.20 to 0.12 s (``benchmarks/README.md``, "Host
memory").

:func:`reuse_host_memory` sets glibc's ``mallopt`` so freed blocks stay in the
process: one arena for all threads (``M_ARENA_MAX``), no ``mmap``-ed blocks
(``M_MMAP_MAX``), no trimming of the heap's top (``M_TRIM_THRESHOLD``). The
price is that the process keeps its high-water mark of host memory until it
exits. The ``jvae`` command applies it unless ``--host-memory system`` is
given; a user's own ``MALLOC_*`` environment variables or ``GLIBC_TUNABLES``
take precedence, and other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["HOST_MEMORY_POLICIES", "apply_host_memory", "reuse_host_memory"]

HOST_MEMORY_POLICIES = ("reuse", "system")

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
# Grow the heap in steps of this much, so a step's first large temporary does
# not extend it a page at a time.
_TOP_PAD = 64 << 20

# Settings through which a user already chose glibc's policy.
_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                  "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and other C libraries
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def reuse_host_memory() -> bool:
    """Makes glibc keep freed memory in the process (see the module docstring).

    Call it before JAX's first computation: threads started earlier keep the
    arenas they already have. Calling it again changes nothing.

    Returns:
      True when the policy is in effect; False where it was not applied: not
      glibc, or the environment already sets one of glibc's malloc settings
      (which then stand as the user chose them).
    """
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # M_TRIM_THRESHOLD is read as a size_t: -1 is "never trim".
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_TOP_PAD, _TOP_PAD)))


def apply_host_memory(policy: str) -> str:
    """Applies a ``--host-memory`` choice; returns the policy in effect.

    Args:
      policy: ``"reuse"`` (:func:`reuse_host_memory`) or ``"system"`` (glibc's
        own policy, as the environment sets it).

    Returns:
      ``"reuse"`` when :func:`reuse_host_memory` took effect, else ``"system"``.
    """
    if policy not in HOST_MEMORY_POLICIES:
        raise ValueError(f"unknown host memory policy {policy!r}; choose one of "
                         f"{', '.join(HOST_MEMORY_POLICIES)}")
    return "reuse" if policy == "reuse" and reuse_host_memory() else "system"
