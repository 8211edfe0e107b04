"""A folder of ``.wav`` files as a dataset of fixed-length mono chunks.

Every file is read with ``soundfile`` (8/16/24/32-bit PCM and float WAV),
its channels averaged to mono, resampled to one rate with ``soxr`` (VHQ
polyphase; ``scipy.signal.resample_poly`` when soxr is missing) and cut into
chunks of ``chunk_size`` samples, every ``hop`` samples (:func:`chunk`). No
file is dropped for its length: a clip shorter than a chunk, and the tail of a
longer one, are padded with silence, and each chunk keeps its number of real
samples (its *length*), which masks the padding out of the loss and the
metrics (:func:`jvae.terms.masked.valid_mask`). Samples are float32 in
[-1, 1]. Splits and class labels follow the folder rules of
:mod:`jvae.datasets.images`, by file, so the chunks of one recording never
straddle train and test.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["AUDIO_SUFFIXES", "read_wav", "resample", "chunk", "write_wav", "join_clips",
           "save_waveforms", "default_sample_rate", "snr_db", "default_chunk_size",
           "CHUNK_BOUNDS", "CHUNK_PERCENTILE", "clip_lengths", "Clips", "read_clips",
           "join_chunks", "wav_info"]

AUDIO_SUFFIXES = frozenset({".wav"})

# The default chunk covers this percentile of the clips' lengths: most clips
# fit whole, and the few long ones are cut instead of padding every batch.
CHUNK_PERCENTILE = 90
# The default chunk is a power of two in these bounds (samples): below, a
# chunk holds too little context for the audio net's strides; above, one
# example costs more memory and time than a CPU batch affords.
CHUNK_BOUNDS = (1024, 65_536)


def _soundfile():
    from jvae.datasets.errors import DataError
    try:
        import soundfile
    except ImportError:
        raise DataError("audio folders need soundfile: pip install 'jvae[audio]'") from None
    return soundfile


def wav_info(path: str | os.PathLike) -> tuple[int, int]:
    """``(sample rate, frames)`` of a WAV file, from its header."""
    info = _soundfile().info(str(path))
    return int(info.samplerate), int(info.frames)


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


def chunk(x: np.ndarray, size: int, hop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cuts a 1-D clip into chunks of ``size`` samples, one every ``hop``, padding with silence.

    Chunks start at ``0, hop, 2 hop, ...`` while the previous chunk left
    samples uncovered, so every sample lies in some chunk and no chunk is
    wholly padding: a clip of ``n <= size`` samples is one chunk; a longer one
    gives ``ceil((n - size) / hop) + 1`` chunks, the last one padded.

    Args:
      x: the clip, ``(n,)``.
      size: samples per chunk.
      hop: samples between chunk starts (``size``: chunks that do not overlap).

    Returns:
      ``(chunks, lengths)``: float32 ``(m, size)`` zero-padded chunks and int32
      ``(m,)`` real samples in each (``m = 0`` for an empty clip).
    """
    hop = size if hop is None else hop
    if size < 1 or hop < 1:
        raise ValueError(f"chunk size and hop must be positive, got {size} and {hop}")
    n = len(x)
    if n == 0:
        return np.zeros((0, size), np.float32), np.zeros((0,), np.int32)
    starts = np.arange(0, max(n - size, 0) + hop, hop)
    starts = starts[(starts == 0) | (starts + size - hop < n)]
    padded = np.zeros(starts[-1] + size, np.float32)
    padded[:n] = x
    chunks = np.stack([padded[s:s + size] for s in starts])
    return chunks, np.minimum(n - starts, size).astype(np.int32)


class Clips(NamedTuple):
    """Files cut into padded chunks (:func:`read_clips`).

    Attributes:
      chunks: float32 ``(N, size, 1)`` in [-1, 1], zero-padded.
      lengths: int32 ``(N,)`` real samples in each chunk.
      file_index: int32 ``(N,)`` the file each chunk comes from.
      offsets: int64 ``(N,)`` each chunk's first sample in its file.
      samples: int64 ``(F,)`` each file's length in samples at the rate (0 if unreadable).
      unreadable: indices of the files that could not be read (or hold no samples).
    """

    chunks: np.ndarray
    lengths: np.ndarray
    file_index: np.ndarray
    offsets: np.ndarray
    samples: np.ndarray
    unreadable: list[int]


def read_clips(paths: Sequence[Path], sample_rate: int, size: int,
               hop: int | None = None) -> Clips:
    """Reads ``.wav`` files at ``sample_rate`` and cuts each into padded chunks (:func:`chunk`).

    Args:
      paths: the files.
      sample_rate: the rate every file is resampled to.
      size: samples per chunk.
      hop: samples between chunk starts (``size``: no overlap).

    Returns:
      :class:`Clips`; a file that cannot be read, or holds no samples, adds no
      chunk and is listed in ``unreadable``.
    """
    sf = _soundfile()
    hop = hop or size
    chunks, lengths, index, offsets, unreadable = [], [], [], [], []
    samples = np.zeros(len(paths), np.int64)
    for i, path in enumerate(paths):
        try:
            x, _ = read_wav(path, sample_rate)
        except (RuntimeError, OSError, sf.LibsndfileError):
            unreadable.append(i)
            continue
        if not len(x):
            unreadable.append(i)
            continue
        c, n = chunk(x, size, hop)
        samples[i] = len(x)
        chunks.append(c)
        lengths.append(n)
        index.append(np.full(len(c), i, np.int32))
        offsets.append(np.arange(len(c), dtype=np.int64) * hop)
    if not chunks:
        return Clips(np.zeros((0, size, 1), np.float32), np.zeros(0, np.int32),
                     np.zeros(0, np.int32), np.zeros(0, np.int64), samples, unreadable)
    return Clips(np.concatenate(chunks)[..., None], np.concatenate(lengths),
                 np.concatenate(index), np.concatenate(offsets), samples, unreadable)


def join_chunks(chunks: np.ndarray, offsets: np.ndarray, total: int) -> np.ndarray:
    """Reassembles one file from its (possibly overlapping) chunks ``(m, size[, 1])``.

    Overlapping samples are averaged, so chunks cut with a hop below their
    size give back the clip exactly when each chunk is exact.

    Args:
      chunks: the file's chunks in order.
      offsets: each chunk's first sample.
      total: the file's length in samples (the padding past it is dropped).

    Returns:
      float32 ``(total,)``.
    """
    chunks = np.asarray(chunks, np.float32).reshape(len(chunks), -1)
    size = chunks.shape[1]
    out = np.zeros(int(max(offsets.max() + size, total)) if len(offsets) else total, np.float32)
    weight = np.zeros_like(out)
    for c, o in zip(chunks, offsets):
        out[o:o + size] += c
        weight[o:o + size] += 1.0
    return (out / np.maximum(weight, 1.0))[:total]


def clip_lengths(paths: Sequence[Path], sample_rate: int) -> np.ndarray:
    """Each readable file's length in samples at ``sample_rate`` (header only; -1 if unreadable)."""
    sf = _soundfile()
    out = np.full(len(paths), -1, np.int64)
    for i, p in enumerate(paths):
        try:
            info = sf.info(str(p))
        except (RuntimeError, OSError, sf.LibsndfileError):
            continue
        out[i] = int(round(info.frames * sample_rate / info.samplerate))
    return out


def default_chunk_size(lengths: Sequence[int], percentile: float = CHUNK_PERCENTILE,
                       bounds: tuple[int, int] = CHUNK_BOUNDS) -> int:
    """The power of two covering ``percentile`` of the clip lengths, within ``bounds``.

    Args:
      lengths: clip lengths in samples (negative entries, unreadable files, are ignored).
      percentile: share of clips that fit in one chunk.
      bounds: smallest and largest chunk.

    Returns:
      ``2^ceil(log2(q))`` for the ``percentile``-th length ``q``, clipped to ``bounds``.
    """
    lengths = np.asarray([n for n in lengths if n > 0])
    lo, hi = bounds
    if not len(lengths):
        return lo
    q = float(np.percentile(lengths, percentile))
    return int(min(max(2 ** math.ceil(math.log2(max(q, 1.0))), lo), hi))


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
