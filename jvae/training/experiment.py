"""One builder from settings to a model: ``build(cfg, data_spec) -> Experiment``.

In the manner of the Flax examples' ``create_model`` over named variants, every
choice a run's settings make is looked up in one registry here:

==================  =====================================================
registry            what a name selects
==================  =====================================================
:data:`MODELS`      the family: posterior, latent shape, objective, prior
:data:`POSTERIORS`  the posterior distribution of ``vae``/``cvae``/``iwae``
:data:`LIKELIHOODS` the observation model p(x|z)
:data:`NETS`        the encoder/decoder pair
:data:`PLACEMENTS`  where the training split lives (resolved by
                    :func:`jvae.training.program.resolve_placement`)
:data:`FLOW_COUPLINGS`, :data:`DECODER_MODES`, :data:`RNN_CELLS`,
:data:`ACTIVATIONS`, :data:`DIRICHLET_REPARAMS`, :data:`COMPUTE_DTYPES`
                    the named options of those parts (defined beside them)
==================  =====================================================

:class:`~jvae.app.config.Config` validation and the command line's ``choices``
read these registries, so adding a family, a likelihood or a net is one entry
in one place. Settings are read by attribute, so any object with the
:class:`~jvae.app.config.Config` fields works (this module does not import it).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jvae import objectives
from jvae.base import VAE, Batch, ConfigError, Likelihood, Objective, Posterior, Prior
from jvae.distributions.flows import COUPLINGS as FLOW_COUPLINGS
from jvae.distributions.flows import flow_posterior
from jvae.distributions.likelihoods import bernoulli, discretized_logistic_mixture, gaussian, laplace
from jvae.distributions.posteriors import DIRICHLET_REPARAMS, dirichlet_posterior, normal_posterior, point_posterior
from jvae.distributions.priors import hierarchical_prior, init_prior_from_data, vamp_prior
from jvae.distributions.vmf import vmf_posterior
from jvae.distributions.vq import vq_posterior
from jvae.layers.audio import make_audio_nets
from jvae.layers.builtin import make_nets
from jvae.layers.heads import ACTIVATIONS
from jvae.layers.latent_discriminator import mlp_discriminator
from jvae.layers.patchgan import output_size, patchgan_discriminator
from jvae.layers.sequence import DECODER_MODES, RNN_CELLS, make_rnn_nets
from jvae.layers.spec_nets import make_spec_nets
from jvae.model import COMPUTE_DTYPES, make_vae, mixed_precision
from jvae.terms.adversarial import adversarial_loss, discriminator_optimizer
from jvae.terms.composition import linear_warmup
from jvae.terms.perceptual import perceptual_loss
from jvae.terms.spectral import audio_metric_terms, mel_stft, multi_resolution_stft
from jvae.terms.standard import decoder_l2, latent_sparsity, reconstruction, ssim_loss
from jvae.training.defaults import AUTO, default_fft_sizes, is_audio_shape, model_defaults, with_defaults
from jvae.training.state import TrainState, create_train_state, make_optimizer

__all__ = ["DataSpec", "Experiment", "Family", "build", "init_state", "example_batch",
           "MODELS", "POSTERIORS", "LIKELIHOODS", "NETS", "FLOW_COUPLINGS", "DECODER_MODES",
           "RNN_CELLS", "ACTIVATIONS", "DIRICHLET_REPARAMS", "COMPUTE_DTYPES", "COND_KEY",
           "PLACEMENTS", "AUTO"]

# Batch entry holding the one-hot labels a conditional family is fed.
COND_KEY = "cond"

# Where the training split lives: on the devices, in host memory, streamed from
# disk, or chosen from its size and the model (the train program resolves it).
PLACEMENTS = ("auto", "device", "host", "stream")


class DataSpec(NamedTuple):
    """What a model must know about its data.

    Attributes:
      shape: per-example data shape, e.g. ``(28, 28, 1)``; ``(T, C)`` for audio.
      num_classes: number of labels (for conditional families), or None.
      sample_rate: audio sample rate in Hz, or None.
      num_examples: size of the training split (the ``N`` of beta-TCVAE's
        estimators), or None where the data was not loaded (a run restored for
        files only): those estimators then treat each batch as the data set.
    """

    shape: tuple[int, ...]
    num_classes: int | None = None
    sample_rate: int | None = None
    num_examples: int | None = None

    @classmethod
    def of(cls, split: dict[str, np.ndarray], sample_rate: int | None = None) -> DataSpec:
        """The spec of a loaded split (``"image"`` and optional integer ``"label"``)."""
        labels = split.get("label")
        num_classes = None if labels is None or not len(labels) else int(np.max(labels)) + 1
        return cls(tuple(int(d) for d in split["image"].shape[1:]), num_classes, sample_rate,
                   int(split["image"].shape[0]))


class Experiment(NamedTuple):
    """Everything a run builds from its settings, as pure functions and pytrees.

    Attributes:
      vae: the model (:func:`~jvae.model.make_vae`, in the configured compute dtype).
      objective: the family's training objective.
      optimizer: the optax optimizer.
      cond_key: batch entry the model is conditioned on, or None.
      data_spec: the data the model was built for.
    """

    vae: VAE
    objective: Objective
    optimizer: optax.GradientTransformation
    cond_key: str | None
    data_spec: DataSpec


class Family(NamedTuple):
    """A model family of :mod:`jvae.objectives` as the builder sees it.

    Attributes:
      posterior: ``cfg -> Posterior``.
      latent_shape: ``cfg -> per-example latent shape`` (before a spatial spec
        encoder overrides it).
      objective: ``(cfg, vae, cond_key, extra_terms) -> Objective``.
      conditional: whether encoder and decoder are fed the one-hot label.
      sized: whether ``objective`` also takes ``num_examples=``, the training
        split's size (:attr:`DataSpec.num_examples`).
      prior: ``(cfg, data_spec) -> Prior | None``, a learned prior
        (:class:`~jvae.base.Prior`), or None: the posterior family's fixed one.
    """

    posterior: Callable[[Any], Posterior]
    latent_shape: Callable[[Any], tuple[int, ...]]
    objective: Callable[[Any, VAE, str | None, dict], Objective]
    conditional: bool = False
    sized: bool = False
    prior: Callable[[Any, DataSpec], Prior | None] | None = None


POSTERIORS: dict[str, Callable[[Any], Posterior]] = {
    "normal": lambda cfg: normal_posterior(scale=cfg.posterior_scale),
    "dirichlet": lambda cfg: dirichlet_posterior(cfg.dirichlet_prior,
                                                 reparam=cfg.dirichlet_reparam),
}

LIKELIHOODS: dict[str, Callable[[Any], Likelihood]] = {
    "bernoulli": lambda cfg: bernoulli(),
    "gaussian": lambda cfg: gaussian(cfg.gaussian_scale),
    "gaussian_learned": lambda cfg: gaussian(learn_scale=True),
    "laplace": lambda cfg: laplace(cfg.laplace_scale),
    "logistic_mixture": lambda cfg: discretized_logistic_mixture(cfg.logistic_components),
}


def _distribution(cfg) -> Posterior:
    """The ``posterior`` setting, wrapped in a flow when ``flow_layers > 0``."""
    base = POSTERIORS[cfg.posterior](cfg)
    if not cfg.flow_layers:
        return base
    return flow_posterior(base, num_layers=cfg.flow_layers, coupling=cfg.flow_coupling,
                          hidden=cfg.flow_hidden, num_bins=cfg.flow_bins,
                          context_dim=cfg.flow_context)


def _kl_weight(cfg):
    return linear_warmup(cfg.beta, cfg.kl_warmup_steps) if cfg.kl_warmup_steps else cfg.beta


def _flat_latent(cfg) -> tuple[int, ...]:
    return (cfg.latent_dim,)


def _beta_vae(cfg, vae, cond_key, extra):
    return objectives.beta_vae(vae, beta=_kl_weight(cfg), alpha=cfg.alpha, num_samples=cfg.num_samples,
                        cond_key=cond_key, extra=extra)


def _stochastic_layers(cfg, data_spec) -> Prior | None:
    """``stochastic_layers=2``: a second Gaussian layer h2 above z = h1 (Burda et al., 2015)."""
    if cfg.stochastic_layers == 1:
        return None
    return hierarchical_prior(cfg.top_latent_dim, cfg.top_hidden, ACTIVATIONS[cfg.activation])


def _vamp(cfg, data_spec) -> Prior:
    """The VampPrior of ``vamp_components`` pseudo-inputs in the data's range."""
    bounds = (-1.0, 1.0) if is_audio_shape(data_spec.shape) else (0.0, 1.0)
    return vamp_prior(cfg.vamp_components, init=cfg.vamp_init, bounds=bounds)


def _btcvae(cfg, vae, cond_key, extra, *, num_examples=None):
    return objectives.beta_tcvae(
        vae, mi_weight=cfg.tcvae_alpha, tc_weight=cfg.tcvae_beta, dim_kl_weight=cfg.tcvae_gamma,
        estimator=cfg.tcvae_estimator, dataset_size=num_examples, alpha=cfg.alpha,
        num_samples=cfg.num_samples, cond_key=cond_key, extra=extra)


def _factorvae(cfg, vae, cond_key, extra):
    return objectives.factor_vae(
        vae, mlp_discriminator(cfg.factorvae_hidden), gamma=cfg.factorvae_gamma,
        beta=_kl_weight(cfg), alpha=cfg.alpha, optimizer=discriminator_optimizer(cfg.factorvae_lr),
        seed=cfg.seed, num_samples=cfg.num_samples, cond_key=cond_key, extra=extra)


def _infovae(cfg, vae, cond_key, extra):
    return objectives.info_vae(
        vae, alpha=cfg.infovae_alpha, lam=cfg.infovae_lambda, kernel=cfg.mmd_kernel,
        scale=cfg.mmd_scale, recon_weight=cfg.alpha, num_samples=cfg.num_samples,
        cond_key=cond_key, extra=extra)


def _wae(cfg, vae, cond_key, extra):
    return objectives.wae(vae, lam=cfg.wae_lambda, kernel=cfg.mmd_kernel, scale=cfg.mmd_scale,
                          alpha=cfg.alpha, cond_key=cond_key, extra=extra)


def _rae(cfg, vae, cond_key, extra):
    return objectives.rae(vae, beta=cfg.rae_beta, lam=cfg.rae_lambda,
                          regularizer=cfg.rae_regularizer, gp_probes=cfg.rae_gp_probes,
                          alpha=cfg.alpha, cond_key=cond_key,
                          extra=extra)


MODELS: dict[str, Family] = {
    "vae": Family(_distribution, _flat_latent, _beta_vae, prior=_stochastic_layers),
    "cvae": Family(_distribution, _flat_latent,
                   lambda cfg, vae, cond_key, extra: objectives.cvae(
                       vae, cond_key=cond_key, prior_weight=cfg.cvae_prior_weight,
                       beta=_kl_weight(cfg), alpha=cfg.alpha, num_samples=cfg.num_samples,
                       extra=extra),
                   conditional=True),
    "iwae": Family(_distribution, _flat_latent,
                   lambda cfg, vae, cond_key, extra: objectives.iwae(
                       vae, num_samples=cfg.num_samples, cond_key=cond_key, extra=extra),
                   prior=_stochastic_layers),
    "vamp": Family(_distribution, _flat_latent, _beta_vae, prior=_vamp),
    "btcvae": Family(_distribution, _flat_latent, _btcvae, sized=True),
    "factorvae": Family(_distribution, _flat_latent, _factorvae),
    "infovae": Family(_distribution, _flat_latent, _infovae),
    "wae": Family(lambda cfg: point_posterior(), _flat_latent, _wae),
    "rae": Family(lambda cfg: point_posterior(), _flat_latent, _rae),
    "miwae": Family(_distribution, _flat_latent,
                    lambda cfg, vae, cond_key, extra: objectives.miwae(
                        vae, num_samples=cfg.num_samples, groups=cfg.iw_groups,
                        cond_key=cond_key, extra=extra)),
    "piwae": Family(_distribution, _flat_latent,
                    lambda cfg, vae, cond_key, extra: objectives.piwae(
                        vae, num_samples=cfg.num_samples, groups=cfg.iw_groups,
                        cond_key=cond_key, extra=extra)),
    "ciwae": Family(_distribution, _flat_latent,
                    lambda cfg, vae, cond_key, extra: objectives.ciwae(
                        vae, num_samples=cfg.num_samples, beta=cfg.ciwae_beta,
                        cond_key=cond_key, extra=extra)),
    "svae": Family(lambda cfg: vmf_posterior(), _flat_latent, _beta_vae),
    "ae": Family(lambda cfg: point_posterior(), _flat_latent,
                 lambda cfg, vae, cond_key, extra: objectives.autoencoder(
                     vae, alpha=cfg.alpha, cond_key=cond_key, extra=extra)),
    "vq": Family(lambda cfg: vq_posterior(cfg.vq_codes),
                 lambda cfg: (cfg.latent_dim // cfg.vq_code_dim, cfg.vq_code_dim),
                 lambda cfg, vae, cond_key, extra: objectives.vq_vae(
                     vae, num_codes=cfg.vq_codes, commitment=cfg.vq_commitment,
                     alpha=cfg.alpha, cond_key=cond_key, extra=extra)),
}

# (cfg, posterior, likelihood, latent_shape, data_shape) -> (encoder, decoder, latent_shape)
NetBuilder = Callable[[Any, Posterior, Likelihood, tuple, tuple], tuple[Any, Any, tuple]]


def _builtin(kind: str) -> NetBuilder:
    def build_nets(cfg, posterior, likelihood, latent_shape, data_shape):
        encoder, decoder = make_nets(kind, posterior=posterior, likelihood=likelihood,
                                     latent_shape=latent_shape, data_shape=data_shape,
                                     activation=cfg.activation, hidden=cfg.hidden)
        return encoder, decoder, latent_shape
    return build_nets


def _spec(cfg, posterior, likelihood, latent_shape, data_shape):
    return make_spec_nets(cfg.encoder_spec, cfg.decoder_spec, posterior=posterior,
                          likelihood=likelihood, data_shape=data_shape, latent_shape=latent_shape)


def _rnn(cfg, posterior, likelihood, latent_shape, data_shape):
    encoder, decoder = make_rnn_nets(posterior=posterior, likelihood=likelihood,
                                     latent_shape=latent_shape, data_shape=data_shape,
                                     cell=cfg.rnn_cell, hidden=cfg.rnn_hidden,
                                     mode=cfg.decoder_mode)
    return encoder, decoder, latent_shape


def _audio(cfg, posterior, likelihood, latent_shape, data_shape):
    return make_audio_nets(posterior=posterior, likelihood=likelihood, data_shape=data_shape,
                           latent_channels=cfg.latent_dim)


NETS: dict[str, NetBuilder] = {"mlp": _builtin("mlp"), "conv": _builtin("conv"),
                               "audio": _audio, "spec": _spec, "rnn": _rnn}


def _resolutions(fft_sizes) -> tuple[tuple[int, int, int], ...]:
    """``(fft, hop, window)`` of each FFT size: hop FFT/4, a full window."""
    return tuple((n, n // 4, n) for n in fft_sizes)


def _extra_terms(cfg, data_spec: DataSpec) -> dict:
    """The switchable terms a config turns on (each off at weight 0); 1-D data also
    reports its audio metrics (weight 0: measured, not optimized)."""
    extra = {}
    if is_audio_shape(data_spec.shape):
        resolutions = _resolutions(cfg.stft_fft_sizes
                                   or default_fft_sizes(data_spec.sample_rate))
        if cfg.stft_weight:
            extra["stft"] = (cfg.stft_weight, multi_resolution_stft(resolutions))
        if cfg.mel_weight:
            extra["mel"] = (cfg.mel_weight, mel_stft(data_spec.sample_rate or 8_000,
                                                     resolutions=resolutions))
        # The same resolutions as the loss: "mrstft" is the distance it lowers.
        extra.update(audio_metric_terms(resolutions))
    elif cfg.stft_weight or cfg.mel_weight:
        raise ConfigError(f"stft_weight and mel_weight apply to 1-D data (T, C) such as audio; "
                          f"this data has shape {data_spec.shape} (set them to 0)")
    if cfg.ssim_weight:
        extra["ssim"] = (cfg.ssim_weight, ssim_loss())
    if cfg.lpips_weight or cfg.adv_weight:
        if len(data_spec.shape) != 3:
            raise ConfigError(f"lpips_weight and adv_weight apply to images (H, W, C); this data "
                              f"has shape {data_spec.shape} (set them to 0)")
    if cfg.lpips_weight:
        extra["lpips"] = (cfg.lpips_weight, perceptual_loss(_lpips_distance()))
    if cfg.adv_weight:
        extra["adv"] = (cfg.adv_weight, _adversarial_term(cfg, data_spec, extra))
    if cfg.sparsity_weight:
        extra["sparsity"] = (cfg.sparsity_weight, latent_sparsity())
    if cfg.decoder_l2:
        extra["decoder_l2"] = (cfg.decoder_l2, decoder_l2())
    return extra


def _lpips_distance():
    """LPIPS (VGG16) with the weights of the local store; a missing file raises its fix."""
    from jvae.metrics.lpips import lpips_fn
    from jvae.metrics.quality import as_rgb
    from jvae.metrics.weights import load
    distance = lpips_fn(load("lpips"), normalize=True)
    return lambda x, y: distance(as_rgb(x), as_rgb(y))


def _adversarial_term(cfg, data_spec: DataSpec, extra: dict):
    """The PatchGAN term, balanced against the reconstruction (and LPIPS) it joins."""
    balanced = [(cfg.alpha, reconstruction())]
    if "lpips" in extra:
        balanced.append(extra["lpips"])

    def reference(fwd):
        return sum(w * term.apply(fwd, ())[0] for w, term in balanced)

    small = min(data_spec.shape[:2])
    if output_size(small, cfg.adv_layers) < 1:
        fits = max((n for n in range(1, cfg.adv_layers) if output_size(small, n) >= 1), default=0)
        fix = f"--adv-layers {fits}" if fits else "images of at least 24 pixels a side"
        raise ConfigError(f"adv_layers={cfg.adv_layers} leaves no patch of a {small}-pixel image "
                          f"side to judge; use {fix}")
    example = jnp.zeros((1, *data_spec.shape), jnp.float32)
    return adversarial_loss(patchgan_discriminator(cfg.adv_layers, cfg.adv_channels), example, reference=reference,
                       start=cfg.adv_start, loss=cfg.adv_loss, adaptive=cfg.adv_adaptive,
                       optimizer=discriminator_optimizer(cfg.adv_lr or cfg.lr), seed=cfg.seed)


def build(cfg, data_spec: DataSpec) -> Experiment:
    """The model, objective and optimizer a config describes, for ``data_spec``'s data.

    Settings left to the data (``auto``, see :mod:`jvae.training.defaults`) are
    chosen from ``data_spec`` first.

    Args:
      cfg: a :class:`~jvae.app.config.Config` (any object with its fields).
      data_spec: the data's per-example shape, label count and sample rate.

    Returns:
      An :class:`Experiment`.

    Raises:
      ConfigError: settings that do not fit the data (a spec's shapes, a
        conditional family without labels, conv nets on flat data).
    """
    cfg = with_defaults(cfg, model_defaults(cfg, data_spec.shape, data_spec.sample_rate))
    family = MODELS[cfg.model]
    cond_key = COND_KEY if family.conditional else None
    if cond_key and not data_spec.num_classes:
        raise ConfigError(f"model={cfg.model} is conditioned on labels, but the data has none; "
                          "use --model vae or a labelled dataset")
    posterior = family.posterior(cfg)
    likelihood = LIKELIHOODS[cfg.likelihood](cfg)
    try:
        encoder, decoder, latent_shape = NETS[cfg.net](cfg, posterior, likelihood,
                                                       family.latent_shape(cfg),
                                                       tuple(data_spec.shape))
    except ConfigError:
        raise
    except ValueError as e:  # a spec or net that does not fit the data is a settings mistake
        raise ConfigError(str(e)) from None
    prior = None if family.prior is None else family.prior(cfg, data_spec)
    vae = mixed_precision(make_vae(encoder, decoder, posterior, likelihood, latent_shape, prior),
                          cfg.compute_dtype)
    sized = {"num_examples": data_spec.num_examples} if family.sized else {}
    objective = family.objective(cfg, vae, cond_key, _extra_terms(cfg, data_spec), **sized)
    return Experiment(vae, objective, make_optimizer(cfg.lr, ema_decay=cfg.ema_decay), cond_key,
                      data_spec)


def example_batch(experiment: Experiment, batch_size: int) -> Batch:
    """A zero batch of the experiment's shapes (for initialization and shape-only compiles)."""
    batch = {"image": jnp.zeros((batch_size, *experiment.data_spec.shape), jnp.float32)}
    if experiment.cond_key:
        batch[experiment.cond_key] = jnp.zeros((batch_size, experiment.data_spec.num_classes),
                                               jnp.float32)
    return batch


def init_state(experiment: Experiment, key: jax.Array, example: Batch, *,
               images: Any = None) -> TrainState:
    """A fresh :class:`~jvae.train_state.TrainState` for ``experiment``.

    Args:
      experiment: from :func:`build`.
      key: typed PRNG key of the run.
      example: a batch with the data's shapes (see :func:`example_batch`).
      images: the training split's inputs, for a prior initialized from data
        (``vamp_init=data``: pseudo-inputs are training examples chosen by
        ``key``, so by the run's seed); None or any other model: unused.
    """
    vae, params = experiment.vae, None
    if images is not None and vae.prior is not None and vae.prior.init_from_data is not None:
        # create_train_state's own split: the same network initialization either way.
        init_key = jax.random.split(key)[0]
        cond = None if experiment.cond_key is None else example[experiment.cond_key]
        params = init_prior_from_data(vae, vae.init(init_key, example["image"], cond),
                                      jax.random.fold_in(init_key, 3), images)
    return create_train_state(vae, experiment.objective, experiment.optimizer, key,
                              example, cond_key=experiment.cond_key, params=params)
