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

=============  ==============================  =========================================
model          posterior                       objective (weights)
=============  ==============================  =========================================
``vae``        normal / dirichlet / flow       ``alpha * recon + beta * kl`` (beta-VAE)
``cvae``       same, encoder+decoder get ``y``  as ``vae``, conditioned on ``cond_key``
``iwae``       normal / dirichlet / flow       ``-log mean_k w_k`` (k = ``num_samples``)
``vamp``       normal / dirichlet / flow       as ``vae``, VampPrior p(z), Monte Carlo ``kl``
``ae``         point (``z = loc(x)``)           ``alpha * recon``
``vq``         vector-quantized codebook        ``alpha * recon + codebook + c * commitment``
``btcvae``     normal                          ``alpha * recon + a * mi + b * tc + c * dwkl``
``factorvae``  normal / flow                   ``alpha * recon + beta * kl + gamma * tc`` (critic)
``infovae``    normal / dirichlet / flow       ``recon + (1 - a) * kl + (a + lam - 1) * mmd``
``wae``        point                           ``alpha * recon + lam * mmd``
``rae``        point                           ``alpha * recon + beta * |z|^2/2 + lam * reg``
``miwae``      normal / dirichlet / flow       ``-(1/M) sum_m log mean_k w_mk`` (M*K draws)
``piwae``      normal / dirichlet / flow       IWAE(M*K) for the decoder, MIWAE(M, K) for the encoder
``ciwae``      normal / dirichlet / flow       ``beta * (recon + kl) + (1 - beta) * neg_iwae``
``svae``       von Mises-Fisher on S^{d-1}     ``alpha * recon + beta * kl``, uniform prior
=============  ==============================  =========================================

``btcvae``'s ``mi``, ``tc`` and ``dwkl`` split the KL (Chen et al., 2018) with
batch estimates of ``q(z)``; ``factorvae``'s ``tc`` is a critic's logit, the
critic trained inside the objective (Kim & Mnih, 2018); ``mmd`` is the unbiased
MMD between codes and prior draws (InfoVAE, Zhao et al., 2017; WAE, Tolstikhin
et al., 2018); ``rae``'s ``reg`` is decoder L2 or the decoder's gradient
penalty (Ghosh et al., 2020). ``miwae``, ``piwae`` and ``ciwae`` are
Rainforth et al.'s (2018) answers to IWAE's weak encoder gradients: ``M``
averaged ``K``-sample bounds (``M = groups``, ``K = num_samples``), IWAE and
MIWAE gradients split between the networks (:mod:`jvae.terms.importance`), and
a convex combination of ELBO and IWAE; each reports ``neg_elbo`` beside its own
bound. ``svae`` is the hyperspherical VAE (Davidson et al., 2018;
:mod:`jvae.distributions.vmf`).

``vamp`` is :func:`beta_vae` on a model whose prior is learned
(:func:`~jvae.distributions.priors.vamp_prior`, Tomczak & Welling, 2018):
``p(z) = (1/K) sum_k q(z | u_k)`` over ``K`` trained pseudo-inputs, so ``kl``
is the estimate ``mean_s log q(z_s|x) - log p(z_s)``. The two-stochastic-layer
model of Burda et al. (2015, section 5) is ``vae`` or ``iwae`` on a model with
:func:`~jvae.distributions.priors.hierarchical_prior` (``stochastic_layers=2``):
``log p(z)`` is then the one-draw estimate ``log p(h1|h2) + log p(h2) -
log q(h2|h1)``, so every bound is the two-layer model's. The ELBO and
importance-weighted objectives take any model with a learned prior
(:class:`~jvae.base.Prior`): ``log p(z)`` and prior draws go through
:func:`~jvae.distributions.priors.log_prior` and
:func:`~jvae.distributions.priors.draw_prior`.

All accept the optional terms ``ssim``, ``sparsity`` and ``decoder_l2``
(``extra`` below), and for audio the spectral distances ``stft`` and ``mel``
and the metrics ``lsd_db``, ``mrstft`` and ``snr_db``
(:mod:`jvae.terms.spectral`), and report ``neg_elbo = recon + kl`` wherever
the family has a KL (not for ``ae``, ``wae``, ``rae``). The spectral terms are distortions, not
log-likelihoods: with them on, ``loss`` is no longer a bound, while
``neg_elbo`` still is (in nats, over a padded clip's real samples only). The builders take a :class:`~jvae.model.VAE`;
:mod:`jvae.training.experiment` maps a run's settings onto them.
"""

from __future__ import annotations

from typing import Mapping

import jax
import optax

from jvae.base import VAE, Discriminator, Objective
from jvae.distributions.likelihoods import masked_log_prob
from jvae.distributions.priors import draw_prior
from jvae.terms.composition import Term, Weight, compose
from jvae.terms.importance import miwae_bound, split_gradient
from jvae.terms.masked import valid_mask
from jvae.terms.mmd import mmd_to_prior
from jvae.terms.regularized import latent_norm, rae_regularizer
from jvae.terms.standard import elbo_terms, iwae_bound, kl_divergence, neg_elbo_metric, reconstruction
from jvae.terms.total_correlation import discriminator_tc, tc_decomposition
from jvae.terms.vq import vq_codebook_loss, vq_commitment_loss

Terms = Mapping[str, tuple[Weight, Term]]

__all__ = ["Objective", "elbo", "beta_vae", "cvae", "CVAE_PRIOR_WEIGHT", "iwae", "autoencoder",
           "vq_vae", "beta_tcvae", "factor_vae", "info_vae", "wae", "rae", "miwae", "piwae",
           "ciwae", "CIWAE_BETA"]


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
        z = draw_prior(vae, jax.random.fold_in(key, 1), x.shape[0], params)
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


def _iw_terms(neg_iwae: Weight, neg_miwae: Weight | None = None, groups: int = 1) -> dict:
    """The IWAE (and MIWAE) bounds with the given weights and the ELBO's pieces as metrics."""
    terms = {"neg_iwae": (neg_iwae, iwae_bound())}
    if neg_miwae is not None:
        terms["neg_miwae"] = (neg_miwae, miwae_bound(groups))
    return {**terms, "recon": (0.0, reconstruction()), "kl": (0.0, kl_divergence())}


def miwae(vae: VAE, *, num_samples: int, groups: int, cond_key: str | None = None,
          extra: Terms | None = None) -> Objective:
    """Trains both networks on MIWAE(M, K) (Rainforth et al., 2018, arXiv:1802.04537).

    The loss is ``neg_miwae = -(1/M) sum_m log (1/K) sum_k w_mk``,
    ``w_mk = p(x, z_mk) / q(z_mk|x)``, over ``M * K`` posterior draws per example
    (``M = groups``, ``K = num_samples``): ``M`` independent ``K``-sample IWAE
    estimates averaged, which trades some of IWAE's tightness for a higher
    signal-to-noise ratio of the encoder's gradient. ``M = 1`` is :func:`iwae`;
    ``K = 1`` is the ELBO with ``M`` samples. Reported alongside (weight 0):
    ``neg_iwae``, the ``M * K``-sample IWAE bound on the same draws, and the
    ELBO's ``recon``, ``kl`` and ``neg_elbo``.
    """
    return compose(vae, _merge(_iw_terms(0.0, 1.0, groups), extra),
                   num_samples=groups * num_samples, cond_key=cond_key, derived=neg_elbo_metric)


def piwae(vae: VAE, *, num_samples: int, groups: int, cond_key: str | None = None,
          extra: Terms | None = None) -> Objective:
    """Partially importance-weighted auto-encoder (Rainforth et al., 2018).

    From the same ``M * K`` draws per example, the generative network (the
    decoder, and a learned prior's parameters) gets the gradient of the
    ``M * K``-sample IWAE bound and the inference network (the encoder, and a
    posterior family's shared parameters such as a flow's) the gradient of
    MIWAE(M, K) (``M = groups``, ``K = num_samples``): the tighter bound where it
    helps the model, the higher gradient signal-to-noise ratio where it helps
    the encoder. One objective, one optimizer, one forward pass:
    :func:`~jvae.terms.importance.split_gradient` keeps each bound's gradient for its
    own network's parameters. ``loss`` is ``neg_iwae``; ``neg_miwae``, ``recon``,
    ``kl`` and ``neg_elbo`` are reported.
    ``extra`` terms get their full gradient (both networks).
    """
    objective = compose(vae, _merge(_iw_terms(1.0, 0.0, groups), extra),
                        num_samples=groups * num_samples, cond_key=cond_key,
                        derived=neg_elbo_metric)
    # The same loss with MIWAE's bound in place of IWAE's (extra terms kept).
    return split_gradient(objective,
                          lambda out: out["loss"] - out["neg_iwae"] + out["neg_miwae"])


# Rainforth et al. (2018) report CIWAE's best results at beta = 0.5.
CIWAE_BETA = 0.5


def ciwae(vae: VAE, *, num_samples: int, beta: float = CIWAE_BETA,
          cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """Combination importance-weighted auto-encoder (Rainforth et al., 2018):
    ``beta * ELBO + (1 - beta) * IWAE(K)``, ``K = num_samples``.

    The loss is ``beta * (recon + kl) + (1 - beta) * neg_iwae``, from the same
    ``K`` draws; the ELBO is :func:`elbo`'s (``recon`` averaged over the draws
    and the closed-form KL where the family has one: the same expectation as the
    paper's ``(1/K) sum_k log w_k``, with less variance). ``beta = 1`` is the
    ELBO, ``beta = 0`` is :func:`iwae`. Reports ``neg_ciwae`` (the loss's bound
    without ``extra`` terms), ``neg_iwae``, ``recon``, ``kl``, ``neg_elbo``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"CIWAE's beta must be in [0, 1], got {beta}")

    def derived(values):
        neg_elbo = values["recon"] + values["kl"]
        return {"neg_elbo": neg_elbo,
                "neg_ciwae": beta * neg_elbo + (1.0 - beta) * values["neg_iwae"]}

    terms = {"neg_iwae": (1.0 - beta, iwae_bound()), **elbo_terms(beta=beta, alpha=beta)}
    return compose(vae, _merge(terms, extra), num_samples=num_samples, cond_key=cond_key,
                   derived=derived)


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


def beta_tcvae(vae: VAE, *, mi_weight: Weight = 1.0, tc_weight: Weight = 6.0,
               dim_kl_weight: Weight = 1.0, estimator: str = "mws",
               dataset_size: int | None = None, alpha: float = 1.0, num_samples: int = 1,
               cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """beta-TCVAE (Chen et al., 2018, arXiv:1802.04942):
    ``alpha * recon + a * mi + b * tc + c * dwkl`` (the paper's alpha, beta, gamma
    are ``mi_weight``, ``tc_weight``, ``dim_kl_weight``; ``alpha`` is jvae's
    reconstruction weight).

    The KL's three pieces, index-code mutual information, total correlation and
    dimension-wise KL, are estimated from the batch's posteriors by minibatch-weighted
    (``"mws"``) or minibatch-stratified (``"mss"``) sampling over a training set of
    ``dataset_size`` examples (:mod:`jvae.terms.total_correlation`). Per sample they
    add up to ``log q(z|x) - log p(z)``. Reports ``neg_elbo = recon + kl`` (the
    true bound, analytic KL), ``mi``, ``tc`` and ``dwkl``.

    Needs a diagonal normal posterior (:func:`~jvae.distributions.posteriors.normal_posterior`).
    """
    if vae.posterior.name != "normal":
        raise ValueError(f"beta-TCVAE's estimators need the normal posterior, got "
                         f"{vae.posterior.name!r}")
    terms = {"recon": (alpha, reconstruction()), "kl": (0.0, kl_divergence()),
             **tc_decomposition(alpha=mi_weight, beta=tc_weight, gamma=dim_kl_weight,
                                estimator=estimator, dataset_size=dataset_size)}
    return compose(vae, _merge(terms, extra), num_samples=num_samples, cond_key=cond_key,
                   derived=neg_elbo_metric)


def factor_vae(vae: VAE, discriminator: Discriminator, *, gamma: Weight = 10.0,
               beta: Weight = 1.0, alpha: float = 1.0,
               optimizer: optax.GradientTransformation | None = None, seed: int = 0,
               num_samples: int = 1, cond_key: str | None = None,
               extra: Terms | None = None) -> Objective:
    """FactorVAE (Kim & Mnih, 2018, arXiv:1802.05983): ``alpha * recon + beta * kl + gamma * tc``.

    ``tc`` is the mean logit ``log D(z) / (1 - D(z))`` of a critic trained, one
    optimizer step per train step, to tell codes from their dimension-wise
    shuffle (:func:`~jvae.terms.total_correlation.discriminator_tc`; default
    optimizer: Adam at 1e-4, betas (0.5, 0.9), the paper's). The critic and its
    optimizer state live in the objective's state (checkpointed and resumed with
    the run). Reports ``neg_elbo``, ``recon``, ``kl``, ``tc`` and ``tc_d_loss``.

    Args:
      vae: the model.
      discriminator: the critic, e.g.
        :func:`~jvae.layers.latent_discriminator.mlp_discriminator`.
      gamma: weight of the total correlation (the paper's gamma).
      beta: weight of the KL (1: the paper's ELBO).
      alpha: weight of the reconstruction.
      optimizer: the critic's optimizer.
      seed: seed of the critic's initialization.
      num_samples: posterior samples per example.
      cond_key: batch entry the model is conditioned on, or None.
      extra: further terms.
    """
    terms = {**elbo_terms(beta=beta, alpha=alpha),
             "tc": (gamma, discriminator_tc(discriminator, vae.latent_shape,
                                            optimizer=optimizer, seed=seed))}
    return compose(vae, _merge(terms, extra), num_samples=num_samples, cond_key=cond_key,
                   derived=neg_elbo_metric)


def info_vae(vae: VAE, *, alpha: float = 0.0, lam: float = 1000.0, kernel: str = "imq",
             scale: float = 1.0, recon_weight: float = 1.0, num_samples: int = 1,
             cond_key: str | None = None, extra: Terms | None = None) -> Objective:
    """InfoVAE with the MMD divergence (Zhao et al., 2017, arXiv:1706.02262):

    ``recon + (1 - alpha) * kl + (alpha + lam - 1) * mmd``, ``mmd`` the unbiased
    ``MMD^2(q(z), p(z))`` between the batch's codes and prior draws
    (:func:`~jvae.terms.mmd.mmd_to_prior`). ``alpha`` and ``lam`` are the paper's;
    ``alpha = 0, lam = 1`` is the ELBO. Both weights must be >= 0. Reports
    ``neg_elbo = recon + kl`` (a bound on ``-log p(x)`` whatever the weights),
    ``mmd``.
    """
    kl_weight, mmd_weight = 1.0 - alpha, alpha + lam - 1.0
    if kl_weight < 0 or mmd_weight < 0:
        raise ValueError(f"InfoVAE needs alpha <= 1 and alpha + lambda >= 1 (weights 1 - alpha "
                         f"and alpha + lambda - 1 of KL and MMD), got alpha={alpha}, "
                         f"lambda={lam}")
    terms = {"recon": (recon_weight, reconstruction()), "kl": (kl_weight, kl_divergence()),
             "mmd": (mmd_weight, mmd_to_prior(kernel, scale))}
    return compose(vae, _merge(terms, extra), num_samples=num_samples, cond_key=cond_key,
                   derived=neg_elbo_metric)


def _deterministic(vae: VAE, family: str) -> None:
    if vae.posterior.name != "point":
        raise ValueError(f"{family} has a deterministic encoder and needs the point posterior, "
                         f"got {vae.posterior.name!r}")


def wae(vae: VAE, *, lam: float = 10.0, kernel: str = "imq", scale: float = 1.0,
        alpha: float = 1.0, cond_key: str | None = None,
        extra: Terms | None = None) -> Objective:
    """WAE-MMD (Tolstikhin et al., 2018, arXiv:1711.01558, Algorithm 2) with a
    deterministic encoder: ``alpha * recon + lam * mmd``.

    ``recon = -log p(x|z)`` is the cost ``c(x, G(z))`` (squared error for a
    Gaussian likelihood, cross-entropy for Bernoulli); ``mmd`` matches the
    aggregate of the codes to the prior (:func:`~jvae.terms.mmd.mmd_to_prior`;
    the paper: IMQ, ``lam = 10`` on MNIST). No ELBO: the evaluator reports no
    likelihood bound. Use it with :func:`~jvae.distributions.posteriors.point_posterior`.
    """
    _deterministic(vae, "WAE")
    terms = {"recon": (alpha, reconstruction()), "mmd": (lam, mmd_to_prior(kernel, scale))}
    return compose(vae, _merge(terms, extra), cond_key=cond_key)


def rae(vae: VAE, *, beta: float = 1.0, lam: float = 1e-3, regularizer: str = "l2",
        gp_probes: int = 1, alpha: float = 1.0, cond_key: str | None = None,
        extra: Terms | None = None) -> Objective:
    """RAE (Ghosh et al., 2020, arXiv:1903.12436):
    ``alpha * recon + beta * ||z||^2 / 2 + lam * reg``.

    ``reg`` is ``"l2"``, the decoder's weight decay, or ``"gp"``, the squared
    Frobenius norm of the decoder's Jacobian at the code
    (:mod:`jvae.terms.regularized`): Hutchinson's estimate over ``gp_probes``
    random probes per code, or exact with ``gp_probes=0``. Reports ``latent_norm`` and ``decoder_reg``.
    No ELBO: the evaluator reports no likelihood bound. Use it with
    :func:`~jvae.distributions.posteriors.point_posterior`.
    """
    _deterministic(vae, "RAE")
    terms = {"recon": (alpha, reconstruction()), "latent_norm": (beta, latent_norm()),
             "decoder_reg": (lam, rae_regularizer(regularizer, gp_probes))}
    return compose(vae, _merge(terms, extra), cond_key=cond_key)
