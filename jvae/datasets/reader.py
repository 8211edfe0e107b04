"""One image file to pixels: the reader of training folders and of every mode.

:func:`read_image` is the only place an image file becomes an array, so a
folder trains on exactly the pixels ``jvae reconstruct`` or ``jvae encode``
later read from it:

* the EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a phone
  photo stored sideways comes out upright;
* the bit depth is the file's: 16-bit greys (``I;16``, and ``I`` as older
  Pillow opens 16-bit PNGs) are scaled from 0..65535 to 0..255, whatever the
  values; palettes (with their transparency), bilevel, grey, grey + alpha and
  CMYK images are converted; alpha is dropped for grey or RGB (as
  torchvision's ``convert("RGB")`` does), kept for 4 channels;
* with a size, the image is resized so its short side covers the target and
  center-cropped (torchvision's ``Resize`` + ``CenterCrop``), never stretched;
  without one it keeps its own size.

A file that cannot be read, a decompression bomb included (Pillow's
``DecompressionBombError``, and its ``DecompressionBombWarning`` which would
otherwise print without naming the file), raises :class:`ImageReadError`: one
line that names the file.
"""

from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

from jvae.datasets.errors import DataError

__all__ = ["DECODE_ERRORS", "ImageReadError", "fit_array", "open_image", "read_image"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_ORIENTATION_TAG = 0x0112
# Integer greys wider than 8 bits, read as 16-bit (0..65535).
_WIDE_GREYS = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Pillow's bomb warning goes through Python's warning filters, process-wide in
# 3.11: reader threads take turns making it an error around the header read,
# so none restores filters another one changed.
_OPEN_LOCK = threading.Lock()


class ImageReadError(DataError):
    """An image file that cannot be decoded; the message names the file and why."""


def _failure(path: str | os.PathLike, e: BaseException) -> ImageReadError:
    """Pillow's exception for ``path`` as one line that names the file and the way out."""
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageReadError(f"image {path} is too large to read safely ({reason}); shrink it, "
                              "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")
    return ImageReadError(f"cannot read image {path} ({reason}); replace or remove the file")


# Errors Pillow raises for damaged, truncated or unsupported files.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
# What a failed decode raises: the reader's own error, and Pillow's for other decoders.
DECODE_ERRORS = (ImageReadError, *_PILLOW_ERRORS)


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` (the header only), with a decompression bomb as an error.

    Raises:
      ImageReadError: the file is no image Pillow reads, or is a decompression bomb.
    """
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except _PILLOW_ERRORS as e:
        raise _failure(path, e) from None


def read_image(path: str | os.PathLike, channels: int,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Reads one image file (a GIF's first frame) as uint8 pixels, upright.

    JPEGs are decoded at a reduced scale (``Image.draft``) when the target is
    at most half the source size: the DCT skips the detail the resize would
    discard anyway.

    Args:
      path: the file.
      channels: 1 (grey), 3 (RGB) or 4 (RGBA).
      size: ``(height, width)`` to resize and center-crop to (as training
        does); None keeps the image's own size.

    Returns:
      uint8 ``(height, width, channels)``.

    Raises:
      ImageReadError: an unreadable, truncated or unsupported file, or a
        decompression bomb.
    """
    if channels not in _MODES:
        raise ValueError(f"channels={channels} must be 1, 3 or 4")
    try:
        with open_image(path) as im:
            if size is not None:
                _draft(im, size, _MODES[channels])
            im.load()
            arr = np.asarray(_converted(_eight_bit(_upright(im)), _MODES[channels]))
    except _PILLOW_ERRORS as e:
        raise _failure(path, e) from None
    arr = arr.reshape(*arr.shape[:2], channels)
    return arr if size is None else fit_array(arr, size)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1: as stored; 5-8 turn the image a quarter)."""
    return im.getexif().get(_ORIENTATION_TAG, 1)


def _draft(im: Image.Image, size: tuple[int, int], mode: str) -> None:
    """Asks a JPEG for a reduced decode that still covers ``size`` once upright."""
    if im.format != "JPEG":
        return
    w, h = im.size
    upright_w, upright_h = (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)
    scale = max(size[0] / upright_h, size[1] / upright_w)
    if scale <= 0.5:
        im.draft("L" if mode == "L" else "RGB", (math.ceil(w * scale), math.ceil(h * scale)))


def _upright(im: Image.Image) -> Image.Image:
    """The image as its EXIF orientation says to show it (itself without one)."""
    return im if _orientation(im) == 1 else ImageOps.exif_transpose(im)


def _eight_bit(im: Image.Image) -> Image.Image:
    """Wide greys to 8-bit ``L`` by their bit depth (16-bit: /257), floats by [0, 1]."""
    if im.mode in _WIDE_GREYS:
        a = np.asarray(im, np.float64) / 257.0
    elif im.mode == "F":  # no standard range: [0, 1] when it fits, else [0, 255]
        a = np.nan_to_num(np.asarray(im, np.float64))
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    else:
        return im
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


def _converted(im: Image.Image, mode: str) -> Image.Image:
    """``im`` in ``mode``; a palette goes through RGBA when it has transparency."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    return im if im.mode == mode else im.convert(mode)


def fit_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 ``(H, W[, C])`` image so it covers ``size``, then center-crops.

    Bilinear resampling with antialiasing (Pillow's), short side to the target.
    """
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
