"""The regularized autoencoder's terms: a code norm and a smooth decoder.

RAE (Ghosh et al., 2020, "From variational to deterministic autoencoders",
arXiv:1903.12436) trains a deterministic autoencoder on

    L_RAE = L_rec + beta * L_z + lambda * L_reg,      L_z = ||z||^2 / 2,

where ``L_z`` keeps the codes near the origin (with ``beta = 1`` it is
``-log N(z; 0, I)`` up to a constant: the MAP objective under a standard normal
prior) and ``L_reg`` keeps the decoder smooth, so that codes between the
training codes decode sensibly (samples then come from a density fitted to the
codes afterwards). The paper's regularizers (:data:`RAE_REGULARIZERS`):

* ``l2``: weight decay on the decoder, ``sum ||theta||^2``
  (:func:`jvae.terms.standard.decoder_l2`);
* ``gp``: the gradient penalty ``||grad_z D(z)||^2``, the squared Frobenius norm
  of the decoder's Jacobian at the code, ``sum_{k, p} (d E[x_p|z] / d z_k)^2``
  (:func:`decoder_gradient_penalty`). Computed exactly it costs one
  Jacobian-vector product per latent dimension; by default it is Hutchinson's
  unbiased estimate ``E_v ||J v||^2`` over Rademacher probes ``v`` (Hutchinson,
  1990; the random projections of Hoffman et al., 2019, arXiv:1908.02729), one
  product per probe.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jvae.base import Array, Term
from jvae.model import decode_samples
from jvae.terms.composition import stateless
from jvae.terms.standard import decoder_l2

__all__ = ["RAE_REGULARIZERS", "latent_norm", "decoder_jacobian_sq_norm",
           "decoder_jacobian_sq_norm_estimate", "decoder_gradient_penalty", "rae_regularizer",
           "JVP_CHUNK"]

# Jacobian columns computed side by side (memory: this many decoder passes at once).
JVP_CHUNK = 32


def latent_norm() -> Term:
    """``||z||^2 / 2`` per example, the mean over the pass's samples (one code for a point posterior)."""

    def value(fwd):
        z = fwd.z.reshape(*fwd.z.shape[:2], -1).astype(jnp.float32)
        return jnp.mean(0.5 * jnp.sum(jnp.square(z), axis=-1), axis=0)
    return stateless(value)


def _jacobian_products(fn, z: Array, latent_ndim: int, valid: Array | None):
    """``t -> ||J t||^2`` per code: the squared norm of the decoder's output along tangent ``t``.

    Each product is the transpose of the decoder's vector-Jacobian product
    (``J t`` is the VJP of ``u -> J^T u``), not forward mode, so decoders with
    custom gradients (the im2col convolutions of :mod:`jvae.layers`) work as well.
    """
    out, vjp = jax.vjp(fn, z)
    _, transpose = jax.vjp(lambda u: vjp(u)[0], jnp.zeros_like(out))
    lead = z.ndim - latent_ndim

    def sq_norm(t):
        (col,) = transpose(t)
        col = jnp.square(col.astype(jnp.float32))
        if valid is not None:
            col = col * valid.reshape(valid.shape + (1,) * (col.ndim - lead - 1))
        return jnp.sum(col, axis=tuple(range(lead, col.ndim)))
    return sq_norm


def decoder_jacobian_sq_norm(fn, z: Array, latent_ndim: int, valid: Array | None = None) -> Array:
    """``||d fn(z) / d z||_F^2`` per code, for a ``fn`` that maps each code on its own.

    One Jacobian-vector product per latent element: the tangent ``e_k`` at every
    code of the batch at once gives each code's ``k``-th Jacobian column (the
    codes do not interact), so the cost is ``prod(latent_shape)`` products,
    vectorized :data:`JVP_CHUNK` at a time.

    Args:
      fn: ``z (..., *latent_shape) -> (..., *data_shape)``.
      z: codes with leading axes ``lead`` and ``latent_ndim`` latent axes.
      latent_ndim: number of trailing latent axes of ``z``.
      valid: ``(B, T)`` 1 for the real elements along the data's first axis
        (``lead`` must end in ``B``), or None: every output element counts.

    Returns:
      ``lead``-shaped squared norms.
    """
    latent_shape = z.shape[z.ndim - latent_ndim:]
    size = math.prod(latent_shape)
    basis = jnp.eye(size, dtype=z.dtype).reshape(size, *latent_shape)
    sq_norm = _jacobian_products(fn, z, latent_ndim, valid)
    return jnp.sum(jax.lax.map(lambda e: sq_norm(jnp.broadcast_to(e, z.shape)), basis,
                               batch_size=min(size, JVP_CHUNK)), axis=0)


def decoder_jacobian_sq_norm_estimate(fn, z: Array, latent_ndim: int, key: Array,
                                      probes: int = 1, valid: Array | None = None) -> Array:
    """Hutchinson's unbiased estimate of ``||d fn(z) / d z||_F^2`` per code.

    ``||J||_F^2 = tr(J^T J) = E_v ||J v||^2`` for any ``v`` with ``E[v v^T] = I``;
    Rademacher ``v`` (independent entries of +-1) give the smallest variance,
    ``2 sum_{k != l} (J^T J)_{kl}^2`` for one probe. The mean over ``probes``
    independent probes per code costs ``probes`` Jacobian-vector products
    instead of :func:`decoder_jacobian_sq_norm`'s ``prod(latent_shape)``.

    Args:
      fn, z, latent_ndim, valid: as for :func:`decoder_jacobian_sq_norm`.
      key: PRNG key of the probes.
      probes: probes per code (at least 1).

    Returns:
      ``lead``-shaped estimates.
    """
    if probes < 1:
        raise ValueError(f"probes must be at least 1, got {probes}")
    v = jax.random.rademacher(key, (probes, *z.shape), z.dtype)
    sq_norm = _jacobian_products(fn, z, latent_ndim, valid)
    return jnp.mean(jax.lax.map(sq_norm, v, batch_size=min(probes, JVP_CHUNK)), axis=0)


def decoder_gradient_penalty(probes: int = 1) -> Term:
    """RAE-GP's ``||grad_z E[x|z]||_F^2`` at the pass's codes, the mean over samples.

    The decoder's output is the likelihood's mean ``E[x|z]`` (pixel probabilities
    for a Bernoulli decoder); its gradient reaches the decoder's weights and,
    through ``z``, the encoder.

    Args:
      probes: Rademacher probes per code of Hutchinson's estimate
        (:func:`decoder_jacobian_sq_norm_estimate`, drawn with the pass's key);
        0 computes the norm exactly (:func:`decoder_jacobian_sq_norm`).
    """
    if probes < 0:
        raise ValueError(f"probes must be 0 (exact) or positive, got {probes}")

    def value(fwd):
        vae = fwd.vae

        def mean_of(z):
            return vae.likelihood.mean(decode_samples(vae, fwd.params, z, fwd.cond))

        latent_ndim = len(vae.latent_shape)
        if probes == 0:
            sq = decoder_jacobian_sq_norm(mean_of, fwd.z, latent_ndim, fwd.valid)
        else:
            if fwd.key is None:
                raise ValueError("the gradient penalty's probes are drawn with the forward "
                                 "pass's key; build the pass with "
                                 "jvae.terms.composition.forward (or use probes=0)")
            # Folded so another term drawing with the pass's key draws independently.
            sq = decoder_jacobian_sq_norm_estimate(mean_of, fwd.z, latent_ndim,
                                                   jax.random.fold_in(fwd.key, 1),
                                                   probes, fwd.valid)
        return jnp.mean(sq, axis=0)
    return stateless(value)


# name -> factory of the term from the gradient penalty's probe count (which l2 ignores).
RAE_REGULARIZERS = {"l2": lambda gp_probes: decoder_l2(), "gp": decoder_gradient_penalty}


def rae_regularizer(name: str, gp_probes: int = 1) -> Term:
    """The decoder regularizer ``name`` of :data:`RAE_REGULARIZERS`.

    ``gp_probes`` is the gradient penalty's probe count (0: exact), see
    :func:`decoder_gradient_penalty`.
    """
    if name not in RAE_REGULARIZERS:
        raise ValueError(f"unknown RAE regularizer {name!r}; choose one of "
                         f"{', '.join(RAE_REGULARIZERS)}")
    return RAE_REGULARIZERS[name](gp_probes)
