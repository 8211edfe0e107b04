"""Observation models p(x|z) as NamedTuples of pure functions.

A decoder ends in a head that emits the unconstrained parameters named by
``param_shapes(data_shape)``; ``constrain`` turns them into the likelihood's
parameters. ``log_prob`` sums over the data dimensions and keeps every leading
axis (posterior samples, batch), so the result is in nats per example.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from jvae.base import Array, Likelihood

__all__ = ["Likelihood", "bernoulli", "gaussian"]


def _flat_data(a: Array, data_ndim: int) -> Array:
    """Merges the trailing ``data_ndim`` axes into one (a free reshape).

    Elementwise math on ``(..., 28, 28, 1)`` arrays is slower on XLA:CPU than
    on ``(..., 784)``: its loops vectorize the innermost axis, here of size 1.
    """
    return a.reshape(*a.shape[:a.ndim - data_ndim], -1)


def bernoulli() -> Likelihood:
    """Bernoulli likelihood parameterized by logits.

    ``log p(x|z) = sum_d x_d * l_d - softplus(l_d)``, which equals
    ``log Bernoulli(x; sigmoid(l))`` for binary x and is the usual
    cross-entropy for grey-scale x in [0, 1] (as in Kingma & Welling, 2014).

    Returns:
      A :class:`Likelihood`.
    """

    def log_prob(params, x):
        n = x.ndim - 1
        logits, x = _flat_data(params["logits"], n), _flat_data(x, n)
        return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)

    return Likelihood("bernoulli", lambda shape: {"logits": tuple(shape)}, lambda raw: raw,
                      log_prob, lambda p: jax.nn.sigmoid(p["logits"]))


def gaussian(scale: float = 1.0, learn_scale: bool = False, min_scale: float = 1e-3) -> Likelihood:
    """Diagonal Gaussian likelihood N(x; mu(z), sigma^2).

    Args:
      scale: the fixed standard deviation when ``learn_scale`` is False.
      learn_scale: if True the decoder also emits a per-pixel scale
        ``softplus(raw) + min_scale``.
      min_scale: floor on a learned scale.

    Returns:
      A :class:`Likelihood`.
    """
    if scale <= 0:
        raise ValueError(f"Gaussian likelihood scale must be positive, got {scale}")

    def param_shapes(shape):
        shapes = {"loc": tuple(shape)}
        if learn_scale:
            shapes["scale"] = tuple(shape)
        return shapes

    def constrain(raw):
        if learn_scale:
            return {"loc": raw["loc"], "scale": jax.nn.softplus(raw["scale"]) + min_scale}
        return {"loc": raw["loc"]}

    def log_prob(params, x):
        n = x.ndim - 1
        loc = _flat_data(params["loc"], n)
        sigma = (_flat_data(params["scale"], n) if "scale" in params
                 else jnp.asarray(scale, loc.dtype))
        return jnp.sum(distrax.Normal(loc, sigma).log_prob(_flat_data(x, n)), axis=-1)

    return Likelihood("gaussian", param_shapes, constrain, log_prob, lambda p: p["loc"])
