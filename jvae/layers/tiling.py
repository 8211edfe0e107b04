"""Running a function of one tile shape over larger images, blended across overlaps.

A fully convolutional decoder (or encoder) computes each output pixel from a
neighbourhood of the input, plus whatever global statistics it keeps
(GroupNorm, attention). :func:`tiled_apply` cuts an NHWC array into
overlapping tiles of one shape, runs the function on each tile, and blends
the tiles' outputs linearly across each overlap, so memory is bounded by the
tile whatever the image size, and one jitted program of the tile shape serves
every image.

Along each axis the tiles start every ``tile - overlap`` pixels and the last
one is aligned to the far edge. Between two neighbours the output is
cross-faded over a window inside their overlap: the left tile's weight falls
from 1 to 0 across the window while the right tile's rises from 0 to 1, both
linearly and sampled at pixel centres, so the two weights of a pixel sum to 1
and a tile's inner edge gets weight 0 (:func:`axis_weights`). ``margin``
output pixels at each inner edge are left out of the window, with weight 0:
a function whose output pixel depends on input within a radius ``R`` (in
output pixels) is then reproduced exactly when ``margin >= R``, since every
output pixel is taken only from tiles that saw its whole neighbourhood, and
the tiles at the image's border share that border with the whole image.
The 2-D weights are products of the per-axis ones, which again sum to 1.

The function may change the spatial scale (``scale``): a decoder maps a
latent tile to an image tile 8 times larger (``scale=8``), an encoder an
image tile to a latent tile 8 times smaller (``scale=Fraction(1, 8)``); tile
starts then fall on multiples of the scale's denominator, so each output tile
starts on a whole output pixel.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

__all__ = ["AxisPlan", "tile_starts", "fit_tile", "axis_weights", "plan_axis", "tiled_apply"]


class AxisPlan(NamedTuple):
    """Where the tiles lie along one axis, in input and output pixels.

    Attributes:
      starts: first input pixel of each tile.
      tile: tile length in input pixels (at most the axis length).
      out_starts: first output pixel of each tile.
      out_tile: tile length in output pixels.
      out_size: output length of the whole axis.
      weights: ``(len(starts), out_tile)`` blend weights of each tile's output
        pixels; at every output pixel the weights of the tiles covering it
        sum to 1.
    """

    starts: tuple[int, ...]
    tile: int
    out_starts: tuple[int, ...]
    out_tile: int
    out_size: int
    weights: np.ndarray


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> tuple[int, ...]:
    """First pixel of each tile along an axis of ``size`` pixels.

    Tiles start every ``tile - overlap`` pixels (rounded down to a multiple of
    ``align``, so neighbours overlap by at least ``overlap``); the last tile
    is aligned to the far edge. An axis no longer than one tile has one tile.

    Args:
      size: axis length (a multiple of ``align``).
      tile: tile length (a multiple of ``align``).
      overlap: least overlap of neighbouring tiles, ``0 <= overlap < tile``.
      align: every start is a multiple of this.

    Returns:
      The starts, increasing, the first 0 and the last ``max(size - tile, 0)``.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, "
                         f"overlap={overlap}")
    if size % align or tile % align:
        raise ValueError(f"size {size} and tile {tile} must be multiples of {align}")
    if size <= tile:
        return (0,)
    step = max((tile - overlap) // align * align, align)
    starts = list(range(0, size - tile, step))
    return tuple(starts + [size - tile])


def fit_tile(size: int, tile: int, overlap: int, align: int = 1) -> int:
    """The shortest tile, at most ``tile``, that covers ``size`` pixels in as few tiles.

    Tiles of a fixed length waste work where the last one is mostly overlap (a
    512-pixel axis in 256-pixel tiles overlapping by 64 takes 3 tiles, 768
    pixels); the same 3 tiles of 216 pixels take 648. Memory stays bounded by
    ``tile``.

    Args:
      size: axis length (a multiple of ``align``).
      tile: the longest tile (a multiple of ``align``).
      overlap: least overlap of neighbouring tiles.
      align: the tile is a multiple of this.

    Returns:
      A multiple of ``align``, at most ``max(tile, ...)``: ``size`` when one
      tile covers the axis.
    """
    if size <= tile:
        return size
    count = len(tile_starts(size, tile, overlap, align))
    fitted = -(-(size + (count - 1) * overlap) // count)
    fitted = max(-(-fitted // align) * align, overlap + align)
    while fitted < tile and len(tile_starts(size, fitted, overlap, align)) > count:
        fitted += align
    return min(fitted, tile)


def axis_weights(out_starts: Sequence[int], out_tile: int, margin: int = 0) -> np.ndarray:
    """Blend weights of tiles ``[s, s + out_tile)`` that cover an axis, overlapping.

    Between neighbours ``i`` and ``i + 1`` a cross-fade window lies inside
    their overlap ``[s_{i+1}, s_i + out_tile)`` with ``margin`` pixels kept
    clear at both ends: what remains, cut to start no earlier than the
    previous window ends (an aligned last tile can overlap two others). Tile ``i`` has weight 1 between its
    two windows and 0 beyond them; across a window of length ``L`` its weight
    at pixel ``k`` of the window is ``1 - (k + 0.5) / L`` and its
    neighbour's ``(k + 0.5) / L``.

    Args:
      out_starts: increasing tile starts, the first 0, in output pixels.
      out_tile: tile length in output pixels.
      margin: pixels at each inner tile edge given weight 0.

    Returns:
      ``(len(out_starts), out_tile)`` weights; at each pixel of the axis the
      weights of the tiles covering it sum to 1.

    Raises:
      ValueError: neighbours overlap by fewer than ``2 * margin`` pixels, or
        leave a gap.
    """
    n = len(out_starts)
    weights = np.ones((n, out_tile), np.float64)
    previous_end = 0
    for i in range(n - 1):
        lo, hi = out_starts[i + 1] + margin, out_starts[i] + out_tile - margin
        if hi < lo:
            raise ValueError(f"tiles at {out_starts[i]} and {out_starts[i + 1]} (length "
                             f"{out_tile}) overlap by fewer than 2 * margin = {2 * margin} "
                             "pixels")
        start, end = max(lo, previous_end), hi
        fade = (np.arange(end - start) + 0.5) / max(end - start, 1)
        # Tile i: 1 before the window, falling across it, 0 after it.
        a = start - out_starts[i]
        weights[i, a:a + len(fade)] *= 1.0 - fade
        weights[i, a + len(fade):] = 0.0
        # Tile i + 1: 0 before the window, rising across it.
        b = start - out_starts[i + 1]
        weights[i + 1, :b] = 0.0
        weights[i + 1, b:b + len(fade)] *= fade
        previous_end = end
    return weights


def _scaled(value: int, scale: Fraction, what: str) -> int:
    out = value * scale
    if out.denominator != 1:
        raise ValueError(f"{what} {value} times the scale {scale} is not a whole number of "
                         "output pixels")
    return int(out)


def plan_axis(size: int, tile: int, overlap: int, scale: Fraction | int = 1,
              margin: int = 0) -> AxisPlan:
    """The tiles of one axis and their blend weights (see :func:`tile_starts`).

    Args:
      size: axis length in input pixels.
      tile: tile length in input pixels; an axis shorter than it has one tile
        of the axis's length.
      overlap: least overlap of neighbours in input pixels.
      scale: output pixels per input pixel.
      margin: output pixels at each inner tile edge given weight 0.

    Returns:
      An :class:`AxisPlan`.
    """
    scale = Fraction(scale)
    align = scale.denominator
    tile = min(tile, size)
    starts = tile_starts(size, tile, min(overlap, tile - 1), align)
    out_tile = _scaled(tile, scale, "tile")
    out_starts = tuple(_scaled(s, scale, "tile start") for s in starts)
    weights = axis_weights(out_starts, out_tile, margin)
    return AxisPlan(starts, tile, out_starts, out_tile, _scaled(size, scale, "size"), weights)


def tiled_apply(fn: Callable[[np.ndarray], Any], x: np.ndarray, tile: int | Sequence[int], *,
                overlap: int | Sequence[int], scale: Fraction | int = 1, margin: int = 0,
                batch: int = 1) -> Any:
    """``fn`` over ``x`` in overlapping tiles, the outputs blended across overlaps.

    ``fn`` sees arrays of one shape only, ``(batch * N, th, tw, C)`` (each
    image's tile at a position, for ``batch`` positions; the last group is
    padded with copies of its first position): pass a jitted function and it
    compiles once. Outputs are accumulated in host memory, so device memory
    is bounded by one call of ``fn``.

    Args:
      fn: ``(B, th, tw, C) -> (B, th * scale, tw * scale, C')``, or a pytree
        (dict) of such arrays.
      x: ``(N, H, W, C)`` input; ``H * scale`` and ``W * scale`` whole numbers.
      tile: ``(th, tw)`` tile size in input pixels (one int: square); an axis
        shorter than the tile has one tile of its length.
      overlap: least overlap of neighbouring tiles in input pixels (per axis
        or one int), less than the tile.
      scale: output pixels per input pixel (e.g. 8, or ``Fraction(1, 8)``).
      margin: output pixels at each inner tile edge given weight 0 (at most
        half the overlap in output pixels).
      batch: tile positions per call of ``fn``.

    Returns:
      ``fn``'s output for the whole of ``x``: float32 NumPy arrays
      ``(N, H * scale, W * scale, C')`` with ``fn``'s pytree structure.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"tiled_apply takes NHWC arrays, got shape {x.shape}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    tiles = (tile, tile) if isinstance(tile, int) else tuple(tile)
    overlaps = (overlap, overlap) if isinstance(overlap, int) else tuple(overlap)
    ys, xs = (plan_axis(x.shape[1 + a], tiles[a], overlaps[a], scale, margin) for a in (0, 1))
    positions = [(i, j) for i in range(len(ys.starts)) for j in range(len(xs.starts))]
    n = x.shape[0]
    out = treedef = None
    for k in range(0, len(positions), batch):
        group = positions[k:k + batch]
        padded = group + [group[0]] * (batch - len(group))
        inputs = np.concatenate([x[:, ys.starts[i]:ys.starts[i] + ys.tile,
                                   xs.starts[j]:xs.starts[j] + xs.tile] for i, j in padded])
        leaves, treedef = jax.tree.flatten(jax.device_get(fn(inputs)))
        if out is None:
            out = [np.zeros((n, ys.out_size, xs.out_size, leaf.shape[-1]), np.float32)
                   for leaf in leaves]
        for g, (i, j) in enumerate(group):
            w = (ys.weights[i][:, None] * xs.weights[j][None, :])[None, :, :, None]
            rows = slice(ys.out_starts[i], ys.out_starts[i] + ys.out_tile)
            cols = slice(xs.out_starts[j], xs.out_starts[j] + xs.out_tile)
            for acc, leaf in zip(out, leaves):
                acc[:, rows, cols] += (w * np.asarray(leaf)[g * n:(g + 1) * n]).astype(np.float32)
    return jax.tree.unflatten(treedef, out)
