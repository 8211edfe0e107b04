"""What a run shows of its model: PNG image grids, log-mel spectrograms, and each
epoch's samples and reconstructions.

:func:`image_grid` tiles images; :func:`save_epoch_images` writes an epoch's
``images/samples_epochNNN.png`` and ``reconstructions_epochNNN.png`` (originals
and reconstructions in alternating rows), :func:`save_epoch_audio` its
``audio/`` clips, waveform plot and spectrogram plot for audio data.
:func:`log_mel_spectrogram` and :func:`spectrogram_png` draw clips as log-mel
images (no plotting library) for those files, the live page and TensorBoard.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

__all__ = ["image_grid", "save_image_grid", "grid_png", "sample_condition", "save_epoch_images",
           "save_epoch_audio", "AUDIO_CLIPS", "stft_sizes", "log_mel_spectrogram",
           "spectrogram_image", "spectrogram_png", "save_spectrograms", "COLORMAP", "TOP_DB",
           "run_sample_rate", "crop_to_length"]


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles ``(N, H, W, C)`` images in [0, 1] into one uint8 ``(H', W', C)`` array.

    Args:
      images: images in [0, 1]; values outside are clipped.
      ncol: images per row (a square-ish grid when None).
      pad: pixels of padding between tiles.

    Returns:
      The grid as uint8.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = img
    return (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)


def _grid_image(images: np.ndarray, ncol: int | None, scale: int, pad: int = 2) -> Image.Image:
    grid = image_grid(images, ncol, pad)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_image_grid(images: np.ndarray, path: str | os.PathLike, ncol: int | None = None,
                    scale: int = 2) -> None:
    """Writes :func:`image_grid` to ``path`` as a PNG, enlarged ``scale`` times."""
    _grid_image(images, ncol, scale).save(path)


def grid_png(images: np.ndarray, ncol: int | None = None, scale: int = 2, pad: int = 2) -> bytes:
    """:func:`image_grid` as PNG bytes, enlarged ``scale`` times."""
    buf = io.BytesIO()
    _grid_image(images, ncol, scale, pad).save(buf, format="PNG")
    return buf.getvalue()


def sample_condition(test, cond_key: str | None) -> np.ndarray | None:
    """For a conditional model: one row of 8 samples per class (one-hot rows), each
    row decoded from the same 8 codes."""
    if cond_key is None:
        return None
    num_classes = test[cond_key].shape[-1]
    return np.repeat(np.eye(num_classes, dtype=np.float32), 8, axis=0)


def _decode_epoch(sampler, reconstruct, params, test, key, n: int, cond_key: str | None,
                  sample_cond: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prior samples, the first n test examples, their reconstructions)`` on the host."""
    samples = np.asarray(sampler(params, key, sample_cond))
    x = test["image"][:n]
    cond = None if cond_key is None else jnp.asarray(test[cond_key][:n])
    return samples, x, np.asarray(reconstruct(params, jnp.asarray(x), cond))


def save_epoch_images(folder: Path, epoch: int, sampler, reconstruct, params, test, key, n,
                      cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    """``samples_epochNNN.png`` (prior samples) and ``reconstructions_epochNNN.png``
    (the first ``n // 2`` test images and their reconstructions, in alternating rows of 8)."""
    samples, x, recon = _decode_epoch(sampler, reconstruct, params, test, key, n // 2,
                                      cond_key, sample_cond)
    # Originals and reconstructions in alternating rows of 8.
    pairs = np.concatenate([np.stack([x[i:i + 8], recon[i:i + 8]]) for i in range(0, len(x), 8)
                            ]).reshape(-1, *x.shape[1:]) if len(x) % 8 == 0 else np.concatenate(
        [x, recon])
    save_image_grid(samples, folder / f"samples_epoch{epoch:03d}.png", ncol=8)
    save_image_grid(pairs, folder / f"reconstructions_epoch{epoch:03d}.png", ncol=8)


# Clips in each epoch's audio files.
AUDIO_CLIPS = 4


def run_sample_rate(info: dict) -> int | None:
    """The sample rate of the run a hook watches, or None when its data is not audio.

    Args:
      info: a hook's ``on_start`` argument (:func:`~jvae.app.runs.hook_info`):
        its ``sample_rate`` when given, else the rate the model was built for
        (``experiment.data_spec.sample_rate``).
    """
    rate = info.get("sample_rate")
    if rate is None:
        spec = getattr(info.get("experiment"), "data_spec", None)
        rate = getattr(spec, "sample_rate", None)
    return int(rate) if rate else None


def crop_to_length(clips: np.ndarray, lengths: np.ndarray | None) -> list[np.ndarray]:
    """Each ``(T, 1)`` (or ``(T,)``) clip cut to its real samples, as 1-D arrays.

    Args:
      clips: ``(N, T, ...)`` clips, padded with silence at the end.
      lengths: ``(N,)`` real samples per clip (a split's ``"length"``), or None: all real.
    """
    flat = [np.asarray(c, np.float32).reshape(len(c), -1)[:, 0] for c in clips]
    if lengths is None:
        return flat
    return [c[:max(int(n), 0)] for c, n in zip(flat, np.asarray(lengths))]


def save_epoch_audio(workdir: Path, epoch: int, sampler, reconstruct, params, test, key, rate: int,
                     cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    """``audio/samples_epochNNN.wav``, ``reconstructions_epochNNN.wav`` (originals and
    reconstructions alternating) and PNGs of their waveforms and log-mel spectrograms
    (``waveforms_epochNNN.png``, ``spectrograms_epochNNN.png``, one lane per clip, the
    samples first); clips joined by short silences.

    A test clip padded with silence (the split's ``"length"`` says how many of
    its samples are real) is written and drawn cut to its length, and so is its
    reconstruction: the padding is no part of the recording.
    """
    from jvae.base import LENGTH_KEY
    from jvae.datasets.audio import join_clips, save_waveforms, write_wav
    folder = workdir / "audio"
    samples, x, recon = _decode_epoch(sampler, reconstruct, params, test, key, AUDIO_CLIPS,
                                      cond_key, sample_cond)
    lengths = test.get(LENGTH_KEY)
    lengths = None if lengths is None else np.asarray(lengths)[:len(x)]
    samples = crop_to_length(samples, None)
    pairs = [c for pair in zip(crop_to_length(x, lengths), crop_to_length(recon, lengths))
             for c in pair]
    write_wav(folder / f"samples_epoch{epoch:03d}.wav", join_clips(samples, rate), rate)
    write_wav(folder / f"reconstructions_epoch{epoch:03d}.wav", join_clips(pairs, rate), rate)
    save_waveforms(folder / f"waveforms_epoch{epoch:03d}.png", [*samples, *pairs])
    save_spectrograms(folder / f"spectrograms_epoch{epoch:03d}.png", [*samples, *pairs], rate)


# -- log-mel spectrograms ------------------------------------------------------
# Analysis window and hop in seconds, each rounded to a power of two samples
# at the run's rate: ~32 ms resolves pitch harmonics of speech and music,
# ~8 ms (a quarter window) follows onsets without smearing them.
FFT_S, HOP_S = 0.032, 0.008
# The darkest colour is this far below the loudest band: quieter is noise floor.
TOP_DB = 80.0
# Power floor before the logarithm (-100 dB): digital silence stays finite.
_POWER_FLOOR = 1e-10

# Anchors of the colormap, dark to light: lightness (CIE L*) rises steadily
# from about 3 to 95, so louder always reads brighter, in colour or in grey.
_COLOR_ANCHORS = ((0.00, (10, 8, 34)), (0.14, (46, 14, 92)), (0.28, (96, 22, 118)),
                  (0.42, (148, 36, 112)), (0.56, (198, 62, 84)), (0.70, (234, 104, 50)),
                  (0.84, (250, 166, 42)), (1.00, (252, 240, 150)))


def _colormap(size: int = 256) -> np.ndarray:
    """The ``(size, 3)`` uint8 lookup table interpolated between the anchors."""
    pos = np.array([p for p, _ in _COLOR_ANCHORS])
    rgb = np.array([c for _, c in _COLOR_ANCHORS], np.float64)
    t = np.linspace(0.0, 1.0, size)
    return np.stack([np.interp(t, pos, rgb[:, k]) for k in range(3)], 1).round().astype(np.uint8)


COLORMAP = _colormap()


def _power_of_two(v: float, least: int) -> int:
    return max(2 ** int(round(math.log2(max(v, 1.0)))), least)


def stft_sizes(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the spectrograms: ~32 ms and ~8 ms as powers of two samples
    (512 and 128 at 16 kHz)."""
    return _power_of_two(FFT_S * sample_rate, 16), _power_of_two(HOP_S * sample_rate, 4)


def _mel_db(x: np.ndarray, sample_rate: int, n_mels: int) -> np.ndarray:
    """Unfloored log-mel power ``(frames, n_mels)`` in dB of a mono clip."""
    from jvae.terms.spectral import mel_filterbank
    x = np.asarray(x, np.float32)
    x = x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)
    n_fft, hop = stft_sizes(sample_rate)
    # Frames centred on samples 0, hop, 2 hop, ...: the first and last samples
    # count as much as the rest, and a clip shorter than a window has a frame.
    padded = np.pad(x, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    frames = padded[np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]] * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels).T
    return (10.0 * np.log10(np.maximum(mel, _POWER_FLOOR))).astype(np.float32)


def log_mel_spectrogram(x: np.ndarray, sample_rate: int, n_mels: int = 64,
                        top_db: float = TOP_DB) -> np.ndarray:
    """The log-mel power spectrogram of a mono clip, in dB.

    A Hann-windowed STFT (:func:`stft_sizes`: ~32 ms windows every ~8 ms,
    frames centred on the samples, zero padded at the ends), its power
    through Slaney mel filters (:func:`jvae.terms.spectral.mel_filterbank`,
    0 Hz to Nyquist), ``10 log10``, floored ``top_db`` below the maximum.

    Args:
      x: the clip, ``(T,)`` or ``(T, 1)`` (several channels are averaged).
      sample_rate: its rate in Hz.
      n_mels: mel bands.
      top_db: dynamic range kept below the loudest band.

    Returns:
      float32 ``(frames, n_mels)``, ``frames = 1 + T // hop``; band 0 is the lowest.
    """
    db = _mel_db(x, sample_rate, n_mels)
    return np.maximum(db, db.max() - top_db)


def _lane(db: np.ndarray, width: int) -> np.ndarray:
    """``(frames, n_mels)`` dB onto ``width`` columns: each column the loudest of its
    frames (several frames a column) or the frame under it (a column a frame or less)."""
    starts = (np.arange(width) * len(db)) // width
    return np.maximum.reduceat(db, starts, axis=0)


def spectrogram_image(rows, sample_rate: int, n_mels: int = 64, width: int = 800,
                      top_db: float = TOP_DB) -> np.ndarray:
    """Log-mel spectrograms of clips as one RGB image, one lane per clip.

    Each lane is ``n_mels`` pixels high, low frequencies at the bottom, time
    left to right over the full ``width`` (like the waveform plot of
    :func:`jvae.datasets.audio.save_waveforms`), lanes parted by a white line.
    All lanes share one colour scale, ``top_db`` below the loudest band of any
    clip, so quieter clips look darker (:data:`COLORMAP`).

    Args:
      rows: 1-D (or ``(T, 1)``) clips.
      sample_rate: their rate in Hz.
      n_mels: mel bands (pixels) per lane.
      width: image width in pixels.
      top_db: dynamic range of the colour scale.

    Returns:
      uint8 ``(len(rows) * (n_mels + 1) - 1, width, 3)``.
    """
    rows = list(rows)
    lane = n_mels + 1
    img = np.full((max(lane * len(rows) - 1, 1), width, 3), 255, np.uint8)
    dbs = [_lane(_mel_db(x, sample_rate, n_mels), width) for x in rows]
    if not dbs:
        return img
    top = max(float(d.max()) for d in dbs)
    for r, db in enumerate(dbs):
        level = np.clip((db - (top - top_db)) / top_db, 0.0, 1.0)
        index = np.round(level * (len(COLORMAP) - 1)).astype(np.int64)
        img[r * lane:r * lane + n_mels] = COLORMAP[index.T[::-1]]  # high bands on top
    return img


def spectrogram_png(rows, sample_rate: int, n_mels: int = 64, width: int = 800) -> bytes:
    """:func:`spectrogram_image` as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(spectrogram_image(rows, sample_rate, n_mels, width)).save(buf, format="PNG")
    return buf.getvalue()


def save_spectrograms(path: str | os.PathLike, rows, sample_rate: int, n_mels: int = 64,
                      width: int = 800) -> None:
    """Writes :func:`spectrogram_image` of ``rows`` to ``path`` as a PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(spectrogram_image(rows, sample_rate, n_mels, width)).save(path)
