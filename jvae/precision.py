"""Mixed precision: networks compute in bfloat16, everything else stays float32.

The policy of Micikevicius et al. (2018, arXiv:1710.03740) without loss
scaling (bfloat16 has float32's exponent range, so gradients do not
underflow): parameters, optimizer state and the loss (log-likelihoods, KL,
their sums over 784 pixels) stay float32; only the encoder and decoder run in
the compute dtype. :func:`mixed_precision` wraps a :class:`~jvae.model.VAE`:
``encode``/``decode`` cast the float32 parameters and inputs down on entry and
the distribution parameters they emit back up to float32, so gradients reach
the float32 master parameters through the casts. It pays off on GPUs and TPUs,
whose matrix units are bfloat16-native; on most CPUs it is slower than float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jvae.base import PyTree
from jvae.model import VAE

__all__ = ["COMPUTE_DTYPES", "mixed_precision"]

COMPUTE_DTYPES = ("float32", "bfloat16")


def _cast(tree: PyTree, dtype) -> PyTree:
    """Casts floating leaves only (integer labels, keys and masks pass through)."""
    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def mixed_precision(vae: VAE, compute_dtype: str | jnp.dtype = "bfloat16") -> VAE:
    """The same model with encoder and decoder computing in ``compute_dtype``.

    Args:
      vae: a model with float32 parameters.
      compute_dtype: ``"bfloat16"`` (or any float dtype); ``"float32"`` returns
        ``vae`` unchanged.

    Returns:
      A :class:`~jvae.model.VAE` with the same ``init`` (float32 parameters)
      whose ``encode`` and ``decode`` return float32 distribution parameters.
    """
    dtype = jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute dtype must be a float type, got {compute_dtype!r}")
    if dtype == jnp.float32:
        return vae

    def nets_down(params):
        # Only the networks: a posterior family's shared parameters (a flow)
        # keep float32, like the rest of the loss.
        return {k: _cast(v, dtype) if k in ("encoder", "decoder") else v
                for k, v in params.items()}

    def encode(params, x, cond=None):
        out = vae.encode(nets_down(params), _cast(x, dtype), _cast(cond, dtype))
        return _cast(out, jnp.float32)

    def decode(params, z, cond=None):
        out = vae.decode(nets_down(params), _cast(z, dtype), _cast(cond, dtype))
        return _cast(out, jnp.float32)

    return vae._replace(encode=encode, decode=decode)
