"""The standard terms: the ELBO's pieces, the IWAE bound, and the switchable extras.

Each is a :class:`~jvae.base.Term` of the shared forward pass
(:func:`jvae.terms.composition.forward`), a per-example value ``(B,)`` in nats
where it is a likelihood term: ``recon = -E_q[log p(x|z)]``, ``kl``, the
negative IWAE bound; ``1 - SSIM``, the scale-free code sparsity and the
decoder's L2 are penalties added with their weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jvae.base import Array, Term, Weight
from jvae.distributions.posteriors import kl_estimate
from jvae.terms.composition import stateless
from jvae.terms.masked import masked_mean
from jvae.terms.similarity import ssim

__all__ = ["reconstruction", "kl_divergence", "iwae_bound", "ssim_loss", "latent_sparsity",
           "decoder_l2", "elbo_terms", "neg_elbo_metric", "log_mean_exp"]


def log_mean_exp(a: Array, axis: int = 0) -> Array:
    """``log(mean(exp(a)))`` along ``axis``, computed stably."""
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def reconstruction() -> Term:
    """``-E_q[log p(x|z)]``, the mean over the samples of the negative log-likelihood."""
    return stateless(lambda fwd: -jnp.mean(fwd.log_px, axis=0))


def kl_divergence(analytic: bool | None = None) -> Term:
    """``KL(q(z|x) || p(z))``: closed form when the family has one (and
    ``analytic`` is not False), else the Monte Carlo estimate
    ``mean_s log q(z_s|x) - log p(z_s)`` on the forward pass's samples (always
    under a learned prior, such as the VampPrior, whose KL has no closed form)."""

    def value(fwd):
        post = fwd.vae.posterior
        if analytic is False or not post.analytic_kl or fwd.vae.prior is not None:
            return jnp.mean(fwd.log_q - fwd.log_pz, axis=0)
        return kl_estimate(post, fwd.post, fwd.log_q, fwd.log_pz)
    return stateless(value)


def iwae_bound() -> Term:
    """The negative importance-weighted bound (Burda et al., 2015, arXiv:1509.00519):

    ``-log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)``, with the forward pass's
    ``S`` samples. Equal to the single-sample ``-ELBO`` estimate for ``S = 1``;
    tighter (smaller, in expectation) as ``S`` grows.
    """
    return stateless(lambda fwd: -log_mean_exp(fwd.log_px + fwd.log_pz - fwd.log_q))


def ssim_loss(**ssim_kwargs) -> Term:
    """``1 - SSIM(E[x|z], x)`` averaged over samples; needs images ``(B, H, W, C)``
    (pass ``weight = beta`` to get the usual ``beta * (1 - SSIM)``)."""

    def value(fwd):
        if fwd.x.ndim != 4:
            raise ValueError(f"the SSIM term needs images (B, H, W, C), got shape {fwd.x.shape}")
        recon = fwd.vae.likelihood.mean(fwd.lik)
        return 1.0 - jnp.mean(ssim(recon, fwd.x[None], **ssim_kwargs), axis=0)
    return stateless(value)


def latent_sparsity(momentum: float = 0.99, eps: float = 1e-6) -> Term:
    """A scale-free L1 penalty on the deterministic code ``m = E_q[z|x]``:

    ``sum_j |m_j| / sqrt(v_j)`` with ``v_j`` a running estimate of ``E[m_j^2]``
    (an exponential moving average over training batches, kept in the term's
    state). Dividing by the running RMS stops a model from shrinking its codes
    (and growing its decoder weights) to dodge an L1 penalty, which a plain
    autoencoder would otherwise do.

    Args:
      momentum: decay of the moving average.
      eps: floor on ``v``.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")

    def init(vae):
        return {"second_moment": jnp.ones((math.prod(vae.latent_shape),), jnp.float32)}

    def apply(fwd, state):
        code = fwd.vae.posterior.mean(fwd.post)
        code = code.reshape(code.shape[0], -1)
        batch_moment = masked_mean(jax.lax.stop_gradient(code) ** 2, fwd.mask)
        v = momentum * state["second_moment"] + (1 - momentum) * batch_moment
        value = jnp.sum(jnp.abs(code) / jnp.sqrt(v + eps), axis=-1)
        return value, {}, {"second_moment": v}
    return Term(init, apply)


def decoder_l2() -> Term:
    """``sum ||W||^2`` over the decoder's weight matrices and kernels (leaves
    with 2+ dimensions; biases and norms' scales are not decayed), the same for
    every example, so its batch mean is the penalty itself."""

    def value(fwd):
        leaves = [w for w in jax.tree.leaves(fwd.params["decoder"]) if jnp.ndim(w) >= 2]
        total = sum(jnp.sum(jnp.square(w)) for w in leaves) if leaves else 0.0
        return jnp.broadcast_to(total, fwd.log_px.shape[1:])
    return stateless(value)


def elbo_terms(*, beta: Weight = 1.0, alpha: float = 1.0) -> dict[str, tuple[Weight, Term]]:
    """The (weighted) ELBO's terms: ``{"recon": (alpha, ...), "kl": (beta, ...)}``."""
    return {"recon": (alpha, reconstruction()), "kl": (beta, kl_divergence())}


def neg_elbo_metric(values: dict[str, Array]) -> dict[str, Array]:
    """``derived`` hook reporting the unweighted ``neg_elbo = recon + kl``."""
    return {"neg_elbo": values["recon"] + values["kl"]}
