"""An MLP discriminator on latent codes: FactorVAE's total-correlation critic.

FactorVAE (Kim & Mnih, 2018, arXiv:1802.05983, Appendix A) trains an MLP to
tell codes ``z ~ q(z)`` from codes whose dimensions were shuffled across the
batch (draws of ``prod_j q(z_j)``): 6 hidden layers of 1000 units with leaky
ReLUs (slope 0.2). Its logit estimates the log density ratio
``log q(z) / prod_j q(z_j)``, whose mean over ``q(z)`` is the total correlation
(:func:`jvae.terms.total_correlation.discriminator_tc`).

The paper's two softmax outputs ``(a, b)`` are one logit ``a - b`` here: the
same classifier, and ``log D / (1 - D)`` is read off directly.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax

from jvae.base import Array, Discriminator, PyTree

__all__ = ["LatentMLP", "mlp_discriminator", "PAPER_HIDDEN"]

# The paper's critic: 6 hidden layers of 1000 units.
PAPER_HIDDEN = (1000,) * 6


class LatentMLP(nn.Module):
    """``(B, *latent_shape)`` codes -> ``(B,)`` logits of "drawn from q(z)".

    Attributes:
      hidden: widths of the hidden layers.
      negative_slope: slope of the leaky ReLUs.
    """

    hidden: Sequence[int] = PAPER_HIDDEN
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, z: Array) -> Array:
        h = z.reshape(z.shape[0], math.prod(z.shape[1:])).astype(jax.numpy.float32)
        for i, width in enumerate(self.hidden):
            h = nn.leaky_relu(nn.Dense(width, name=f"dense_{i}")(h), self.negative_slope)
        return nn.Dense(1, name="logit")(h)[:, 0]


def mlp_discriminator(hidden: Sequence[int] = PAPER_HIDDEN, *,
                      negative_slope: float = 0.2) -> Discriminator:
    """:class:`LatentMLP` as a :class:`~jvae.base.Discriminator` of latent codes.

    Args:
      hidden: widths of the hidden layers (the paper: :data:`PAPER_HIDDEN`).
      negative_slope: slope of the leaky ReLUs (the paper: 0.2).

    Returns:
      ``init(key, example_codes) -> params`` and ``apply(params, codes) -> (B,) logits``.
    """
    if not hidden or any(int(w) <= 0 for w in hidden):
        raise ValueError(f"hidden must be positive widths, got {tuple(hidden)}")
    net = LatentMLP(tuple(int(w) for w in hidden), negative_slope)

    def init(key: Array, example: Array) -> PyTree:
        return net.init(key, example)["params"]

    def apply(params: PyTree, z: Array) -> Array:
        return net.apply({"params": params}, z)

    return Discriminator(init, apply)
