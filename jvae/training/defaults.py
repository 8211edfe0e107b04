"""Settings the data decides: what an unset (``auto`` or 0) setting becomes.

``jvae train --data-source DIR`` with no other flag must give a useful model
whatever the folder holds, so a few settings default to *follow the data*
instead of to one fixed value:

=================  ==========================  =================================
setting            images (and other data)     audio (1-D data ``(T, C)``)
=================  ==========================  =================================
``net``            ``mlp``                     ``audio`` (residual dilated 1-D
                                               convolutions, a latent sequence)
``likelihood``     ``bernoulli``               ``gaussian`` (fits [-1, 1])
``gaussian_scale`` 1                           :data:`AUDIO_GAUSSIAN_SCALE`
``stft_weight``    0                           :data:`AUDIO_STFT_WEIGHT`
``stft_fft_sizes`` (unused)                    16, 32, 64, 128 ms at the rate
``batch_size``     128                         :data:`AUDIO_BATCH_SIZE`
``epochs``         10, or enough for about     the same
                   1,500 steps for a small split
                   (:func:`default_epochs`)
=================  ==========================  =================================

A batch larger than the training split is cut to the split (rounded down to
the device count). :func:`model_defaults` is what
:func:`~jvae.training.experiment.build` applies, so a library user's
``Config()`` builds the same model as the command line;
:func:`run_defaults` adds what needs the loaded split (its size, the devices).
The command line prints every chosen value once and saves it in
``config.json``, so a resumed run and every other mode read the same settings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["AUTO", "AUDIO_BATCH_SIZE", "AUDIO_GAUSSIAN_SCALE", "AUDIO_STFT_WEIGHT",
           "BATCH_SIZE", "EPOCHS", "MIN_STEPS", "MAX_AUTO_EPOCHS", "STFT_WINDOWS_MS",
           "is_audio_shape", "model_defaults", "run_defaults", "default_epochs",
           "default_fft_sizes", "with_defaults", "DATA_CHOSEN"]

AUTO = "auto"

# The settings whose unset value means "the data decides" (the table above).
DATA_CHOSEN = ("net", "likelihood", "gaussian_scale", "stft_weight", "stft_fft_sizes",
               "batch_size", "epochs")

# A clip's batch costs far more than an image's; smaller batches give the
# audio net more updates in the same minutes.
AUDIO_BATCH_SIZE = 32
BATCH_SIZE = 128
EPOCHS = 10
# A split so small that 10 epochs are few steps trains for more epochs: about
# this many steps in all, but not more than MAX_AUTO_EPOCHS epochs (the
# spoken-digit benchmark's 2,000 clips: 25 epochs, about 15 minutes on 2 cores).
MIN_STEPS = 1_500
MAX_AUTO_EPOCHS = 300

# Waveforms in [-1, 1]: a Gaussian of this scale keeps the likelihood term a
# true log-density in nats whose gradient does not drown the spectral term
# (the spectral distance is what makes reconstructions intelligible).
AUDIO_GAUSSIAN_SCALE = 0.1
# Weight of the multi-resolution STFT distance for audio. The distance is a
# mean over frames and bins (order 1, falling to about 2 as a model learns)
# while the ELBO sums nats over every sample and latent element (a KL of
# thousands of nats for 64 frames x 20 channels): at 1e5 the KL is a few
# percent of the loss, enough to shape the latent space without starving the
# reconstruction (beta = 1 keeps neg_elbo the bound it reports).
AUDIO_STFT_WEIGHT = 1e5
# Window lengths of the spectral terms' resolutions: from transients (16 ms)
# to pitch harmonics (128 ms).
STFT_WINDOWS_MS = (16, 32, 64, 128)


def is_audio_shape(shape: tuple[int, ...]) -> bool:
    """Per-example data of shape ``(T, C)``: a (possibly multi-channel) signal."""
    return len(shape) == 2


def default_fft_sizes(sample_rate: int | None) -> tuple[int, ...]:
    """Powers of two nearest to :data:`STFT_WINDOWS_MS` at ``sample_rate`` (8 kHz if unknown)."""
    rate = sample_rate or 8_000
    return tuple(2 ** round(math.log2(ms * rate / 1000)) for ms in STFT_WINDOWS_MS)


def model_defaults(cfg: Any, data_shape: tuple[int, ...], sample_rate: int | None = None
                   ) -> dict[str, Any]:
    """The model and objective settings the data chooses, for the settings left unset.

    Args:
      cfg: a :class:`~jvae.app.config.Config` (any object with its fields).
      data_shape: per-example data shape.
      sample_rate: audio sample rate (chooses the spectral terms' FFT sizes).

    Returns:
      ``{setting: value}`` for each unset setting; empty when all are set.
    """
    audio = is_audio_shape(tuple(data_shape))
    chosen: dict[str, Any] = {}
    if cfg.net == AUTO:
        chosen["net"] = "audio" if audio else "mlp"
    if cfg.likelihood == AUTO:
        chosen["likelihood"] = "gaussian" if audio else "bernoulli"
    if not cfg.gaussian_scale:
        chosen["gaussian_scale"] = AUDIO_GAUSSIAN_SCALE if audio else 1.0
    if cfg.stft_weight is None:
        chosen["stft_weight"] = AUDIO_STFT_WEIGHT if audio else 0.0
    spectral = (chosen.get("stft_weight", cfg.stft_weight) or cfg.mel_weight)
    if spectral and not cfg.stft_fft_sizes:
        chosen["stft_fft_sizes"] = default_fft_sizes(sample_rate)
    return chosen


def default_epochs(steps_per_epoch: int) -> int:
    """:data:`EPOCHS`, or for a small split enough epochs for about :data:`MIN_STEPS` steps
    (at most :data:`MAX_AUTO_EPOCHS`)."""
    if steps_per_epoch * EPOCHS >= MIN_STEPS:
        return EPOCHS
    return min(MAX_AUTO_EPOCHS, math.ceil(MIN_STEPS / max(steps_per_epoch, 1)))


def run_defaults(cfg: Any, data_shape: tuple[int, ...], num_train: int, num_devices: int = 1
                 ) -> tuple[dict[str, Any], str | None]:
    """The batch size and epochs for a training split of ``num_train`` examples.

    Args:
      cfg: the settings (``batch_size`` and ``epochs`` of 0 are unset).
      data_shape: per-example data shape.
      num_train: examples in the training split.
      num_devices: devices the batch is split over (a batch is a multiple of it).

    Returns:
      ``(chosen, notice)``: the settings chosen, and a one-line notice when a
      batch larger than the split was cut to it (None otherwise).
    """
    chosen: dict[str, Any] = {}
    notice = None
    batch = cfg.batch_size or (AUDIO_BATCH_SIZE if is_audio_shape(tuple(data_shape))
                               else BATCH_SIZE)
    if batch > num_train:
        cut = num_train - num_train % num_devices
        if cfg.batch_size:
            notice = (f"batch_size={cfg.batch_size} is larger than the {num_train} training "
                      f"examples; using batch_size={cut}")
        batch = cut
    if batch != cfg.batch_size:
        chosen["batch_size"] = batch
    if not cfg.epochs and batch > 0:
        chosen["epochs"] = default_epochs(num_train // batch)
    return chosen, notice


def with_defaults(cfg: Any, chosen: dict[str, Any]) -> Any:
    """``cfg`` with the chosen settings filled in (a frozen dataclass is replaced)."""
    return dataclasses.replace(cfg, **chosen) if chosen else cfg
