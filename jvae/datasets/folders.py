"""``--data-source DIR``: a folder of images or ``.wav`` files, loaded as splits.

:func:`load_folder` indexes the folder (:mod:`~jvae.datasets.images`), decodes
images once into a memory-mapped cache (:mod:`~jvae.datasets.cache`) or audio
into chunks (:mod:`~jvae.datasets.audio`), and returns every example with its
split and label. Skipped files are reported in one warning line (an error
under ``strict``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jvae.base import LENGTH_KEY
from jvae.datasets import audio as audio_lib
from jvae.datasets.images import (
    IMAGE_SUFFIXES,
    index_folder,
    parse_image_size,
    probe_images,
    report_skipped,
    walk_files,
)

__all__ = ["FolderData", "detect_modality", "load_folder", "MODALITIES"]

MODALITIES = ("auto", "image", "audio")


class FolderData(NamedTuple):
    """A loaded folder.

    Attributes:
      data: every example, ``(N, H, W, C)`` uint8 images (possibly a read-only
        memmap, or :class:`~jvae.datasets.stream.ImageFiles` when loaded
        ``lazy`` without a cache) or ``(N, chunk_size, 1)`` float32 audio in [-1, 1].
      labels: int32 ``(N,)`` class indices.
      train: int64 row indices of the training split.
      test: int64 row indices of the test split.
      classes: class names (sorted folder names), empty without class folders.
      modality: ``"image"`` or ``"audio"``.
      info: what identifies the data for a resumed run (source, size, channels
        or sample rate and chunk size) plus counts; ``info["chosen"]`` holds the
        settings the data decided (an unset chunk size).
      lengths: audio only, int32 ``(N,)`` real samples in each chunk (the rest
        is silence padding), else None.
    """

    data: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    classes: tuple[str, ...]
    modality: str
    info: dict[str, Any]
    lengths: np.ndarray | None = None

    def split(self, name: str, lazy: bool = False) -> dict[str, Any]:
        """``{"image": data[rows], "label": labels[rows]}`` for ``"train"`` or ``"test"``,
        plus ``"length"`` (real samples per chunk) for audio.

        With ``lazy``, images on disk (the cache, or files) stay there: ``"image"``
        is a :class:`~jvae.datasets.stream.SplitView` of the rows.
        """
        from jvae.datasets.stream import ImageFiles, SplitView
        rows = self.train if name == "train" else self.test
        on_disk = isinstance(self.data, (np.memmap, ImageFiles))
        if lazy and on_disk:
            return {"image": SplitView(self.data, rows), "label": self.labels[rows]}
        if isinstance(self.data, ImageFiles):
            return {"image": SplitView(self.data, rows).read(), "label": self.labels[rows]}
        split = {"image": np.asarray(self.data[rows]), "label": self.labels[rows]}
        if self.lengths is not None:
            split[LENGTH_KEY] = self.lengths[rows]
        return split


def detect_modality(root: str | os.PathLike) -> str:
    """``"audio"`` when the folder holds ``.wav`` files and no images, else ``"image"``."""
    root = Path(root)
    if walk_files(root, IMAGE_SUFFIXES):
        return "image"
    return "audio" if walk_files(root, audio_lib.AUDIO_SUFFIXES) else "image"


def load_folder(root: str | os.PathLike, *, modality: str = "auto",
                image_size: Any = None, channels: int | None = None,
                sample_rate: int | None = None, chunk_size: int | None = None,
                chunk_hop: int | None = None, test_fraction: float = 0.1, strict: bool = False, cache: bool = True,
                cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                lazy: bool = False) -> FolderData:
    """Loads a folder of images or audio with its splits and labels.

    Args:
      root: the folder.
      modality: ``auto`` (audio when it has ``.wav`` files and no images), ``image``
        or ``audio``.
      image_size: ``N``, ``"HxW"`` or None (median short side, at most 64).
      channels: 1, 3 or None (3 if any image has colour).
      sample_rate: audio rate or None (the folder's most common rate).
      chunk_size: samples per audio example; None chooses
        :func:`~jvae.datasets.audio.default_chunk_size` of the clips' lengths.
      chunk_hop: samples between the starts of a long file's chunks (None: the
        chunk size, chunks that do not overlap).
      test_fraction: holdout share without ``train/`` + ``test/`` folders.
      strict: unreadable files are an error instead of a warning.
      cache: decode images once into a memmap under ``cache_dir``.
      cache_dir: cache folder (default ``$JVAE_DATA_DIR/cache``).
      progress: progress bar while decoding (None: on a terminal).
      lazy: without a cache, keep decoded images out of memory: every file is
        decoded once to find unreadable ones, and ``data`` is the file list
        (:class:`~jvae.datasets.stream.ImageFiles`), decoded again when read.

    Raises:
      DataError: a missing or empty folder, a bad setting, or skipped files under ``strict``.
    """
    from jvae.datasets.errors import DataError
    if modality not in MODALITIES:
        raise DataError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction} must be in [0, 1)")
    if modality == "auto":
        modality = detect_modality(root)
    if modality == "audio":
        return _load_audio(Path(root), sample_rate, chunk_size, test_fraction, strict, chunk_hop)
    return _load_images(Path(root), image_size, channels, test_fraction, strict, cache,
                        cache_dir, progress, lazy)


def _rows(split: np.ndarray, ok: np.ndarray, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from jvae.datasets.errors import DataError
    train, test = np.flatnonzero(ok & (split == 0)), np.flatnonzero(ok & (split == 1))
    if len(train) == 0 or len(test) == 0:
        which = "training" if len(train) == 0 else "test"
        raise DataError(f"the {which} split of {root} is empty ({len(train)} train, {len(test)} "
                        "test examples); add files or change --test-fraction")
    return train, test


class _Discard:
    """A sink for decoded images that keeps none (a lazy load without a cache)."""

    def __setitem__(self, index, value) -> None:
        pass


def _load_images(root, image_size, channels, test_fraction, strict, cache, cache_dir, progress,
                 lazy=False):
    from jvae.datasets.cache import cached_decode, decode_all
    from jvae.datasets.download import data_home
    from jvae.datasets.errors import DataError
    index = index_folder(root, IMAGE_SUFFIXES, test_fraction=test_fraction, kind="image")
    paths = [index.root / f for f in index.files]
    size = parse_image_size(image_size)
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels} must be 1 or 3")
    if size is None or channels is None:
        probed_size, probed_channels = probe_images(paths)
        size = size or (probed_size, probed_size)
        channels = channels or probed_channels
    if cache:
        folder = Path(cache_dir) if cache_dir else data_home() / "cache"
        data, ok, _ = cached_decode(index.root, index.files, size, channels, cache_dir=folder,
                                    progress=progress)
    elif lazy:
        from jvae.datasets.stream import ImageFiles
        _, ok = decode_all(paths, size, channels, out=_Discard(), progress=progress)
        data = ImageFiles(paths, size, channels)
    else:
        data, ok = decode_all(paths, size, channels, progress=progress)
    report_skipped([f for f, good in zip(index.files, ok) if not good], len(ok), strict,
                   "image files")
    train, test = _rows(index.split, ok, root)
    info = {"data_source": str(root), "modality": "image", "image_size": list(size),
            "channels": channels, "num_files": len(ok), "skipped": int((~ok).sum())}
    return FolderData(data, index.labels, train, test, index.classes, "image", info)


def _load_audio(root, sample_rate, chunk_size, test_fraction, strict, chunk_hop=None):
    from jvae.datasets.errors import DataError
    if chunk_size is not None and chunk_size < 1:
        raise DataError(f"chunk_size={chunk_size} must be positive (or unset: chosen from the "
                        "clips' lengths)")
    if chunk_hop is not None and chunk_hop < 1:
        raise DataError(f"chunk_hop={chunk_hop} must be positive (or unset: the chunk size)")
    index = index_folder(root, audio_lib.AUDIO_SUFFIXES, test_fraction=test_fraction,
                         kind=".wav")
    paths = [index.root / f for f in index.files]
    rate = sample_rate or audio_lib.default_sample_rate(paths)
    chosen = {}
    if not chunk_size:
        chunk_size = audio_lib.default_chunk_size(audio_lib.clip_lengths(paths, rate))
        chosen["chunk_size"] = chunk_size
    hop = chunk_hop or chunk_size
    clips = audio_lib.read_clips(paths, rate, chunk_size, hop)
    report_skipped([index.files[i] for i in clips.unreadable], len(paths), strict, ".wav files")
    if not len(clips.chunks):
        raise DataError(f"no .wav file under {root} could be read; check the files "
                        "(soundfile reads PCM and float WAV)")
    train, test = _rows(index.split[clips.file_index], np.ones(len(clips.chunks), bool), root)
    info = {"data_source": str(root), "modality": "audio", "sample_rate": rate,
            "chunk_size": chunk_size, "chunk_hop": hop, "num_files": len(paths),
            "skipped": len(clips.unreadable), "num_chunks": len(clips.chunks),
            "padded_chunks": int((clips.lengths < chunk_size).sum()), "chosen": chosen}
    return FolderData(clips.chunks, index.labels[clips.file_index].astype(np.int32), train, test,
                      index.classes, "audio", info, clips.lengths)
