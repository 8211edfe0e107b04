"""A dSprites-like dataset drawn by jvae: 2-D shapes with known factors of variation.

Every combination of five ground-truth factors is one 64x64 binary image,
737,280 in all, in the factor order of DeepMind's dSprites
(Matthey et al., 2017):

=========== ===== ==============================================
factor      steps values
=========== ===== ==============================================
shape       3     square, ellipse, heart
scale       6     0.5 to 1 in equal steps
orientation 40    ``2 pi k / 40``, ``k = 0..39`` (radians)
pos_x       32    the centre's column, 0.2 to 0.8 of the width
pos_y       32    the centre's row, 0.2 to 0.8 of the height
=========== ===== ==============================================

The image of factors ``(s, c, o, x, y)`` has index
``(((s * 6 + c) * 40 + o) * 32 + x) * 32 + y`` (:func:`factors_to_index`).
Images are rasterised here (:func:`render_dsprites`), not read from DeepMind's file:
a pixel is on when its centre lies inside the shape (point sampling, no
anti-aliasing), so the images are binary like the original's but not the
same pixels. The heart is the curve ``(x^2 + y^2 - 1)^3 = x^2 y^3``.

Rendered images are kept bit-packed in a memory-mapped cache,
``$JVAE_DATA_DIR/cache/dsprites-v1.npy`` (one row of 512 bytes plus a
"rendered" byte per image, a sparse file that fills as images are asked
for), so each image is drawn once per machine and a subset never renders the
rest. :func:`load_dsprites` serves fixed train/test splits;
:func:`dsprites_images` is the ``factors -> images`` function the
disentanglement metrics sample through.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DSPRITES_FACTORS", "DSPRITES_SHAPES", "DSPRITES_SIZES", "DSPRITES_TEST",
           "DSpritesCache", "dsprites_factor_values", "dsprites_images", "factors_to_index",
           "index_to_factors", "load_dsprites", "render_dsprites"]

DSPRITES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
DSPRITES_SIZES = (3, 6, 40, 32, 32)
DSPRITES_SHAPES = ("square", "ellipse", "heart")
_NUM = int(np.prod(DSPRITES_SIZES))  # 737,280
_SIZE = 64
_ROW = _SIZE * _SIZE // 8  # packed bytes of one image
# Fixed held-out images: a constant seed, so every run is scored on the same ones.
DSPRITES_TEST = 10_000
_SPLIT_SEED = 20_260_523
# Bumped whenever rendering changes: a new file, never a stale image.
_VERSION = 1

# Geometry, in canvas units (the image is [0, 1]^2, pixel centres at (j + 0.5) / 64).
# Every shape fits a circle of radius _RADIUS * scale around its centre, and the
# centre stays in [_MARGIN, 1 - _MARGIN]: no shape is ever clipped, so moving it
# never changes its pixels' count by more than sampling does.
_MARGIN = 0.2
_RADIUS = 0.19
_HALF_SIDE = _RADIUS / np.sqrt(2.0)  # a square's corners on the circle
# The heart's curve spans x in [-1.139, 1.139], y in [-1, 1.236]: centred at its
# box's middle, its farthest point lies 1.3366 away.
_HEART_Y0 = 0.118
_HEART_R = 1.3366


def dsprites_factor_values() -> tuple[np.ndarray, ...]:
    """The value of every step of each factor, in :data:`DSPRITES_FACTORS` order.

    Returns:
      ``(shape ids 0..2, scales, orientations in radians, pos_x, pos_y in [0, 1])``.
    """
    return (np.arange(3, dtype=np.float64), np.linspace(0.5, 1.0, 6),
            2 * np.pi * np.arange(40) / 40, np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))


def factors_to_index(factors: np.ndarray) -> np.ndarray:
    """Indices of factor combinations in the full product (row-major, shape slowest).

    Args:
      factors: int ``(N, 5)``, each column in ``[0, size)``.

    Returns:
      int64 ``(N,)`` in ``[0, 737280)``.
    """
    factors = np.asarray(factors, np.int64)
    if factors.ndim != 2 or factors.shape[1] != len(DSPRITES_SIZES):
        raise ValueError(f"factors must be (N, {len(DSPRITES_SIZES)}), got {factors.shape}")
    if (factors < 0).any() or (factors >= np.asarray(DSPRITES_SIZES)).any():
        raise ValueError(f"factors out of range: each column must lie in [0, size) for sizes "
                         f"{DSPRITES_SIZES}")
    return np.ravel_multi_index(tuple(factors.T), DSPRITES_SIZES)


def index_to_factors(index: np.ndarray) -> np.ndarray:
    """The inverse of :func:`factors_to_index`: int64 ``(N, 5)``."""
    return np.stack(np.unravel_index(np.asarray(index, np.int64), DSPRITES_SIZES), axis=1)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points ``(u, v)`` (shape coordinates, unit scale, v downwards) are inside."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= _HALF_SIDE
    if shape == 1:  # semi-axes _RADIUS along u and _RADIUS / 2 along v
        return (u / _RADIUS) ** 2 + (2 * v / _RADIUS) ** 2 <= 1.0
    # The heart's y points up: image rows grow downwards.
    x = u * (_HEART_R / _RADIUS)
    y = -v * (_HEART_R / _RADIUS) + _HEART_Y0
    r = x * x + y * y - 1.0
    return r * r * r - x * x * y * y * y <= 0.0


def render_dsprites(factors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Rasterises factor combinations into binary images, vectorised over images.

    A pixel is on when its centre, mapped into the shape's frame (translated
    to the centre, rotated by ``-orientation``, divided by the scale), lies
    inside the shape: point sampling, no anti-aliasing.

    Args:
      factors: int ``(N, 5)`` (:data:`DSPRITES_FACTORS` order).
      chunk: images computed at once (bounds the float32 temporaries).

    Returns:
      bool ``(N, 64, 64)``.
    """
    factors = index_to_factors(factors_to_index(factors))  # validated, int64
    _, scales, angles, xs, ys = dsprites_factor_values()
    grid = (np.arange(_SIZE, dtype=np.float32) + 0.5) / _SIZE
    out = np.empty((len(factors), _SIZE, _SIZE), bool)
    for start in range(0, len(factors), chunk):
        f = factors[start:start + chunk]
        cx = (_MARGIN + (1 - 2 * _MARGIN) * xs[f[:, 3]]).astype(np.float32)[:, None, None]
        cy = (_MARGIN + (1 - 2 * _MARGIN) * ys[f[:, 4]]).astype(np.float32)[:, None, None]
        cos = np.cos(angles[f[:, 2]]).astype(np.float32)[:, None, None]
        sin = np.sin(angles[f[:, 2]]).astype(np.float32)[:, None, None]
        inv = (1.0 / scales[f[:, 1]]).astype(np.float32)[:, None, None]
        dx = grid[None, None, :] - cx  # (n, 1, 64): columns
        dy = grid[None, :, None] - cy  # (n, 64, 1): rows
        u = (cos * dx + sin * dy) * inv
        v = (cos * dy - sin * dx) * inv
        block = out[start:start + chunk]
        for shape in range(len(DSPRITES_SHAPES)):
            rows = np.flatnonzero(f[:, 0] == shape)
            if len(rows):
                block[rows] = _inside(shape, u[rows], v[rows])
    return out


def _default_cache_dir() -> Path:
    from jvae.datasets.download import data_home
    return data_home() / "cache"


class DSpritesCache:
    """Rendered images, bit-packed in a memory-mapped file, drawn on first request.

    The file holds uint8 ``(737280, 513)``: an image's 4,096 pixels packed
    into 512 bytes (:func:`numpy.packbits`), then 1 once they are written.
    Bytes are written and flushed before their flag, so an interrupted
    writer leaves images unflagged (drawn again), never a flagged wrong one.
    Processes sharing the file write the same bytes, so they never conflict.
    A file this process may not write is read, and what it lacks is drawn
    without being stored.

    Args:
      cache_dir: the folder of ``dsprites-v1.npy`` (``$JVAE_DATA_DIR/cache``
        when None).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.path = folder / f"dsprites-v{_VERSION}.npy"
        if not self.path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"dsprites-v{_VERSION}.{os.getpid()}.tmp.npy"
            # A sparse file: only the rows ever rendered take disk space.
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(_NUM, _ROW + 1))
            os.replace(tmp, self.path)
        self.writable = os.access(self.path, os.W_OK)
        self._array = np.load(self.path, mmap_mode="r+" if self.writable else "r")
        if self._array.shape != (_NUM, _ROW + 1) or self._array.dtype != np.uint8:
            raise ValueError(f"{self.path} is not a dsprites cache (shape "
                             f"{self._array.shape}); delete it to rebuild")

    def packed(self, index: np.ndarray) -> np.ndarray:
        """Packed images at ``index`` (uint8 ``(N, 512)``), rendering the missing ones."""
        index = np.asarray(index, np.int64)
        order = np.argsort(index, kind="stable")  # reads front to back
        sorted_index = index[order]
        rows = self._array[sorted_index]
        missing = rows[:, _ROW] != 1
        if missing.any():
            todo = np.unique(sorted_index[missing])
            images = np.packbits(render_dsprites(index_to_factors(todo)).reshape(len(todo), -1),
                                 axis=1)
            if self.writable:
                self._array[todo, :_ROW] = images
                self._array.flush()  # the bytes reach the disk before their flags
                self._array[todo, _ROW] = 1
                self._array.flush()
            rows[missing, :_ROW] = images[np.searchsorted(todo, sorted_index[missing])]
        out = np.empty((len(index), _ROW), np.uint8)
        out[order] = rows[:, :_ROW]
        return out

    def images(self, index: np.ndarray) -> np.ndarray:
        """uint8 ``(N, 64, 64, 1)`` images at ``index``, 0 or 255."""
        bits = np.unpackbits(self.packed(index), axis=1)
        return (bits.reshape(-1, _SIZE, _SIZE, 1) * np.uint8(255)).astype(np.uint8, copy=False)

    def rendered(self) -> int:
        """How many images the file holds."""
        return int(np.count_nonzero(self._array[:, _ROW] == 1))


def _split_order() -> tuple[np.ndarray, np.ndarray]:
    """Image indices of the fixed test split and, shuffled, the training split."""
    order = np.random.default_rng(_SPLIT_SEED).permutation(_NUM)
    return order[:DSPRITES_TEST], order[DSPRITES_TEST:]


def dsprites_images(factors: np.ndarray, *, cache: bool = True,
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The images of factor combinations: the ``factors -> images`` map of the metrics.

    Args:
      factors: int ``(N, 5)``.
      cache: read and fill the memory-mapped cache (False: render every time).
      cache_dir: see :class:`DSpritesCache`.

    Returns:
      uint8 ``(N, 64, 64, 1)``, 0 or 255.
    """
    if not cache:
        return render_dsprites(factors)[..., None].astype(np.uint8) * np.uint8(255)
    return DSpritesCache(cache_dir).images(factors_to_index(factors))


def load_dsprites(split: str, *, examples: int | None = None, cache: bool = True,
                  cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Loads a split: 10,000 fixed test images, or the other 727,280 for training.

    Both splits are in a fixed shuffled order; ``examples`` takes a split's
    first ones, so a small run draws only those and a larger one holds every
    image of a smaller one.

    Args:
      split: ``"train"`` or ``"test"``.
      examples: the split's first this-many images (None: all).
      cache: use the memory-mapped cache (:class:`DSpritesCache`).
      cache_dir: the cache's folder.

    Returns:
      ``{"image": uint8 (N, 64, 64, 1) in {0, 255}, "label": int32 (N,)`` (the
      shape), ``"factors": int32 (N, 5)}``.
    """
    from jvae.datasets.errors import DataError
    if split not in ("train", "test"):
        raise DataError(f"unknown dsprites split {split!r}; use 'train' or 'test'")
    test, train = _split_order()
    index = (test if split == "test" else train)[:examples]
    factors = index_to_factors(index)
    images = (DSpritesCache(cache_dir).images(index) if cache
              else dsprites_images(factors, cache=False))
    return {"image": images, "label": factors[:, 0].astype(np.int32),
            "factors": factors.astype(np.int32)}
