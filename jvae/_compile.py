"""XLA options for compiling jvae's own programs quickly where that costs no run time.

On XLA:CPU a program's matrix products and convolutions run in library kernels
whatever LLVM's optimisation level is; the level shapes only XLA's own
elementwise and reduction kernels, and at XLA's default (3) LLVM's passes are a
large share of a compile (the MNIST VAE's: 1.3 s at level 3, 0.7 s at 0). At
level 1 without LLVM's expensive passes, the zoo's MNIST train programs compile
in 0.5-1.2 s less (vae 1.4-1.7 s to 1.0-1.1 s, iwae 2.3-2.4 s to 1.3 s, ciwae
2.0-2.6 s to 1.2-1.5 s) and their epochs take as long, within the machine's
noise (`benchmarks/README.md`, "The zoo against Pythae"); so does a
convolutional MNIST VAE's.
"""

from __future__ import annotations

import os

import jax

__all__ = ["fast_compile_options"]

_CPU = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def fast_compile_options(backend: str | None = None) -> dict | None:
    """``compiler_options`` for ``jax.jit`` / ``Lowered.compile`` on ``backend``.

    Args:
      backend: ``"cpu"``, ``"gpu"``, ...; ``None`` for JAX's default backend.

    Returns:
      The options for XLA:CPU, less any the ``XLA_FLAGS`` environment variable
      sets itself (the user's choice wins); ``None`` elsewhere.
    """
    if (backend or jax.default_backend()) != "cpu":
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in _CPU.items() if k not in flags} or None
