"""Training objectives: the ELBO and the model zoo's families, built from terms.

The front door of the objectives. An :class:`Objective` computes
*per-example* terms, so one definition serves the train step (masked mean),
evaluation (masked sums over a whole split) and data-parallel reductions
alike. Every objective returns a ``"loss"`` entry, the per-example quantity
that is minimized, next to the metrics it reports, all in nats per example
(summed over data and latent dimensions). Objectives may carry state across
steps (a running estimate, a warm-up counter): ``init()`` builds it, ``terms``
returns the updated state, and the train state stores it as a pytree.

Every family is the same encoder/decoder machinery with a different posterior
family and a different composition of :mod:`jvae.terms` (the building blocks:
composition, the standard terms, masked reductions, SSIM, the VQ losses):

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
(``extra`` below), and for audio the spectral distances ``stft`` and ``mel``
and the metrics ``lsd_db``, ``mrstft`` and ``snr_db``
(:mod:`jvae.terms.spectral`), and report ``neg_elbo = recon + kl`` wherever
the family has a KL (not for ``ae``). The spectral terms are distortions, not
log-likelihoods: with them on, ``loss`` is no longer a bound, while
``neg_elbo`` still is (in nats, over a padded clip's real samples only). The builders take a :class:`~jvae.model.VAE`;
:mod:`jvae.training.experiment` maps a run's settings onto them.
"""

from __future__ import annotations

from typing import Mapping

import jax

from jvae.base import VAE, Objective
from jvae.distributions.likelihoods import masked_log_prob
from jvae.distributions.posteriors import sample_prior
from jvae.terms.composition import Term, Weight, compose
from jvae.terms.masked import valid_mask
from jvae.terms.standard import elbo_terms, iwae_bound, kl_divergence, neg_elbo_metric, reconstruction
from jvae.terms.vq import vq_codebook_loss, vq_commitment_loss

Terms = Mapping[str, tuple[Weight, Term]]

__all__ = ["Objective", "elbo", "beta_vae", "cvae", "CVAE_PRIOR_WEIGHT", "iwae", "autoencoder",
           "vq_vae"]


def elbo(vae: VAE, *, beta: float = 1.0, num_samples: int = 1,
         cond_key: str | None = None) -> Objective:
    """The (beta-weighted) evidence lower bound.

    ``ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))`` (Kingma & Welling,
    2014, arXiv:1312.6114); the loss is ``recon + beta * kl`` (Higgins et al.,
    2017) with ``recon = -E_q[log p(x|z)]`` estimated from ``num_samples``
    reparameterized draws and the KL in closed form (for families without one,
    such as flows, the Monte Carlo estimate ``log q(z|x) - log p(z)`` on the
    same draws). It is :func:`jvae.terms.composition` of
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


# Weight of the cvae's prior-reconstruction term, chosen with benchmarks/cvae.py
# (figures for other weights in benchmarks/README.md).
CVAE_PRIOR_WEIGHT = 0.2


def cvae(vae: VAE, *, cond_key: str = "cond", prior_weight: float = CVAE_PRIOR_WEIGHT,
         **kwargs) -> Objective:
    """A conditional VAE (Sohn et al., 2015): :func:`beta_vae` with encoder and
    decoder fed ``batch[cond_key]``, optionally in the paper's hybrid form.

    The ELBO is ``log p(x|y) >= E_q(z|x,y)[log p(x|z,y)] - KL(q(z|x,y) || p(z))``.
    Trained on it alone, an MLP CVAE on MNIST lets ``z`` carry the class as
    well (the KL charges at most ``log 10`` nats for it), so decodes of prior
    draws follow ``z`` rather than ``y``. ``prior_weight = w > 0`` adds
    ``w * prior_recon``, ``prior_recon = -log p(x | z', y)`` with ``z' ~ p(z)``
    drawn independently of ``x`` (the GSNN term of the hybrid objective, Sohn
    et al., 2015, Eq. 9): given a code that says nothing about ``x``, the
    decoder can only lower it through ``y``, which is what sampling
    ``x ~ p(x | z', y)`` needs. The reported ``neg_elbo`` stays the plain bound;
    ``prior_weight = 0`` trains on it alone.
    """
    objective = beta_vae(vae, cond_key=cond_key, **kwargs)
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    if not prior_weight:
        return objective

    def terms(params, batch, key, loss_state):
        out, loss_state = objective.terms(params, batch, key, loss_state)
        x = batch["image"]
        z = sample_prior(vae.posterior, jax.random.fold_in(key, 1), vae.latent_shape,
                         x.shape[0], params)
        value = -masked_log_prob(vae.likelihood, vae.decode(params, z, batch[cond_key]), x,
                                 valid_mask(batch, x))
        return {**out, "prior_recon": value, "loss": out["loss"] + prior_weight * value}, loss_state

    return Objective(objective.init, terms)


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

    Use it with :func:`~jvae.distributions.posteriors.point_posterior`; it reports no ELBO.
    """
    if vae.posterior.name != "point":
        raise ValueError(f"an autoencoder needs the point posterior, got {vae.posterior.name!r}")
    return compose(vae, _merge({"recon": (alpha, reconstruction())}, extra), cond_key=cond_key)


def vq_vae(vae: VAE, *, num_codes: int, commitment: float = 0.25, alpha: float = 1.0,
           cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """VQ-VAE: ``alpha * recon + ||sg(z_e) - e||^2 + commitment * ||z_e - sg(e)||^2``.

    Reports ``kl = n log K`` (uniform prior over codes) so ``neg_elbo`` is the
    paper's bound, and ``vq_perplexity`` of a running code-usage histogram.
    Use it with :func:`~jvae.distributions.vq.vq_posterior` of the same ``num_codes``.
    """
    if vae.posterior.name != "vq":
        raise ValueError(f"a VQ-VAE needs the vq posterior, got {vae.posterior.name!r}")
    terms = {"recon": (alpha, reconstruction()), "kl": (0.0, kl_divergence()),
             "vq_codebook": (1.0, vq_codebook_loss(num_codes)),
             "vq_commitment": (commitment, vq_commitment_loss())}
    return compose(vae, _merge(terms, extra), cond_key=cond_key, derived=neg_elbo_metric)
