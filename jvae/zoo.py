"""The model zoo: families as (posterior, objective) pairs built from terms.

Every family is the same encoder/decoder machinery with a different posterior
family and a different composition of :mod:`jvae.terms`:

========  ==============================  =========================================
model     posterior                       objective (weights)
========  ==============================  =========================================
``vae``   normal / dirichlet / flow       ``alpha * recon + beta * kl`` (beta-VAE)
``cvae``  same, encoder+decoder get ``y``  as ``vae``, conditioned on ``cond_key``
``iwae``  normal / dirichlet / flow       ``-log mean_k w_k`` (k = ``num_samples``)
``ae``    point (``z = loc(x)``)           ``alpha * recon``
``vq``    vector-quantized codebook        ``alpha * recon + codebook + c * commitment``
========  ==============================  =========================================

All accept the optional terms ``ssim``, ``sparsity`` and ``decoder_l2``
(``extra`` below), and report ``neg_elbo = recon + kl`` wherever the family
has a KL (not for ``ae``). The builders take a :class:`~jvae.model.VAE`;
:mod:`jvae.experiment` maps a run's settings onto them.
"""

from __future__ import annotations

from typing import Mapping

from jvae.model import VAE
from jvae.objectives import Objective
from jvae.terms import (
    Term,
    Weight,
    compose,
    elbo_terms,
    iwae_bound,
    kl_divergence,
    neg_elbo_metric,
    reconstruction,
)
from jvae.vq import vq_codebook_loss, vq_commitment_loss

Terms = Mapping[str, tuple[Weight, Term]]

__all__ = ["beta_vae", "cvae", "iwae", "autoencoder", "vq_vae"]


def _merge(base: Terms, extra: Terms | None) -> dict:
    clash = set(base) & set(extra or {})
    if clash:
        raise ValueError(f"extra terms {sorted(clash)} would replace the family's own; rename them")
    return {**base, **(extra or {})}


def beta_vae(vae: VAE, *, beta: Weight = 1.0, alpha: float = 1.0, num_samples: int = 1,
             cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """``alpha * recon + beta * kl`` plus ``extra`` (Higgins et al., 2017).

    ``beta`` may be a schedule (e.g. :func:`~jvae.terms.linear_warmup`);
    ``beta = alpha = 1`` without extras is :func:`~jvae.objectives.elbo`.
    """
    return compose(vae, _merge(elbo_terms(beta=beta, alpha=alpha), extra),
                   num_samples=num_samples, cond_key=cond_key, derived=neg_elbo_metric)


def cvae(vae: VAE, *, cond_key: str = "cond", **kwargs) -> Objective:
    """A conditional VAE's ELBO ``log p(x|y) >= E_q(z|x,y)[log p(x|z,y)] - KL(q(z|x,y) || p(z))``
    (Sohn et al., 2015): :func:`beta_vae` with encoder and decoder fed ``batch[cond_key]``."""
    return beta_vae(vae, cond_key=cond_key, **kwargs)


def iwae(vae: VAE, *, num_samples: int, cond_key: str | None = None,
         extra: Terms | None = None) -> Objective:
    """Trains on the k-sample importance-weighted bound (Burda et al., 2015).

    The loss is ``neg_iwae = -log (1/k) sum_k p(x, z_k) / q(z_k|x)``; the
    ELBO's ``recon`` and ``kl`` are reported alongside (weight 0).
    """
    terms = {"neg_iwae": (1.0, iwae_bound()), "recon": (0.0, reconstruction()),
             "kl": (0.0, kl_divergence())}
    return compose(vae, _merge(terms, extra), num_samples=num_samples, cond_key=cond_key,
                   derived=neg_elbo_metric)


def autoencoder(vae: VAE, *, alpha: float = 1.0, cond_key: str | None = None,
                extra: Terms | None = None) -> Objective:
    """A deterministic autoencoder: ``alpha * -log p(x|z = enc(x))`` plus ``extra``.

    Use it with :func:`~jvae.posteriors.point_posterior`; it reports no ELBO.
    """
    if vae.posterior.name != "point":
        raise ValueError(f"an autoencoder needs the point posterior, got {vae.posterior.name!r}")
    return compose(vae, _merge({"recon": (alpha, reconstruction())}, extra), cond_key=cond_key)


def vq_vae(vae: VAE, *, num_codes: int, commitment: float = 0.25, alpha: float = 1.0,
           cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """VQ-VAE: ``alpha * recon + ||sg(z_e) - e||^2 + commitment * ||z_e - sg(e)||^2``.

    Reports ``kl = n log K`` (uniform prior over codes) so ``neg_elbo`` is the
    paper's bound, and ``vq_perplexity`` of a running code-usage histogram.
    Use it with :func:`~jvae.vq.vq_posterior` of the same ``num_codes``.
    """
    if vae.posterior.name != "vq":
        raise ValueError(f"a VQ-VAE needs the vq posterior, got {vae.posterior.name!r}")
    terms = {"recon": (alpha, reconstruction()), "kl": (0.0, kl_divergence()),
             "vq_codebook": (1.0, vq_codebook_loss(num_codes)),
             "vq_commitment": (commitment, vq_commitment_loss())}
    return compose(vae, _merge(terms, extra), cond_key=cond_key, derived=neg_elbo_metric)
