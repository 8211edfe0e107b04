"""Decode a folder once into a memory-mapped array; reuse it while nothing changed.

The cache is ``<cache_dir>/<key>.npy`` (uint8 ``(N, H, W, C)``, opened with
``mmap_mode="r"``, so epochs page it in from disk instead of holding it in
RAM) plus ``<key>.ok.npy`` (which files decoded). The key hashes the folder's
file list with every file's size and modification time, the image size and
the channel count: a changed, added or removed file, or another size, gives
another key, hence a rebuild. Files are written under a temporary name and
renamed when complete, so an interrupted build is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from jvae.datasets.images import DECODE_ERRORS, decode_image

__all__ = ["cache_key", "decode_all", "cached_decode"]

# Bumped when decoding changes (2: EXIF orientation, 16-bit scaling by bit depth).
_VERSION = 2


def cache_key(root: Path, files: Sequence[str], size: tuple[int, int], channels: int) -> str:
    """A digest of the file list, sizes, mtimes, image size and channels."""
    h = hashlib.sha256(json.dumps([_VERSION, str(root.resolve()), list(size), channels]).encode())
    for rel in files:
        st = os.stat(root / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def decode_all(paths: Sequence[Path], size: tuple[int, int], channels: int, *,
               out: np.ndarray | None = None, workers: int | None = None,
               progress: bool | None = None,
               decode: Callable[..., np.ndarray] = decode_image) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every file into ``out`` (a new array when None) with a thread pool.

    Pillow releases the GIL while it decodes and resizes, so threads use all
    cores without copying results between processes.

    Args:
      paths: image files.
      size: ``(height, width)``.
      channels: 1 or 3.
      out: uint8 ``(len(paths), height, width, channels)`` to fill (e.g. a memmap).
      workers: threads; all cores when None.
      progress: show a progress bar (None: when stderr is a terminal).
      decode: the per-file decoder.

    Returns:
      ``(images, ok)``: failed files are left zero and flagged False in ``ok``.
    """
    n = len(paths)
    if out is None:
        out = np.zeros((n, *size, channels), np.uint8)
    ok = np.zeros(n, bool)

    def one(i: int) -> int:
        try:
            out[i] = decode(paths[i], size, channels)
            ok[i] = True
        except DECODE_ERRORS:
            pass
        return i

    show = sys.stderr.isatty() if progress is None else progress
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool, \
            tqdm(total=n, desc="decoding images", unit="img", disable=not show,
                 file=sys.stderr, leave=False) as bar:
        for _ in pool.map(one, range(n), chunksize=64):
            bar.update(1)
    return out, ok


def cached_decode(root: Path, files: Sequence[str], size: tuple[int, int], channels: int, *,
                  cache_dir: Path, workers: int | None = None, progress: bool | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Path]:
    """The decoded folder from the cache, built first if missing or stale.

    Returns:
      ``(images, ok, path)``: a read-only memmap, the decode flags, the cache file.
    """
    key = cache_key(root, files, size, channels)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path, ok_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.ok.npy"
    if not (path.exists() and ok_path.exists()):
        tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(files), *size, channels))
        try:
            _, ok = decode_all([root / f for f in files], size, channels, out=arr,
                               workers=workers, progress=progress)
            arr.flush()
            del arr
            np.save(ok_path, ok)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return np.load(path, mmap_mode="r"), np.load(ok_path), path
