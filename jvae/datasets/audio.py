"""A folder of ``.wav`` files as a dataset of fixed-length mono chunks.

Every file is read with ``soundfile`` (8/16/24/32-bit PCM and float WAV),
its channels averaged to mono, resampled to one rate with ``soxr`` (VHQ
polyphase; ``scipy.signal.resample_poly`` when soxr is missing) and cut into
non-overlapping chunks of ``chunk_size`` samples; the remainder is dropped
and a file shorter than one chunk contributes nothing (it is counted).
Samples are float32 in [-1, 1]. Splits and class labels follow the folder
rules of :mod:`jvae.datasets.images`, by file, so the chunks of one recording
never straddle train and test.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["AUDIO_SUFFIXES", "read_wav", "resample", "chunk", "write_wav", "join_clips",
           "save_waveforms", "default_sample_rate", "snr_db"]

AUDIO_SUFFIXES = frozenset({".wav"})


def _soundfile():
    from jvae.datasets.errors import DataError
    try:
        import soundfile
    except ImportError:
        raise DataError("audio folders need soundfile: pip install 'jvae[audio]'") from None
    return soundfile


def default_sample_rate(paths: Sequence[Path]) -> int:
    """The most common sample rate among ``paths`` (the highest on a tie)."""
    sf = _soundfile()
    rates = Counter()
    for p in paths:
        try:
            rates[sf.info(str(p)).samplerate] += 1
        except (RuntimeError, OSError, sf.LibsndfileError):
            continue
    if not rates:
        return 16_000
    return max(rates, key=lambda r: (rates[r], r))


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resamples a 1-D signal with a band-limited polyphase filter."""
    if from_rate == to_rate:
        return x
    try:
        import soxr
        return soxr.resample(x, from_rate, to_rate, quality="VHQ").astype(np.float32)
    except ImportError:
        from scipy.signal import resample_poly
        g = math.gcd(from_rate, to_rate)
        return resample_poly(x, to_rate // g, from_rate // g).astype(np.float32)


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Reads a WAV file as mono float32 in [-1, 1], optionally resampled.

    Returns:
      ``(samples, rate)``; ``rate`` is ``sample_rate`` when given.
    """
    sf = _soundfile()
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sample_rate is not None:
        x, rate = resample(x, rate, sample_rate), sample_rate
    return np.clip(x, -1.0, 1.0).astype(np.float32), rate


def chunk(x: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``(len(x) // size, size)`` chunks; the remainder is dropped."""
    n = len(x) // size
    return x[:n * size].reshape(n, size)


def write_wav(path: str | os.PathLike, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Writes mono samples in [-1, 1] (clipped) as a WAV file (16-bit PCM by default).

    16-bit samples are ``round(32767 x)``, so +1 and -1 map to symmetric
    levels and a quantized signal is written exactly.
    """
    sf = _soundfile()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(np.asarray(x, np.float64).reshape(-1), -1.0, 1.0)
    if subtype == "PCM_16":
        x = np.round(x * 32767).astype(np.int16)
    sf.write(str(path), x.astype(np.float32) if x.dtype == np.float64 else x, rate,
             subtype=subtype)


def join_clips(clips: Sequence[np.ndarray], rate: int, gap_s: float = 0.25) -> np.ndarray:
    """Concatenates 1-D clips with ``gap_s`` seconds of silence between them."""
    gap = np.zeros(int(round(gap_s * rate)), np.float32)
    parts = []
    for i, c in enumerate(clips):
        if i:
            parts.append(gap)
        parts.append(np.asarray(c, np.float32).reshape(-1))
    return np.concatenate(parts) if parts else gap[:0]


def save_waveforms(path: str | os.PathLike, rows: Sequence[np.ndarray], titles=None) -> None:
    """A PNG of 1-D waveforms, one lane per row (white background, no plotting library).

    Each lane draws, per pixel column, the min..max range of the samples there.
    """
    from PIL import Image
    width, lane = 800, 60
    img = np.full((lane * max(1, len(rows)), width), 255, np.uint8)
    for r, x in enumerate(rows):
        x = np.clip(np.asarray(x, np.float32).reshape(-1), -1, 1)
        if len(x) == 0:
            continue
        edges = np.linspace(0, len(x), width + 1).astype(int)
        mid, amp = r * lane + lane // 2, lane // 2 - 2
        img[r * lane + lane - 1, :] = 200  # lane separator
        prev = x[0]
        for c in range(width):
            # Each column spans its own samples and the previous column's last
            # one, so the trace stays connected however many samples a column holds.
            seg = np.append(x[edges[c]:max(edges[c + 1], edges[c] + 1)], prev)
            prev = seg[-2] if len(seg) > 1 else prev
            lo, hi = int(mid - seg.max() * amp), int(mid - seg.min() * amp)
            img[lo:hi + 1, c] = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "L").save(path)


def snr_db(clean: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio ``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB."""
    clean, estimate = np.asarray(clean, np.float64), np.asarray(estimate, np.float64)
    noise = np.sum((clean - estimate) ** 2)
    return float(10 * np.log10(np.sum(clean ** 2) / max(noise, 1e-30)))
