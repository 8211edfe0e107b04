"""Vector-quantized latents (VQ-VAE; van den Oord et al., 2017, arXiv:1711.00937).

The encoder emits ``z_e`` of shape ``(B, ..., code_dim)``; every code vector
(the last axis) is replaced by its nearest row ``e`` of a codebook of ``K``
entries shared by all examples. Gradients pass *straight through* the
quantizer, ``z_q = z_e + stop_gradient(e - z_e)``, so the decoder's gradient
reaches the encoder unchanged. The codebook only learns from the codebook loss
``||sg(z_e) - e||^2``; the commitment loss ``||z_e - sg(e)||^2`` keeps the
encoder near its codes (weight 0.25 in the paper).

As a :class:`~jvae.distributions.posteriors.Posterior`, q(z|x) is a point mass on the
quantized code and the prior is uniform over the ``K^n`` code combinations
(``n`` code vectors per example), so ``KL = n log K`` and the ELBO is
``recon + n log K`` (the paper's Section 3.1).

The straight-through posterior lives here; the codebook and commitment losses
are terms (:mod:`jvae.terms.vq`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jvae.base import Array, Posterior

__all__ = ["vq_posterior", "quantize", "code_indices", "codebook_usage"]


def code_indices(z_e: Array, codebook: Array) -> Array:
    """Index of the nearest codebook row for every code vector: ``z_e.shape[:-1]``."""
    d = (jnp.sum(z_e ** 2, -1, keepdims=True) - 2 * z_e @ codebook.T
         + jnp.sum(codebook ** 2, -1))
    return jnp.argmin(d, axis=-1)


def quantize(z_e: Array, codebook: Array) -> tuple[Array, Array]:
    """``(z_q, indices)``: straight-through quantized codes and their indices.

    The forward value of ``z_q`` is the nearest codebook row; its gradient with
    respect to ``z_e`` is the identity, and it sends no gradient to the codebook.
    """
    idx = code_indices(z_e, codebook)
    e = jax.lax.stop_gradient(codebook)[idx]
    return z_e + jax.lax.stop_gradient(e - z_e), idx


def vq_posterior(num_codes: int = 128, init_scale: float = 1.0) -> Posterior:
    """A VQ latent as a posterior family (point mass on the nearest code).

    The last latent axis is the code dimension: ``latent_shape = (n, code_dim)``
    for ``n`` code vectors (or ``(h, w, code_dim)`` for a spatial latent).

    Args:
      num_codes: codebook size ``K``.
      init_scale: standard deviation of the codebook's Normal initialization
        (about that of freshly initialized encoder outputs, so every code
        starts within reach).

    Returns:
      A :class:`~jvae.distributions.posteriors.Posterior` whose shared parameters are
      ``{"codebook": (K, code_dim)}``.
    """
    if num_codes < 2:
        raise ValueError(f"a codebook needs at least 2 codes, got {num_codes}")
    log_k = math.log(num_codes)

    def n_vectors(latent_shape):
        return math.prod(latent_shape[:-1])

    def param_shapes(latent_shape):
        if len(latent_shape) < 2:
            raise ValueError("a VQ latent needs shape (..., code_dim) with a code axis last, got "
                             f"{tuple(latent_shape)}")
        return {"z_e": tuple(latent_shape)}

    def init_shared(key, latent_shape):
        return {"codebook": init_scale * jax.random.normal(key, (num_codes, latent_shape[-1]))}

    def mean(params):
        return quantize(params["z_e"], params["shared"]["codebook"])[0]

    def sample(key, params, num_samples):
        del key
        z_q = mean(params)
        return jnp.broadcast_to(z_q, (num_samples, *z_q.shape))

    def log_prob(params, z):
        return jnp.zeros(z.shape[:2], z.dtype)

    def kl(params):
        z_e = params["z_e"]
        return jnp.full(z_e.shape[:1], n_vectors(z_e.shape[1:]) * log_k, z_e.dtype)

    def prior_sample(key, latent_shape, n, shared):
        idx = jax.random.randint(key, (n, *latent_shape[:-1]), 0, num_codes)
        return shared["codebook"][idx]

    def prior_log_prob(z, latent_shape):
        return jnp.full(z.shape[:z.ndim - len(latent_shape)], -n_vectors(latent_shape) * log_k,
                        z.dtype)

    return Posterior("vq", param_shapes, lambda raw: raw, sample, log_prob, kl, mean,
                     prior_sample, prior_log_prob, init_shared=init_shared)


def codebook_usage(indices: Array, num_codes: int) -> dict[str, float]:
    """Usage of a codebook over a set of assignments (e.g. a whole test split).

    Returns:
      ``{"codes_used": count of codes chosen at least once, "usage_fraction":
      that count over K, "perplexity": exp(entropy of the code histogram)}``.
    """
    counts = jnp.bincount(indices.reshape(-1), length=num_codes)
    p = counts / jnp.maximum(counts.sum(), 1)
    used = int(jnp.sum(counts > 0))
    return {"codes_used": used, "usage_fraction": used / num_codes,
            "perplexity": float(jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0))))}
