"""Variational posterior families q(z|x) paired with their priors p(z).

A family is a :class:`Posterior`: a NamedTuple of pure functions in the shape of
optax's ``GradientTransformation``. Encoders end in a head that emits the
unconstrained parameters named by ``param_shapes``; ``constrain`` maps them to
the distribution's parameters (positive scales, concentrations above a floor).
Every function works on a leading batch axis and sums over latent dimensions,
so spatial latents (``latent_shape=(h, w, c)``) work as well as vectors.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Array]

__all__ = ["Posterior", "normal_posterior", "dirichlet_posterior", "posterior_by_name"]


class Posterior(NamedTuple):
    """A posterior family and its prior, as pure functions.

    Attributes:
      name: short identifier, also used by the CLI.
      param_shapes: ``latent_shape -> {name: shape}``, the per-example shape of
        each unconstrained parameter the encoder head must emit.
      constrain: raw head outputs -> distribution parameters.
      sample: ``(key, params, num_samples) -> z`` of shape
        ``(num_samples, batch, *latent_shape)``, reparameterized.
      log_prob: ``(params, z) -> (num_samples, batch)`` log q(z|x).
      kl: ``params -> (batch,)`` analytic KL(q(z|x) || p(z)).
      mean: ``params -> (batch, *latent_shape)`` posterior mean.
      prior_sample: ``(key, latent_shape, n) -> (n, *latent_shape)``.
      prior_log_prob: ``(z, latent_shape) -> z.shape[:-len(latent_shape)]``.
    """

    name: str
    param_shapes: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]]
    constrain: Callable[[Params], Params]
    sample: Callable[[Array, Params, int], Array]
    log_prob: Callable[[Params, Array], Array]
    kl: Callable[[Params], Array]
    mean: Callable[[Params], Array]
    prior_sample: Callable[[Array, tuple[int, ...], int], Array]
    prior_log_prob: Callable[[Array, tuple[int, ...]], Array]


def _sum_trailing(x: Array, n: int) -> Array:
    return x.sum(axis=tuple(range(x.ndim - n, x.ndim))) if n else x


def normal_posterior(min_scale: float = 1e-6) -> Posterior:
    """Diagonal Normal posterior with a standard Normal prior N(0, I).

    The scale is ``softplus(raw) + min_scale``. The KL is analytic:
    ``KL = sum_i 0.5 * (mu_i^2 + s_i^2 - 1) - log s_i`` (Kingma & Welling, 2014,
    appendix B).

    Args:
      min_scale: floor added to the scale so log-densities stay finite.

    Returns:
      A :class:`Posterior`.
    """

    def param_shapes(latent_shape):
        return {"loc": tuple(latent_shape), "scale": tuple(latent_shape)}

    def constrain(raw):
        return {"loc": raw["loc"], "scale": jax.nn.softplus(raw["scale"]) + min_scale}

    def sample(key, params, num_samples):
        loc, scale = params["loc"], params["scale"]
        eps = jax.random.normal(key, (num_samples, *loc.shape), loc.dtype)
        return loc + scale * eps

    def log_prob(params, z):
        lp = distrax.Normal(params["loc"], params["scale"]).log_prob(z)
        return _sum_trailing(lp, params["loc"].ndim - 1)

    def kl(params):
        q = distrax.Normal(params["loc"], params["scale"])
        d = q.kl_divergence(distrax.Normal(jnp.zeros((), params["loc"].dtype), 1.0))
        return _sum_trailing(d, d.ndim - 1)

    def prior_sample(key, latent_shape, n):
        return jax.random.normal(key, (n, *latent_shape))

    def prior_log_prob(z, latent_shape):
        lp = distrax.Normal(0.0, 1.0).log_prob(z)
        return _sum_trailing(lp, len(latent_shape))

    return Posterior("normal", param_shapes, constrain, sample, log_prob, kl,
                     lambda p: p["loc"], prior_sample, prior_log_prob)


def dirichlet_posterior(prior_concentration: float = 0.98,
                        min_concentration: float = 1e-3) -> Posterior:
    """Dirichlet posterior on the simplex with a symmetric Dirichlet prior.

    Concentrations are ``softplus(raw) + min_concentration``. Samples come from
    ``jax.random.dirichlet``, whose Gamma draws carry implicit reparameterization
    gradients (Figurnov et al., 2018, arXiv:1805.08498), so the ELBO is
    differentiated through z. The KL between Dirichlets is analytic:
    ``log G(a0) - sum log G(a_i) - log G(b0) + sum log G(b_i)
    + sum (a_i - b_i)(psi(a_i) - psi(a0))``.

    The last latent axis is the simplex; any leading latent axes are independent
    Dirichlets whose terms are summed.

    Args:
      prior_concentration: the symmetric prior's concentration (0.98 follows
        Joo et al., 2019, arXiv:1901.02739, approximating a sparse prior).
      min_concentration: floor that keeps the Gamma sampler and digamma finite.

    Returns:
      A :class:`Posterior`.
    """
    if prior_concentration <= 0 or min_concentration <= 0:
        raise ValueError("Dirichlet concentrations must be positive, got "
                         f"prior={prior_concentration}, floor={min_concentration}")

    def param_shapes(latent_shape):
        if latent_shape[-1] < 2:
            raise ValueError("a Dirichlet latent needs at least 2 components on its "
                             f"last axis, got latent shape {tuple(latent_shape)}")
        return {"concentration": tuple(latent_shape)}

    def constrain(raw):
        return {"concentration": jax.nn.softplus(raw["concentration"]) + min_concentration}

    def sample(key, params, num_samples):
        alpha = params["concentration"]
        z = jax.random.dirichlet(key, alpha, (num_samples, *alpha.shape[:-1]), alpha.dtype)
        # Gamma draws for tiny concentrations can underflow to exact zeros, which
        # make log-densities -inf downstream; keep samples strictly inside the simplex.
        tiny = jnp.finfo(alpha.dtype).tiny
        z = jnp.clip(z, tiny, 1.0)
        return z / z.sum(-1, keepdims=True)

    def log_prob(params, z):
        alpha = params["concentration"]
        return _sum_trailing(distrax.Dirichlet(alpha).log_prob(z), alpha.ndim - 2)

    def _prior(latent_shape, dtype=jnp.float32):
        return distrax.Dirichlet(jnp.full(latent_shape, prior_concentration, dtype))

    def kl(params):
        alpha = params["concentration"]
        d = distrax.Dirichlet(alpha).kl_divergence(_prior(alpha.shape[1:], alpha.dtype))
        return _sum_trailing(d, alpha.ndim - 2)

    def mean(params):
        alpha = params["concentration"]
        return alpha / alpha.sum(-1, keepdims=True)

    def prior_sample(key, latent_shape, n):
        alpha = jnp.full(latent_shape, prior_concentration)
        return jax.random.dirichlet(key, alpha, (n, *latent_shape[:-1]))

    def prior_log_prob(z, latent_shape):
        return _sum_trailing(_prior(latent_shape).log_prob(z), len(latent_shape) - 1)

    return Posterior("dirichlet", param_shapes, constrain, sample, log_prob, kl, mean,
                     prior_sample, prior_log_prob)


def posterior_by_name(name: str, **kwargs) -> Posterior:
    """Returns the posterior family registered under ``name``.

    Args:
      name: ``"normal"`` or ``"dirichlet"``.
      **kwargs: forwarded to the family's factory.

    Returns:
      A :class:`Posterior`.
    """
    factories = {"normal": normal_posterior, "dirichlet": dirichlet_posterior}
    if name not in factories:
        raise ValueError(f"unknown posterior {name!r}; choose one of {sorted(factories)}")
    return factories[name](**kwargs)


def latent_size(latent_shape: tuple[int, ...]) -> int:
    """Number of latent dimensions in one example."""
    return math.prod(latent_shape)
