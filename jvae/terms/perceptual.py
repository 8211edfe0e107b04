"""A perceptual term: a learned image distance between reconstructions and images.

With LPIPS (Zhang et al., 2018, arXiv:1801.03924; :mod:`jvae.metrics.lpips`) as
the distance this is the perceptual loss of latent diffusion's autoencoders
(Rombach et al., 2022, arXiv:2112.10752). They add ``p * LPIPS(x, x_hat)`` to
every pixel's L1 before summing over the pixels, so an image's perceptual loss
is ``p * D * LPIPS`` for ``D`` values per image: :func:`perceptual` counts it
the same way (``per_pixel=True``), and a weight here is their ``p``.
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

from jvae.base import Array, Forward, Term
from jvae.terms.composition import stateless

__all__ = ["perceptual_loss"]


def perceptual_loss(distance: Callable[[Array, Array], Array], *, per_pixel: bool = True) -> Term:
    """``distance(E[x|z], x)`` averaged over the posterior samples.

    Args:
      distance: ``(x_hat, x) -> (B,)`` for images ``(B, H, W, C)`` in [0, 1].
      per_pixel: multiply by the values per image ``H * W * C`` (latent
        diffusion's weighting, which puts it on the scale of a summed L1).

    Returns:
      A stateless :class:`~jvae.base.Term`.
    """

    def value(fwd: Forward) -> Array:
        if fwd.x.ndim != 4:
            raise ValueError(f"a perceptual term needs images (B, H, W, C), got shape {fwd.x.shape}")
        recon = fwd.vae.likelihood.mean(fwd.lik)
        x = fwd.x.astype(jnp.float32)
        per_sample = jnp.stack([distance(recon[s].astype(jnp.float32), x)
                                for s in range(recon.shape[0])])
        scale = math.prod(fwd.x.shape[1:]) if per_pixel else 1
        return scale * jnp.mean(per_sample, axis=0)

    return stateless(value)
