"""Loss terms, the pieces objectives are composed of (:mod:`jvae.objectives` holds the families).

* :mod:`~jvae.terms.composition`: the shared forward pass, :func:`compose` of
  weighted terms, weight schedules.
* :mod:`~jvae.terms.standard`: reconstruction, KL, the IWAE bound, SSIM,
  code sparsity, decoder L2, the ELBO's terms.
* :mod:`~jvae.terms.masked`: batch reductions that skip padded rows, and the
  mask of a padded clip's real samples.
* :mod:`~jvae.terms.similarity`: differentiable SSIM.
* :mod:`~jvae.terms.spectral`: multi-resolution (mel) STFT losses and audio
  metrics (LSD, SNR) for 1-D signals.
* :mod:`~jvae.terms.vq`: the VQ codebook and commitment losses.
* :mod:`~jvae.terms.perceptual`: a learned image distance (LPIPS) as a loss.
* :mod:`~jvae.terms.adversarial`: latent diffusion's PatchGAN term, its
  discriminator trained inside the objective, with the adaptive weight.
* :mod:`~jvae.terms.total_correlation`: beta-TCVAE's batch estimates of the KL's
  mutual information, total correlation and dimension-wise KL, and FactorVAE's
  total-correlation critic trained inside the objective.
* :mod:`~jvae.terms.mmd`: the unbiased MMD (IMQ or RBF kernel) between codes and
  prior draws (InfoVAE, WAE).
* :mod:`~jvae.terms.regularized`: RAE's code norm and decoder regularizers (L2,
  gradient penalty).
* :mod:`~jvae.terms.importance`: MIWAE's grouped importance-weighted bound and
  PIWAE's split gradient (IWAE for the decoder, MIWAE for the encoder).
"""

from jvae.terms.adversarial import (
    GAN_LOSSES,
    AdversarialState,
    adaptive_weight,
    adversarial_loss,
    discriminator_optimizer,
    last_layer_index,
    redecode,
)
from jvae.terms.composition import (
    Forward,
    Term,
    Weight,
    compose,
    forward,
    linear_warmup,
    shared_value,
    stateless,
)
from jvae.terms.importance import (
    INFERENCE_PARAMS,
    group_log_weights,
    miwae_bound,
    split_gradient,
)
from jvae.terms.masked import (
    masked_mean,
    masked_sums,
    valid_mask,
)
from jvae.terms.mmd import (
    MMD_KERNELS,
    imq_kernel,
    kernel_matrix,
    mmd_to_prior,
    mmd_u,
    rbf_kernel,
)
from jvae.terms.perceptual import (
    perceptual_loss,
)
from jvae.terms.regularized import (
    JVP_CHUNK,
    RAE_REGULARIZERS,
    decoder_gradient_penalty,
    decoder_jacobian_sq_norm,
    decoder_jacobian_sq_norm_estimate,
    latent_norm,
    rae_regularizer,
)
from jvae.terms.similarity import (
    gaussian_blur,
    gaussian_window,
    ssim,
)
from jvae.terms.spectral import (
    DEFAULT_RESOLUTIONS,
    SHORT_CLIP_RESOLUTIONS,
    MelScale,
    Resolution,
    audio_metric_terms,
    audio_metrics,
    hann_window,
    log_spectral_distance,
    mel_filterbank,
    mel_stft,
    multi_resolution_stft,
    multi_resolution_stft_distance,
    snr_db,
    stft_distance,
    stft_magnitude,
)
from jvae.terms.standard import (
    decoder_l2,
    elbo_terms,
    iwae_bound,
    kl_divergence,
    latent_sparsity,
    log_mean_exp,
    neg_elbo_metric,
    reconstruction,
    ssim_loss,
)
from jvae.terms.total_correlation import (
    FACTORVAE_LR,
    TC_ESTIMATORS,
    aggregate_log_densities,
    batch_dimensionwise_kl,
    batch_mutual_information,
    batch_total_correlation,
    discriminator_tc,
    log_importance_weights,
    permute_dims,
    tc_decomposition,
)
from jvae.terms.vq import (
    vq_codebook_loss,
    vq_commitment_loss,
)

__all__ = [
    "AdversarialState",
    "DEFAULT_RESOLUTIONS",
    "FACTORVAE_LR",
    "Forward",
    "GAN_LOSSES",
    "INFERENCE_PARAMS",
    "JVP_CHUNK",
    "MMD_KERNELS",
    "MelScale",
    "RAE_REGULARIZERS",
    "Resolution",
    "SHORT_CLIP_RESOLUTIONS",
    "TC_ESTIMATORS",
    "Term",
    "Weight",
    "adaptive_weight",
    "adversarial_loss",
    "aggregate_log_densities",
    "audio_metric_terms",
    "audio_metrics",
    "batch_dimensionwise_kl",
    "batch_mutual_information",
    "batch_total_correlation",
    "compose",
    "decoder_gradient_penalty",
    "decoder_jacobian_sq_norm",
    "decoder_jacobian_sq_norm_estimate",
    "decoder_l2",
    "discriminator_optimizer",
    "discriminator_tc",
    "elbo_terms",
    "forward",
    "gaussian_blur",
    "gaussian_window",
    "group_log_weights",
    "hann_window",
    "imq_kernel",
    "iwae_bound",
    "kernel_matrix",
    "kl_divergence",
    "last_layer_index",
    "latent_norm",
    "latent_sparsity",
    "linear_warmup",
    "log_importance_weights",
    "log_mean_exp",
    "log_spectral_distance",
    "masked_mean",
    "masked_sums",
    "mel_filterbank",
    "mel_stft",
    "miwae_bound",
    "mmd_to_prior",
    "mmd_u",
    "multi_resolution_stft",
    "multi_resolution_stft_distance",
    "neg_elbo_metric",
    "perceptual_loss",
    "permute_dims",
    "rae_regularizer",
    "rbf_kernel",
    "reconstruction",
    "redecode",
    "shared_value",
    "snr_db",
    "split_gradient",
    "ssim",
    "ssim_loss",
    "stateless",
    "stft_distance",
    "stft_magnitude",
    "tc_decomposition",
    "valid_mask",
    "vq_codebook_loss",
    "vq_commitment_loss",
]
