"""The second stage of the two-stage VAE (Dai & Wipf, 2019, arXiv:1903.05789).

A first-stage VAE whose decoder fits the data well can leave its aggregate
posterior ``q(z)`` far from ``N(0, I)``; decodes of prior draws then miss the
data. Dai & Wipf fit a second VAE to the codes themselves, with a latent ``u``
of the same dimension: ``u ~ N(0, I)``, ``z | u ~ N(mu(u), gamma^2 I)``, and
``gamma`` a single learned scale (they show the optimum drives it towards 0,
where the second stage reproduces ``q(z)``). Sampling is ``u ~ N(0, I)``,
``z ~ p(z|u)``, then the first stage's decoder.

Built from jvae's own pieces: :func:`~jvae.model.make_vae` binds an MLP
encoder with a :func:`~jvae.distributions.posteriors.normal_posterior` head and
an MLP decoder emitting the mean of a
:func:`~jvae.distributions.likelihoods.gaussian` likelihood with a learned
scale, shared by every dimension (the paper's ``gamma``); the loss is
:func:`~jvae.objectives.elbo`, minimised by jvae's training step
(:func:`~jvae.training.samplers.base.fit_by_gradient`, stopping early on a
tenth of the codes held out). The codes are standardised first. ``log_prob`` has no closed form: it is the
importance-weighted bound of Burda et al. (2015) with ``log_prob_samples``
draws (:func:`~jvae.evaluation.iwae_log_likelihood`), a lower bound that
tightens as the draws grow.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.base import VAE, Array, Likelihood
from jvae.distributions.likelihoods import gaussian
from jvae.distributions.posteriors import normal_posterior
from jvae.evaluation import iwae_log_likelihood
from jvae.layers.builtin import MLPEncoder
from jvae.layers.heads import activation_by_name
from jvae.model import make_vae
from jvae.objectives import elbo
from jvae.training.samplers.base import (
    Sampler,
    SamplerError,
    fit_by_gradient,
    split_codes,
    standardizer,
)

__all__ = ["two_stage_vae", "second_stage_vae", "SharedScaleDecoder"]

# The learned scale starts at 1 (softplus(0.5413) = 1): the codes are standardised.
_SOFTPLUS_INV_ONE = math.log(math.e - 1.0)
# Floor of gamma (the likelihood's min_scale), a thousandth of a code's standard deviation.
_MIN_GAMMA = 1e-3
# The key of log_prob's importance draws: the estimate is a fixed function of z.
_LOG_PROB_SEED = 0


class SharedScaleDecoder(nn.Module):
    """u -> [Dense -> activation] * len(hidden) -> the mean of ``z``, plus one learned scale.

    Emits the Gaussian likelihood's ``loc`` ``(B, dim)`` and its raw ``scale``:
    a single parameter broadcast over the batch and the dimensions (Dai & Wipf's
    ``gamma``), constrained by the likelihood.

    Attributes:
      likelihood: a :func:`~jvae.distributions.likelihoods.gaussian` with ``learn_scale``.
      dim: the codes' dimension.
      hidden: hidden layer widths.
      activation: a name of :data:`~jvae.layers.heads.ACTIVATIONS`.
    """

    likelihood: Likelihood
    dim: int
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, u: Array, cond: Array | None = None) -> dict[str, Array]:
        act = activation_by_name(self.activation)
        h = u.reshape(u.shape[0], -1)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        loc = nn.Dense(self.dim, name="loc")(h)
        raw = self.param("scale", nn.initializers.constant(_SOFTPLUS_INV_ONE), ())
        return self.likelihood.constrain({"loc": loc, "scale": jnp.broadcast_to(raw, loc.shape)})


@functools.lru_cache(maxsize=16)
def second_stage_vae(dim: int, hidden: tuple[int, ...] = (256, 256),
                     activation: str = "relu") -> VAE:
    """The second-stage VAE over codes of ``dim`` dimensions, its latent ``u`` as large."""
    likelihood = gaussian(learn_scale=True, min_scale=_MIN_GAMMA)
    posterior = normal_posterior()
    return make_vae(MLPEncoder(posterior, (dim,), hidden, activation),
                    SharedScaleDecoder(likelihood, dim, hidden, activation),
                    posterior, likelihood, (dim,))


@functools.lru_cache(maxsize=16)
def _two_stage(hidden: tuple[int, ...], activation: str, steps: int, batch_size: int,
               learning_rate: float, log_prob_samples: int) -> Sampler:
    @jax.jit
    def fit(key, latents):
        std = standardizer(latents)
        vae = second_stage_vae(latents.shape[1], hidden, activation)
        k_init, k_split, k_fit = jax.random.split(key, 3)
        train, valid = split_codes(k_split, (latents - std["shift"]) / std["scale"])
        params = vae.init(k_init, train[:1])
        params, history = fit_by_gradient(elbo(vae), params, train, k_fit, steps=steps,
                                          batch_size=batch_size, learning_rate=learning_rate,
                                          valid=valid)
        return {**std, "params": params, "history": history}

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state, key, n):
        dim = state["shift"].shape[-1]
        vae = second_stage_vae(dim, hidden, activation)
        k_u, k_z = jax.random.split(key)
        lik = vae.decode(state["params"], jax.random.normal(k_u, (n, dim)))
        z = lik["loc"] + lik["scale"] * jax.random.normal(k_z, (n, dim))
        return z * state["scale"] + state["shift"]

    @jax.jit
    def log_prob(state, z):
        vae = second_stage_vae(state["shift"].shape[-1], hidden, activation)
        u = (jnp.asarray(z, jnp.float32) - state["shift"]) / state["scale"]
        bound = iwae_log_likelihood(vae, state["params"], u, jax.random.key(_LOG_PROB_SEED),
                                    log_prob_samples, chunk_size=min(log_prob_samples, 64))
        return bound["log_likelihood"] - jnp.sum(jnp.log(state["scale"]))

    options = {"hidden": list(hidden), "activation": activation, "steps": steps,
               "batch_size": batch_size, "learning_rate": learning_rate,
               "log_prob_samples": log_prob_samples}
    return Sampler("two-stage", options, fit, sample, log_prob)


def two_stage_vae(hidden=(256, 256), *, activation: str = "relu", steps: int = 2000,
                  batch_size: int = 256, learning_rate: float = 1e-3,
                  log_prob_samples: int = 256) -> Sampler:
    """A second-stage VAE fitted to the codes (see the module's docstring).

    Args:
      hidden: the encoder's and the decoder's hidden widths.
      activation: a name of :data:`~jvae.layers.heads.ACTIVATIONS`.
      steps: Adam steps.
      batch_size: codes per step.
      learning_rate: the initial step size (cosine-decayed).
      log_prob_samples: importance draws of ``log_prob``'s bound.

    Returns:
      A :class:`~jvae.training.samplers.base.Sampler`; its state holds the
      standardisation, the second stage's ``params`` and the training ``history``.
    """
    hidden = tuple(int(h) for h in hidden)
    if min(hidden, default=1) < 1 or steps < 1 or batch_size < 1 or log_prob_samples < 1 or \
            not learning_rate > 0:
        raise SamplerError(f"a two-stage VAE needs hidden widths, steps, batch_size and "
                           f"log_prob_samples >= 1 and learning_rate > 0; got {hidden}, {steps}, "
                           f"{batch_size}, {log_prob_samples}, {learning_rate}")
    activation_by_name(activation)
    return _two_stage(hidden, activation, int(steps), int(batch_size), float(learning_rate),
                      int(log_prob_samples))
