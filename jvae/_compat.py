"""What differs between the supported JAX releases, handled in this one place.

jvae supports jax and jaxlib 0.10 to 0.12 (``pyproject.toml``). Its code is
written against the API that all of them share, with no name any of them
deprecates (``make_single_device_sharding``, not the ``SingleDeviceSharding``
class that 0.12 deprecates; the suite turns deprecation warnings into errors).
What cannot be written once for all of them, because a release behaves
differently rather than names things differently, is decided here from the
installed version, and the rest of the package asks this module.

* **Compilation cache across processes on the CPU** (jax 0.12): in a job of
  several processes whose devices are CPUs (collectives over Gloo), an
  executable that jaxlib 0.12 loads back from the persistent compilation cache
  (``JAX_COMPILATION_CACHE_DIR``) waits forever in its first cross-process
  collective; jaxlib 0.10 and 0.11 run it. :func:`settle_compilation_cache`
  turns the cache off for such a job, so it compiles instead of hanging.
* **XLA:CPU's emitter flag** (jaxlib 0.12 removed
  ``--xla_cpu_use_fusion_emitters``): a test-suite compiler setting, chosen in
  ``tests/conftest.py`` before JAX starts (importing this package would start it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from itertools import takewhile

import jax

__all__ = ["JAX_VERSION", "cache_hangs_cross_process_collectives", "parse_release", "release",
           "settle_compilation_cache"]


def parse_release(text: str) -> tuple[int, int]:
    """A version string's ``(major, minor)``: ``"0.12.0.1"`` is ``(0, 12)``, ``"2.0rc1"`` ``(2, 0)``."""
    major, minor, *_ = [int("".join(takewhile(str.isdigit, p)) or 0)
                        for p in text.split(".")] + [0, 0]
    return major, minor


def release(package: str) -> tuple[int, int]:
    """An installed package's ``(major, minor)`` release, read from its metadata.

    Args:
      package: the distribution's name, e.g. ``"jaxlib"``.

    Returns:
      :func:`parse_release` of its version; ``(0, 0)`` where it is not installed.
    """
    try:
        return parse_release(version(package))
    except PackageNotFoundError:
        return (0, 0)


# jaxlib holds the runtime whose behaviour differs; jax and jaxlib are released together.
JAX_VERSION = release("jaxlib")


def cache_hangs_cross_process_collectives(platform: str, process_count: int,
                                          jax_version: tuple[int, int] = JAX_VERSION) -> bool:
    """Whether cached executables would hang this job's collectives.

    Args:
      platform: the devices' platform (``"cpu"``, ``"gpu"``, ``"tpu"``).
      process_count: processes in the job.
      jax_version: the jaxlib release, ``(major, minor)``.

    Returns:
      True for jaxlib 0.12 and newer on CPUs with more than one process.
    """
    return platform == "cpu" and process_count > 1 and jax_version >= (0, 12)


def settle_compilation_cache() -> bool:
    """Turns the persistent compilation cache off where loading from it would hang.

    Call after ``jax.distributed.initialize`` and before the first compile.

    Returns:
      Whether the cache was turned off.
    """
    if not cache_hangs_cross_process_collectives(jax.devices()[0].platform,
                                                 jax.process_count()):
        return False
    jax.config.update("jax_enable_compilation_cache", False)
    return True
