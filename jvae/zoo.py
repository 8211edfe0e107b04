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
has a KL (not for ``ae``). The Python builders take a :class:`~jvae.model.VAE`;
the ``*_from_config`` functions are what the CLI uses.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

from jvae.config import Config
from jvae.flows import flow_posterior
from jvae.model import VAE
from jvae.objectives import Objective
from jvae.posteriors import Posterior, posterior_by_name
from jvae.terms import (Term, Weight, compose, decoder_l2, elbo_terms, iwae_bound, kl_divergence,
                        latent_sparsity, linear_warmup, neg_elbo_metric, reconstruction,
                        ssim_loss)
from jvae.vq import vq_codebook_loss, vq_commitment_loss, vq_posterior

Array = jax.Array
Terms = Mapping[str, tuple[Weight, Term]]

__all__ = ["MODELS", "COND_KEY", "beta_vae", "cvae", "iwae", "autoencoder", "vq_vae",
           "posterior_from_config", "latent_shape_from_config", "extra_terms_from_config",
           "objective_from_config", "cond_key_from_config", "add_condition"]

MODELS = ("vae", "ae", "cvae", "iwae", "vq")
# Batch entry holding the one-hot labels a CLI ``cvae`` is conditioned on.
COND_KEY = "cond"


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


def cvae(vae: VAE, *, cond_key: str = COND_KEY, **kwargs) -> Objective:
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


def posterior_from_config(cfg: Config) -> Posterior:
    """The posterior family a config's ``model``, ``posterior`` and ``flow_*`` select."""
    if cfg.model == "ae":
        return posterior_by_name("point")
    if cfg.model == "vq":
        return vq_posterior(cfg.vq_codes)
    if cfg.posterior == "dirichlet":
        return posterior_by_name("dirichlet", prior_concentration=cfg.dirichlet_prior,
                                 reparam=cfg.dirichlet_reparam)
    base = posterior_by_name(cfg.posterior, scale=cfg.posterior_scale)
    if cfg.flow_layers:
        return flow_posterior(base, num_layers=cfg.flow_layers, coupling=cfg.flow_coupling,
                              hidden=cfg.flow_hidden, num_bins=cfg.flow_bins,
                              context_dim=cfg.flow_context)
    return base


def latent_shape_from_config(cfg: Config) -> tuple[int, ...]:
    """``(latent_dim,)``, or ``(latent_dim // vq_code_dim, vq_code_dim)`` for ``vq``."""
    if cfg.model == "vq":
        return (cfg.latent_dim // cfg.vq_code_dim, cfg.vq_code_dim)
    return (cfg.latent_dim,)


def extra_terms_from_config(cfg: Config) -> dict[str, tuple[Weight, Term]]:
    """The switchable terms a config turns on (each off at weight 0)."""
    extra = {}
    if cfg.ssim_weight:
        extra["ssim"] = (cfg.ssim_weight, ssim_loss())
    if cfg.sparsity_weight:
        extra["sparsity"] = (cfg.sparsity_weight, latent_sparsity())
    if cfg.decoder_l2:
        extra["decoder_l2"] = (cfg.decoder_l2, decoder_l2())
    return extra


def cond_key_from_config(cfg: Config) -> str | None:
    """``COND_KEY`` for a ``cvae`` (see :func:`add_condition`), else None."""
    return COND_KEY if cfg.model == "cvae" else None


def objective_from_config(cfg: Config, vae: VAE) -> Objective:
    """The training objective of a config's model family and loss-term weights."""
    extra = extra_terms_from_config(cfg)
    cond_key = cond_key_from_config(cfg)
    if cfg.model in ("vae", "cvae"):
        kl_weight = linear_warmup(cfg.beta, cfg.kl_warmup_steps) if cfg.kl_warmup_steps else cfg.beta
        return beta_vae(vae, beta=kl_weight, alpha=cfg.alpha, num_samples=cfg.num_samples,
                        cond_key=cond_key, extra=extra)
    if cfg.model == "iwae":
        return iwae(vae, num_samples=cfg.num_samples, extra=extra)
    if cfg.model == "ae":
        return autoencoder(vae, alpha=cfg.alpha, extra=extra)
    if cfg.model == "vq":
        return vq_vae(vae, num_codes=cfg.vq_codes, commitment=cfg.vq_commitment, alpha=cfg.alpha,
                      extra=extra)
    raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(MODELS)}")


def add_condition(split: dict[str, np.ndarray], num_classes: int,
                  key: str = COND_KEY) -> dict[str, np.ndarray]:
    """Adds one-hot labels ``(N, num_classes)`` float32 under ``key``."""
    labels = np.asarray(split["label"])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, "
                         f"{labels.max()}]")
    return {**split, key: np.eye(num_classes, dtype=np.float32)[labels]}
