"""What a run shows of its model: PNG image grids, and each epoch's samples and reconstructions.

:func:`image_grid` tiles images; :func:`save_epoch_images` writes an epoch's
``images/samples_epochNNN.png`` and ``reconstructions_epochNNN.png`` (originals
and reconstructions in alternating rows), :func:`save_epoch_audio` its
``audio/`` clips and waveform plot for audio data.
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
           "save_epoch_audio", "AUDIO_CLIPS"]


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


def save_epoch_audio(workdir: Path, epoch: int, sampler, reconstruct, params, test, key, rate: int,
                     cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    """``audio/samples_epochNNN.wav``, ``reconstructions_epochNNN.wav`` (originals and
    reconstructions alternating) and a PNG of their waveforms; clips joined by short silences."""
    from jvae.datasets.audio import join_clips, save_waveforms, write_wav
    folder = workdir / "audio"
    samples, x, recon = _decode_epoch(sampler, reconstruct, params, test, key, AUDIO_CLIPS,
                                      cond_key, sample_cond)
    samples, recon = samples[..., 0], recon[..., 0]
    pairs = [c for pair in zip(x[..., 0], recon) for c in pair]
    write_wav(folder / f"samples_epoch{epoch:03d}.wav", join_clips(samples, rate), rate)
    write_wav(folder / f"reconstructions_epoch{epoch:03d}.wav", join_clips(pairs, rate), rate)
    save_waveforms(folder / f"waveforms_epoch{epoch:03d}.png", [*samples, *pairs])
