"""A folder of images as a dataset: files, splits, class labels, decoding.

Conventions of torchvision's ``ImageFolder`` and Hugging Face's
``imagefolder``:

* every image under the folder counts, recursively, symlinked sub-folders
  included (a symlinked COCO ``train2017``); a link back up the tree is
  visited once (loops are cut by real path);
* ``train/`` beside ``test/`` (or ``val/``) are the splits; otherwise a
  holdout of ``test_fraction`` chosen by a hash of each file's relative path,
  so adding files never moves an old file to the other split;
* class sub-folders (the first path component under a split) become integer
  labels in sorted name order.

Each file is read by :func:`~jvae.datasets.reader.read_image`, the reader
every mode shares: upright by its EXIF orientation, 8-bit by its bit depth,
resized so the short side fits the target, then center-cropped
(torchvision's ``Resize`` + ``CenterCrop``), and converted to grey or RGB.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from jvae.datasets.reader import DECODE_ERRORS, fit_array, open_image, read_image

__all__ = ["IMAGE_SUFFIXES", "DataWarning", "walk_files", "FolderIndex", "index_folder",
           "holdout_is_test", "holdout_score", "parse_image_size", "probe_images", "decode_image",
           "report_skipped",
           # The reader's (jvae.datasets.reader), still importable from here.
           "DECODE_ERRORS", "fit_array"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_TEST_DIRS = ("test", "val")
# The default image size: the median short side, capped here.
MAX_DEFAULT_SIZE = 64


class DataWarning(UserWarning):
    """Files skipped while reading a dataset (unreadable, truncated, too short)."""


def walk_files(root: str | os.PathLike, suffixes: Sequence[str] | frozenset[str]) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, following symlinked folders.

    ``os.walk`` and Python 3.11's ``Path.rglob`` do not descend into symlinked
    directories; this walk does, and visits each real directory once, so a
    link to an ancestor ends instead of looping. Hidden entries (``.name``)
    are skipped.

    Returns:
      Paths as found under ``root`` (links not resolved), sorted.
    """
    root = Path(root)
    suffixes = {s.lower() for s in suffixes}
    seen: set[str] = set()
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(path)
                elif entry.is_file(follow_symlinks=True) and path.suffix.lower() in suffixes:
                    found.append(path)
            except OSError:  # a dangling link
                continue
    return sorted(found)


def holdout_score(relpath: str, seed: int = 0) -> float:
    """``sha256(seed, relpath)`` read as a number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def holdout_is_test(relpath: str, test_fraction: float, seed: int = 0) -> bool:
    """Whether a file belongs to the test split of a hashed holdout.

    Its :func:`holdout_score` is compared with ``test_fraction``; the decision
    depends on the path alone, so the split of the files already there is
    stable when files are added or removed.
    """
    return holdout_score(relpath, seed) < test_fraction


class FolderIndex(NamedTuple):
    """The files of a dataset folder and what each one is.

    Attributes:
      root: the folder.
      files: file paths relative to ``root`` (POSIX separators), sorted.
      split: per file, 0 (train) or 1 (test).
      labels: per file, the index of its class in ``classes`` (0 without classes).
      classes: sorted class folder names; empty when files lie directly in a split.
    """

    root: Path
    files: tuple[str, ...]
    split: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]


def index_folder(root: str | os.PathLike, suffixes: Sequence[str] | frozenset[str], *,
                 test_fraction: float = 0.1, kind: str = "image") -> FolderIndex:
    """Lists a dataset folder's files, splits and labels.

    Args:
      root: the folder (``train/`` + ``test/`` or ``val/`` sub-folders are splits).
      suffixes: file suffixes to take (lower case, with the dot).
      test_fraction: the hashed holdout's share when there are no split folders.
      kind: the noun for error messages (``"image"``, ``".wav"``).

    Raises:
      DataError: the folder does not exist or holds no such files.
    """
    from jvae.datasets.errors import DataError
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-source {root} is not a folder; pass a folder of {kind} files")
    split_dirs = None
    if (root / "train").is_dir():
        test_dir = next((root / d for d in _TEST_DIRS if (root / d).is_dir()), None)
        if test_dir is not None:
            split_dirs = ((root / "train", 0), (test_dir, 1))
    entries: list[tuple[str, int, str | None]] = []  # (relpath, split, class or None)
    for base, split_id in split_dirs or ((root, None),):
        for path in walk_files(base, suffixes):
            rel_split = path.relative_to(base)
            rel = path.relative_to(root).as_posix()
            cls = rel_split.parts[0] if len(rel_split.parts) > 1 else None
            if split_id is None:
                split_id_f = int(holdout_is_test(rel, test_fraction))
            else:
                split_id_f = split_id
            entries.append((rel, split_id_f, cls))
    if not entries:
        raise DataError(f"no {kind} files ({', '.join(sorted(suffixes))}) under {root}; "
                        "point --data-source at a folder that holds some")
    entries.sort()
    if split_dirs is None and test_fraction > 0 and len(entries) > 1 and \
            not any(s for _, s, _ in entries):
        # A small folder whose hashes all fell on the train side: the file
        # nearest the threshold is held out, so there is something to test on.
        i = min(range(len(entries)), key=lambda j: holdout_score(entries[j][0]))
        entries[i] = (entries[i][0], 1, entries[i][2])
    has_classes = all(c is not None for _, _, c in entries)
    classes = tuple(sorted({c for _, _, c in entries})) if has_classes else ()
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup.get(c, 0) for _, _, c in entries], np.int32)
    split = np.array([s for _, s, _ in entries], np.int8)
    return FolderIndex(root, tuple(r for r, _, _ in entries), split, labels, classes)


def parse_image_size(value: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    """``64``, ``"64"``, ``"48x64"`` or ``(48, 64)`` -> ``(height, width)``; None stays None."""
    from jvae.datasets.errors import DataError
    if value is None or value == "" or value == 0:
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.lower().split("x")]
        elif isinstance(value, int):
            parts = [value]
        else:
            parts = [int(p) for p in value]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or min(parts) < 1:
            raise ValueError
    except ValueError:
        raise DataError(f"image size {value!r} is not N or HxW with positive integers "
                        "(e.g. --image-size 64 or --image-size 48x64)") from None
    return parts[0], parts[1]


_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def probe_images(paths: Sequence[Path], limit: int = 1024) -> tuple[int, int]:
    """Default size and channels from the headers of up to ``limit`` files.

    Returns:
      ``(size, channels)``: the median short side capped at
      :data:`MAX_DEFAULT_SIZE`, and 3 if any probed image has colour, else 1.
    """
    step = max(1, len(paths) // limit)
    sides, colour = [], False
    for path in paths[::step][:limit]:
        try:
            with open_image(path) as im:
                sides.append(min(im.size))
                colour |= im.mode not in _GREY_MODES
        except DECODE_ERRORS:
            continue
    size = int(min(MAX_DEFAULT_SIZE, np.median(sides))) if sides else MAX_DEFAULT_SIZE
    return size, 3 if colour else 1


def decode_image(path: str | os.PathLike, size: tuple[int, int], channels: int) -> np.ndarray:
    """One file of a folder at the training size: :func:`~jvae.datasets.reader.read_image`
    (upright, 8-bit, resized and center-cropped), in the argument order of the loaders.

    Returns:
      uint8 ``(height, width, channels)``.

    Raises:
      ImageReadError: an unreadable or truncated file, or a decompression bomb.
    """
    return read_image(path, channels, size)


def report_skipped(skipped: Sequence[str], total: int, strict: bool, what: str = "files") -> None:
    """One warning line for skipped files, or an error under ``--strict``."""
    if not skipped:
        return
    from jvae.datasets.errors import DataError
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    if strict:
        raise DataError(f"{len(skipped)} of {total} {what} cannot be read ({shown}); remove them "
                        "or drop --strict to skip them")
    _data_warning(f"skipped {len(skipped)} of {total} {what} that cannot be read: {shown}")


def _data_warning(message: str) -> None:
    """Issues a :class:`DataWarning` that shows as one line.

    Its location is the package, not a file: Python prints the source line of
    a warning's file beneath it, which would be jvae's own code, not the data.
    """
    warnings.warn_explicit(message, DataWarning, "jvae", 0, module="jvae.datasets")
