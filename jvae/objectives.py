"""Training objectives as NamedTuples of pure functions.

An :class:`Objective` computes *per-example* terms, so one definition serves
the train step (masked mean), evaluation (masked sums over a whole split) and
data-parallel reductions alike. Every objective returns a ``"loss"`` entry, the
per-example quantity that is minimized, next to the metrics it reports, all in
nats per example (summed over data and latent dimensions).

Objectives may carry state across steps (a running estimate, a warm-up
counter): ``init()`` builds it, ``terms`` returns the updated state, and the
train state stores it as a pytree.
"""

from __future__ import annotations

from jvae.base import VAE, Objective
from jvae.terms import compose, elbo_terms, neg_elbo_metric

__all__ = ["Objective", "elbo"]


def elbo(vae: VAE, *, beta: float = 1.0, num_samples: int = 1,
         cond_key: str | None = None) -> Objective:
    """The (beta-weighted) evidence lower bound.

    ``ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))`` (Kingma & Welling,
    2014, arXiv:1312.6114); the loss is ``recon + beta * kl`` (Higgins et al.,
    2017) with ``recon = -E_q[log p(x|z)]`` estimated from ``num_samples``
    reparameterized draws and the KL in closed form (for families without one,
    such as flows, the Monte Carlo estimate ``log q(z|x) - log p(z)`` on the
    same draws). It is :func:`jvae.terms.compose` of
    :func:`jvae.terms.elbo_terms`; extend that dict to add terms.

    Args:
      vae: the model.
      beta: weight of the KL term in the loss (reported ``neg_elbo`` is always
        the true bound, ``recon + kl``).
      num_samples: posterior samples per example for the reconstruction term.
      cond_key: batch entry to condition encoder and decoder on (e.g. a one-hot
        label), or None.

    Returns:
      An :class:`Objective` with terms ``loss, neg_elbo, recon, kl``.
    """
    return compose(vae, elbo_terms(beta=beta), num_samples=num_samples, cond_key=cond_key,
                   derived=neg_elbo_metric)
