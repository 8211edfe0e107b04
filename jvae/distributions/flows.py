"""Flow-augmented posteriors: a base Normal pushed through coupling bijectors.

``q(z|x)`` is the law of ``z = f_x(z0)`` with ``z0 ~ N(mu(x), s(x))`` and
``f_x`` a stack of masked coupling layers (Dinh et al., 2017, arXiv:1605.08803)
whose elementwise transforms are rational-quadratic splines (Durkan et al.,
2019, arXiv:1906.04032) or affine maps. By the change of variables,

    log q(z|x) = log q0(z0|x) - sum_l log |det df_l/dz_{l-1}|.

Each coupling layer's conditioner is an MLP shared by all examples (its weights
are the family's *shared* parameters, stored in ``params["posterior"]``) that
reads the untouched half of z and, optionally, a per-example context vector the
encoder emits next to the base parameters, so the flow itself is amortized as
in inverse autoregressive flows (Kingma et al., 2016, arXiv:1606.04934).

The KL to the prior has no closed form: ``analytic_kl`` is False and objectives
estimate it as ``log q(z|x) - log p(z)`` on their samples.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.base import Array
from jvae.distributions.posteriors import Posterior, normal_posterior, sample_and_log_prob

__all__ = ["CouplingConditioner", "flow_posterior", "coupling_masks", "COUPLINGS"]

COUPLINGS = ("spline", "affine")


class CouplingConditioner(nn.Module):
    """MLP mapping the masked latent (and a context) to per-dimension bijector params.

    The output layer starts at zero, so every coupling layer is the identity at
    initialization and training starts from the plain base posterior.

    Attributes:
      dim: number of latent dimensions D.
      params_per_dim: parameters of one elementwise transform.
      hidden: hidden layer widths.
    """

    dim: int
    params_per_dim: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, z: Array, context: Array | None = None) -> Array:
        h = z if context is None else jnp.concatenate([z, context], axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        out = nn.Dense(self.dim * self.params_per_dim, kernel_init=nn.initializers.zeros,
                       name="out")(h)
        return out.reshape(*z.shape[:-1], self.dim, self.params_per_dim)


def coupling_masks(dim: int, num_layers: int) -> list[Array]:
    """Boolean masks (True = passed through) cycling through even/odd and
    first-half/second-half splits, so that every dimension is transformed and
    conditions every other one within a few layers."""
    idx = jnp.arange(dim)
    patterns = [idx % 2 == 0, idx % 2 == 1, idx < dim // 2, idx >= dim // 2]
    return [patterns[i % 4] for i in range(num_layers)]


def _check_flow(base: Posterior, num_layers: int, coupling: str, num_bins: int,
                spline_range: float, context_dim: int) -> None:
    if base.name != "normal":
        raise ValueError(f"a flow acts on R^D and needs a normal base posterior, got {base.name!r} "
                         "(a Dirichlet lives on the simplex; use it without a flow)")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(COUPLINGS)}")
    if num_bins < 1 or spline_range <= 0 or context_dim < 0:
        raise ValueError(f"need num_bins >= 1, spline_range > 0, context_dim >= 0; got "
                         f"{num_bins}, {spline_range}, {context_dim}")


def _elementwise(coupling: str, spline_range: float, p: Array) -> distrax.Bijector:
    """The transform of one coupling layer, from its conditioner's parameters ``p``."""
    if coupling == "spline":
        return distrax.RationalQuadraticSpline(p, -spline_range, spline_range)
    # tanh bounds the log-scale so one layer cannot blow samples up early in training.
    return distrax.ScalarAffine(shift=p[..., 0], log_scale=3.0 * jnp.tanh(p[..., 1] / 3.0))


def _base_params(params):
    return {k: v for k, v in params.items() if k not in ("context", "shared")}


def _coupling_chain(params, dim: int, num_layers: int, per_dim: int, hidden: tuple[int, ...],
                    inner) -> distrax.Bijector:
    """The flow of one batch: ``num_layers`` masked couplings whose conditioners read
    the shared weights ``params["shared"]`` and the per-example ``params["context"]``."""
    shared, context = params["shared"], params.get("context")
    layers = []
    for i, mask in enumerate(coupling_masks(dim, num_layers)):
        module = CouplingConditioner(dim, per_dim, hidden)

        def conditioner(zm, p=shared[f"layer_{i}"], module=module):
            ctx = None if context is None else jnp.broadcast_to(
                context, (*zm.shape[:-1], context.shape[-1]))
            return module.apply({"params": p}, zm, ctx)
        layers.append(distrax.MaskedCoupling(mask, conditioner, inner))
    # Chain applies its last bijector first: reversed so layer_0 acts first.
    return distrax.Chain(layers[::-1])


def _init_conditioners(key: Array, latent_shape, num_layers: int, per_dim: int,
                       hidden: tuple[int, ...], context_dim: int) -> dict:
    """Initial weights of every coupling layer's conditioner (the family's shared parameters)."""
    dim = math.prod(latent_shape)
    if dim < 2:
        raise ValueError(f"a coupling flow needs at least 2 latent dimensions, got {dim}")
    module = CouplingConditioner(dim, per_dim, hidden)
    z = jnp.zeros((1, dim))
    ctx = jnp.zeros((1, context_dim)) if context_dim else None
    keys = jax.random.split(key, num_layers)
    return {f"layer_{i}": module.init(keys[i], z, ctx)["params"] for i in range(num_layers)}


def flow_posterior(base: Posterior | None = None, *, num_layers: int = 4,
                   coupling: str = "spline", hidden: Sequence[int] = (64, 64),
                   num_bins: int = 8, spline_range: float = 5.0,
                   context_dim: int = 16) -> Posterior:
    """A base posterior pushed through a stack of masked coupling layers.

    Args:
      base: the base family on R^D (a Normal; the default).
      num_layers: coupling layers (alternating masks).
      coupling: ``"spline"`` (rational-quadratic spline on
        ``[-spline_range, spline_range]``, linear outside) or ``"affine"``
        (``z * exp(s) + t`` with ``s`` softly bounded to ``[-3, 3]``).
      hidden: conditioner MLP widths.
      num_bins: spline bins.
      spline_range: half-width of the spline's interval.
      context_dim: size of the per-example context the encoder emits for the
        conditioners (0: the flow is the same for every example).

    Returns:
      A :class:`~jvae.distributions.posteriors.Posterior` with ``analytic_kl=False`` whose
      ``sample_and_log_prob`` pushes base samples forward in one pass.
    """
    base = normal_posterior() if base is None else base
    _check_flow(base, num_layers, coupling, num_bins, spline_range, context_dim)
    hidden = tuple(int(h) for h in hidden)
    per_dim = 3 * num_bins + 1 if coupling == "spline" else 2

    def bijector(params, dim) -> distrax.Bijector:
        return _coupling_chain(params, dim, num_layers, per_dim, hidden,
                               functools.partial(_elementwise, coupling, spline_range))

    def param_shapes(latent_shape):
        shapes = dict(base.param_shapes(latent_shape))
        if context_dim:
            shapes["context"] = (context_dim,)
        return shapes

    def constrain(raw):
        out = base.constrain(_base_params(raw))
        if context_dim:
            out["context"] = raw["context"]
        return out

    def init_shared(key, latent_shape):
        return _init_conditioners(key, latent_shape, num_layers, per_dim, hidden, context_dim)

    def flat(z, lead):
        return z.reshape(*z.shape[:lead], -1)

    def sample_with_log_prob(key, params, num_samples):
        z0, log_q0 = sample_and_log_prob(base, key, _base_params(params), num_samples)
        y, log_det = bijector(params, math.prod(z0.shape[2:])).forward_and_log_det(flat(z0, 2))
        return y.reshape(z0.shape), log_q0 - log_det

    def log_prob(params, z):
        x0, inv_log_det = bijector(params, math.prod(z.shape[2:])).inverse_and_log_det(flat(z, 2))
        return base.log_prob(_base_params(params), x0.reshape(z.shape)) + inv_log_det

    def kl(params):
        raise ValueError("a flow posterior has no closed-form KL; use "
                         "jvae.distributions.posteriors.kl_estimate on samples (log q - log p)")

    def mean(params):
        # E[z] has no closed form; the image of the base mean is the usual
        # deterministic code (used for reconstructions and active units).
        m = base.mean(_base_params(params))
        return bijector(params, math.prod(m.shape[1:])).forward(flat(m, 1)).reshape(m.shape)

    def prior_sample(key, latent_shape, n, shared=None):
        del shared  # the prior is the base's; the flow only shapes q
        return base.prior_sample(key, latent_shape, n)

    return Posterior(f"flow_{coupling}", param_shapes, constrain,
                     lambda key, params, n: sample_with_log_prob(key, params, n)[0],
                     log_prob, kl, mean, prior_sample, base.prior_log_prob,
                     analytic_kl=False, sample_and_log_prob=sample_with_log_prob,
                     init_shared=init_shared)
