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
    stateless,
)
from jvae.terms.masked import (
    masked_mean,
    masked_sums,
    valid_mask,
)
from jvae.terms.perceptual import (
    perceptual_loss,
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
from jvae.terms.vq import (
    vq_codebook_loss,
    vq_commitment_loss,
)

__all__ = [
    "AdversarialState",
    "DEFAULT_RESOLUTIONS",
    "Forward",
    "GAN_LOSSES",
    "MelScale",
    "Resolution",
    "SHORT_CLIP_RESOLUTIONS",
    "Term",
    "Weight",
    "adaptive_weight",
    "adversarial_loss",
    "audio_metric_terms",
    "audio_metrics",
    "compose",
    "decoder_l2",
    "discriminator_optimizer",
    "elbo_terms",
    "forward",
    "gaussian_blur",
    "gaussian_window",
    "hann_window",
    "iwae_bound",
    "kl_divergence",
    "last_layer_index",
    "latent_sparsity",
    "linear_warmup",
    "log_mean_exp",
    "log_spectral_distance",
    "masked_mean",
    "masked_sums",
    "mel_filterbank",
    "mel_stft",
    "multi_resolution_stft",
    "multi_resolution_stft_distance",
    "neg_elbo_metric",
    "perceptual_loss",
    "reconstruction",
    "redecode",
    "snr_db",
    "ssim",
    "ssim_loss",
    "stateless",
    "stft_distance",
    "stft_magnitude",
    "valid_mask",
    "vq_codebook_loss",
    "vq_commitment_loss",
]
