"""Jitted generation from a trained model: prior samples and reconstructions."""

from __future__ import annotations

from typing import Callable

import jax

from jvae.base import Array
from jvae.model import VAE
from jvae.posteriors import sample_prior

__all__ = ["make_sampler", "make_reconstructor"]


def make_sampler(vae: VAE, num: int) -> Callable[..., Array]:
    """``(params, key, cond=None) -> (num, *data_shape)`` decoded prior samples.

    Each z ~ p(z) is decoded to the likelihood's mean E[x|z] (pixel
    probabilities for a Bernoulli likelihood), the usual way to show samples.
    """

    @jax.jit
    def sample(params, key, cond=None):
        z = sample_prior(vae.posterior, key, vae.latent_shape, num, params)
        return vae.likelihood.mean(vae.decode(params, z, cond))

    return sample


def make_reconstructor(vae: VAE) -> Callable[..., Array]:
    """``(params, x, cond=None) -> E[x|z]`` at the posterior mean z = E_q[z|x]."""

    @jax.jit
    def reconstruct(params, x, cond=None):
        z = vae.posterior.mean(vae.encode(params, x, cond))
        return vae.likelihood.mean(vae.decode(params, z, cond))

    return reconstruct
