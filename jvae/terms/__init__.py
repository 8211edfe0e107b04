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
"""

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
from jvae.terms.similarity import (
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
    "DEFAULT_RESOLUTIONS",
    "Forward",
    "MelScale",
    "Resolution",
    "SHORT_CLIP_RESOLUTIONS",
    "Term",
    "Weight",
    "audio_metric_terms",
    "audio_metrics",
    "compose",
    "decoder_l2",
    "elbo_terms",
    "forward",
    "gaussian_window",
    "hann_window",
    "iwae_bound",
    "kl_divergence",
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
    "reconstruction",
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
