"""The losses of vector-quantized latents (VQ-VAE; van den Oord et al., 2017).

The codebook only learns from the codebook loss ``||sg(z_e) - e||^2``; the
commitment loss ``||z_e - sg(e)||^2`` keeps the encoder near its codes (weight
0.25 in the paper). The quantizer itself is :mod:`jvae.distributions.vq`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jvae.base import Array, Term
from jvae.distributions.vq import code_indices
from jvae.terms.composition import stateless
from jvae.terms.masked import masked_mean

__all__ = ["vq_codebook_loss", "vq_commitment_loss"]


def _sq_dist(a: Array, b: Array) -> Array:
    return jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)


def vq_commitment_loss() -> Term:
    """``||z_e - sg(e)||^2`` per example: pulls the encoder towards its codes."""

    def value(fwd):
        z_e, codebook = fwd.post["z_e"], fwd.post["shared"]["codebook"]
        e = jax.lax.stop_gradient(codebook[code_indices(z_e, codebook)])
        return _sq_dist(z_e, e)
    return stateless(value)


def vq_codebook_loss(num_codes: int, momentum: float = 0.99) -> Term:
    """``||sg(z_e) - e||^2`` per example: moves the chosen codes to their inputs.

    Its state is a moving average of how often each code is chosen, reported as
    ``vq_perplexity`` = ``exp(entropy)`` of that distribution (``K`` when all
    codes are used equally, 1 when one code takes everything).

    Args:
      num_codes: codebook size ``K``.
      momentum: decay of the usage moving average (which starts uniform).
    """

    def init(vae):
        del vae
        return {"usage": jnp.full((num_codes,), 1.0 / num_codes, jnp.float32)}

    def apply(fwd, state):
        z_e, codebook = fwd.post["z_e"], fwd.post["shared"]["codebook"]
        idx = code_indices(z_e, codebook)
        value = _sq_dist(jax.lax.stop_gradient(z_e), codebook[idx])
        if codebook.shape[0] != num_codes:
            raise ValueError(f"codebook has {codebook.shape[0]} codes, the term expects {num_codes}")
        onehot = jax.nn.one_hot(idx.reshape(idx.shape[0], -1), num_codes).mean(axis=1)
        freq = masked_mean(onehot, fwd.mask)
        usage = momentum * state["usage"] + (1 - momentum) * freq
        p = usage / jnp.sum(usage)
        perplexity = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0)))
        return value, {"vq_perplexity": jnp.broadcast_to(perplexity, value.shape)}, {"usage": usage}

    return Term(init, apply)
