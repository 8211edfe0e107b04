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

Images are resized so the short side fits the target, then center-cropped
(torchvision's ``Resize`` + ``CenterCrop``), and converted to grey or RGB.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "DataWarning", "walk_files", "FolderIndex", "index_folder",
           "holdout_is_test", "holdout_score", "parse_image_size", "probe_images", "decode_image", "fit_array",
           "DECODE_ERRORS", "report_skipped"]

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
    from PIL import Image
    step = max(1, len(paths) // limit)
    sides, colour = [], False
    for path in paths[::step][:limit]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
                colour |= im.mode not in _GREY_MODES
        except DECODE_ERRORS:
            continue
    size = int(min(MAX_DEFAULT_SIZE, np.median(sides))) if sides else MAX_DEFAULT_SIZE
    return size, 3 if colour else 1


def _to_8bit(im):
    """16/32-bit integer and float grey images -> 8-bit ``L`` (0..65535 -> 0..255)."""
    from PIL import Image
    a = np.asarray(im)
    if im.mode == "F":
        a = np.clip(a, 0.0, 1.0) * 255.0 if a.max() <= 1.0 else np.clip(a, 0, 255)
    else:
        a = a.astype(np.float64) / 257.0 if a.max() > 255 else a
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


def decode_image(path: str | os.PathLike, size: tuple[int, int], channels: int) -> np.ndarray:
    """Reads one image (a GIF's first frame), resized and center-cropped.

    JPEGs are decoded at a reduced scale (``Image.draft``) when the target is
    at most half the source size: the DCT skips the detail the resize would
    discard anyway.

    Args:
      path: image file.
      size: ``(height, width)`` of the output.
      channels: 1 (grey) or 3 (RGB; grey sources are repeated, alpha dropped).

    Returns:
      uint8 ``(height, width, channels)``.

    Raises:
      One of :data:`DECODE_ERRORS` for an unreadable or truncated file.
    """
    from PIL import Image
    th, tw = size
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as im:
        w, h = im.size
        scale = max(th / h, tw / w)
        if im.format == "JPEG" and scale <= 0.5:
            im.draft(mode, (math.ceil(w * scale), math.ceil(h * scale)))
        im.load()
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            im = _to_8bit(im)
        im = im.convert(mode)
    return fit_array(np.asarray(im), size)


def fit_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 ``(H, W[, C])`` image so it covers ``size``, then center-crops.

    Bilinear resampling with antialiasing (Pillow's), short side to the target.
    """
    from PIL import Image
    th, tw = size
    squeeze = image.ndim == 3 and image.shape[-1] == 1
    arr = image[..., 0] if squeeze else image
    h, w = arr.shape[:2]
    if (h, w) != (th, tw):
        scale = max(th / h, tw / w)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        im = Image.fromarray(arr)
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - tw) // 2, (nh - th) // 2
        arr = np.asarray(im.crop((left, top, left + tw, top + th)))
    return arr.reshape(th, tw, -1)


def _decode_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image
    return (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


DECODE_ERRORS = _decode_errors()


def report_skipped(skipped: Sequence[str], total: int, strict: bool, what: str = "files") -> None:
    """One warning line for skipped files, or an error under ``--strict``."""
    if not skipped:
        return
    from jvae.datasets.errors import DataError
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    if strict:
        raise DataError(f"{len(skipped)} of {total} {what} cannot be read ({shown}); remove them "
                        "or drop --strict to skip them")
    warnings.warn(f"skipped {len(skipped)} of {total} {what} that cannot be read: {shown}",
                  DataWarning, stacklevel=2)
