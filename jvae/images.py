"""Image grids as PNG files."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image

__all__ = ["image_grid", "save_image_grid", "grid_png"]


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
