"""Inference at each image's own size for fully convolutional nets, whole or in tiles.

A net is fully convolutional when its parameters do not depend on the image's
height and width (:func:`total_stride` checks it by building the model at
another size and comparing parameter shapes, nothing initialised): then the
trained parameters apply at any size that is a multiple of the net's total
stride. :class:`NativeNet` runs such a run's model on each image at its own
size: the image is reflect-padded up to a multiple of the stride and the
output cropped back, and one model is built and compiled per padded shape.

Large images run in overlapping tiles (:func:`jvae.layers.tiling.tiled_apply`)
of one compiled shape, so device memory is bounded by the tile. By default
(:attr:`Tiling.tile` None) an image is tiled only when the whole-image
program would not fit the device: the program is compiled for the image's
shape and its memory plan (:func:`~jvae.devices.budget.compiled_bytes`)
compared with :func:`~jvae.devices.budget.device_memory_budget`; a program
that fits is the one that runs, so the check costs no extra compilation.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import numpy as np

from jvae.base import VAE, JvaeError
from jvae.devices.budget import compiled_bytes, device_memory_budget
from jvae.inference import InferenceError, make_inference
from jvae.layers.spec_nets import resolve_spec_pair
from jvae.layers.spec_shapes import receptive_radius
from jvae.layers.tiling import fit_tile, tiled_apply
from jvae.model import mixed_precision
from jvae.training.experiment import DataSpec, build

__all__ = ["AUTO_TILES", "Tiling", "total_stride", "reflect_pad", "NativeNet"]

# Tile sizes (image pixels) the automatic choice tries, largest first.
AUTO_TILES = (512, 256, 128, 64)

# The programs each kind of call runs when tiled.
_TILED_KINDS = {"encode": ("encode",), "decode": ("decode",), "reconstruct": ("encode", "decode")}


class Tiling(NamedTuple):
    """How :class:`NativeNet` cuts images into tiles.

    Attributes:
      tile: tile size in image pixels (a multiple of the net's stride); 0
        never tiles; None tiles only images whose whole-image program would
        not fit the device memory budget.
      overlap: overlap of neighbouring tiles as a fraction of the tile.
    """

    tile: int | None = None
    overlap: float = 0.25


def _model_config(cfg: Any, dtype: str | None = None) -> Any:
    """``cfg`` without the loss terms that build networks or read weights of their own
    (the discriminator, LPIPS): only the model is wanted here; in float32 when ``dtype``
    will set the compute dtype."""
    if dataclasses.is_dataclass(cfg):
        extra = {} if dtype is None else {"compute_dtype": "float32"}
        return dataclasses.replace(cfg, lpips_weight=0.0, adv_weight=0.0, **extra)
    return cfg


def _build_vae(cfg: Any, shape: tuple[int, ...], num_classes: int | None,
               dtype: str | None = None) -> VAE:
    vae = build(_model_config(cfg, dtype), DataSpec(tuple(shape), num_classes)).vae
    return vae if dtype is None else mixed_precision(vae, dtype)


def _param_shapes(vae: VAE, shape: tuple[int, ...], num_classes: int | None,
                  params: Any = None) -> list:
    if params is not None:
        return [(tuple(a.shape), a.dtype) for a in jax.tree.leaves(params)]
    x = jax.ShapeDtypeStruct((1, *shape), np.float32)
    cond = None if not num_classes else jax.ShapeDtypeStruct((1, num_classes), np.float32)
    params = jax.eval_shape(vae.init, jax.random.key(0), x, cond)
    return [(tuple(a.shape), a.dtype) for a in jax.tree.leaves(params)]


def total_stride(cfg: Any, vae: VAE, data_shape: tuple[int, ...],
                 num_classes: int | None = None, params: Any = None) -> int | None:
    """The net's total stride if it is fully convolutional, else None.

    Fully convolutional: images ``(H, W, C)`` and a spatial latent
    ``(H / s, W / s, c)``, and the model built for ``(H + s, W + 2 s, C)`` has
    a latent ``(H / s + 1, W / s + 2, c)`` and parameters of the same shapes
    (compared with ``jax.eval_shape``: nothing is initialised).

    Args:
      cfg: the run's settings.
      vae: its model at the training size.
      data_shape: the training data's per-example shape.
      num_classes: labels of a conditional model (None otherwise).
      params: its parameters, whose shapes spare tracing its initialisation.
    """
    latent = tuple(vae.latent_shape)
    if len(data_shape) != 3 or len(latent) != 3:
        return None
    (height, width, channels), (h, w, c) = data_shape, latent
    if height % h or width % w or height // h != width // w:
        return None
    s = height // h
    probe = (height + s, width + 2 * s, channels)
    try:
        other = _build_vae(cfg, probe, num_classes)
        if tuple(other.latent_shape) != (h + 1, w + 2, c):
            return None
        same = (_param_shapes(vae, tuple(data_shape), num_classes, params)
                == _param_shapes(other, probe, num_classes))
    except (JvaeError, ValueError, TypeError):  # a net that cannot be built at that size
        return None
    return s if same else None


def _receptive_radii(cfg: Any) -> dict[str, float | None]:
    """The encoder's and decoder's receptive radii in their input pixels (spec nets; None
    where unbounded or unknown)."""
    if getattr(cfg, "net", None) != "spec":
        return {"encoder": None, "decoder": None}
    pair = resolve_spec_pair(cfg.encoder_spec, cfg.decoder_spec)
    return {"encoder": receptive_radius(pair.encoder), "decoder": receptive_radius(pair.decoder)}


def reflect_pad(image: np.ndarray, multiple: int) -> np.ndarray:
    """``(H, W, C)`` reflect-padded at the bottom and right up to multiples of ``multiple``."""
    height, width = image.shape[:2]
    if not (height % multiple or width % multiple):
        return image
    pad = ((0, -height % multiple), (0, -width % multiple)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad, mode="reflect")


class NativeNet:
    """A fully convolutional run's model at any image size, whole or in tiles.

    Every call takes and returns one example (no batch axis). Models are
    built and their programs compiled once per padded shape (and once per
    tile shape).

    Attributes:
      stride: the net's total stride.
      tiles: the tile (image pixels, 0 for whole) each call ran with, in order.
    """

    def __init__(self, cfg: Any, params: Any, vae: VAE, data_shape: tuple[int, ...],
                 stride: int, *, num_classes: int | None = None, tiling: Tiling | None = None,
                 budget: int | None = None, dtype: str | None = None):
        """Args:
          cfg: the run's settings.
          params: its parameters.
          vae: its model at the training size ``data_shape``.
          data_shape: the training data's ``(H, W, C)``.
          stride: the net's total stride (:func:`total_stride`).
          num_classes: labels of a conditional model (None otherwise).
          tiling: how to tile (:class:`Tiling`; default: automatically).
          budget: device bytes a program may plan for (default:
            :func:`~jvae.devices.budget.device_memory_budget`).
          dtype: the nets' compute dtype (:func:`~jvae.model.mixed_precision`);
            None: the run's ``compute_dtype``. ``vae`` must already compute in it.

        Raises:
          InferenceError: a tile that is no multiple of the stride, or an
            overlap outside [0, 1).
        """
        tiling = tiling or Tiling()
        if tiling.tile is not None and (tiling.tile < 0 or tiling.tile % stride):
            raise InferenceError(f"--tile {tiling.tile} must be 0 (off) or a positive multiple "
                                 f"of the net's total stride {stride}")
        if not 0 <= tiling.overlap < 1:
            raise InferenceError(f"--tile-overlap {tiling.overlap} must lie in [0, 1)")
        self.cfg, self.params, self.stride, self.tiling = cfg, params, stride, tiling
        self.num_classes, self.dtype = num_classes, dtype
        self.channels = int(data_shape[-1])
        self.budget = budget
        self.tiles: list[int] = []
        self._vaes: dict[tuple[int, ...], VAE] = {tuple(data_shape): vae}
        self._radii = _receptive_radii(cfg)
        self._programs: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._plans: dict[tuple[str, tuple[int, ...]], int] = {}

    @property
    def tiled(self) -> bool:
        """Whether any call ran in tiles."""
        return any(self.tiles)

    def vae(self, shape: tuple[int, ...]) -> VAE:
        """The model for images of ``shape`` (built once)."""
        shape = tuple(int(d) for d in shape)
        if shape not in self._vaes:
            self._vaes[shape] = _build_vae(self.cfg, shape, self.num_classes, self.dtype)
        return self._vaes[shape]

    def _program(self, kind: str, shape: tuple[int, ...]):
        """The compiled ``encode``/``decode``/``reconstruct`` of one example of ``shape``."""
        key = (kind, shape)
        if key not in self._programs:
            vae = self.vae(shape)
            fn = getattr(make_inference(vae, 1), kind)
            x_shape = vae.latent_shape if kind == "decode" else shape
            x = jax.ShapeDtypeStruct((1, *x_shape), np.float32)
            cond = (None if not self.num_classes
                    else jax.ShapeDtypeStruct((1, self.num_classes), np.float32))
            self._programs[key] = fn.lower(self.params, x, cond).compile()
        return self._programs[key]

    def _fits(self, kind: str, shape: tuple[int, ...]) -> bool:
        if self.budget is None:
            self.budget = device_memory_budget()
        return compiled_bytes(self._program(kind, shape)) <= self.budget

    def _tile_shape(self, tile: int, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The tile an image of ``shape`` runs in: at most ``tile`` a side, as short as
        covering it in as few tiles allows (:func:`~jvae.layers.tiling.fit_tile`)."""
        overlap = self._overlap(tile) * self.stride
        return (fit_tile(shape[0], tile, overlap, self.stride),
                fit_tile(shape[1], tile, overlap, self.stride), shape[2])

    def _plan(self, kind: str, shape: tuple[int, ...]) -> int:
        """The tile (image pixels) for a call on a padded image of ``shape``; 0: whole."""
        key = (kind, shape)
        if key in self._plans:
            return self._plans[key]
        tile = self.tiling.tile
        if tile is None:
            tile = 0 if self._fits(kind, shape) else self._auto_tile(kind, shape)
        elif tile >= max(shape[:2]):
            tile = 0  # one tile is the whole image
        self._plans[key] = tile
        return tile

    def _auto_tile(self, kind: str, shape: tuple[int, ...]) -> int:
        s = self.stride
        for size in dict.fromkeys(max(t // s * s, s) for t in AUTO_TILES):
            if size >= max(shape[:2]):
                continue
            if all(self._fits(k, self._tile_shape(size, shape)) for k in _TILED_KINDS[kind]):
                return size
        raise InferenceError(f"a {shape[0]}x{shape[1]} image does not fit the device's memory "
                             f"even in tiles of {max(min(AUTO_TILES) // s * s, s)} pixels; free "
                             "memory or run on a larger device")

    def _overlap(self, tile: int) -> int:
        """Overlap of neighbouring latent tiles, in latent pixels."""
        return int(round(self.tiling.overlap * tile / self.stride))

    def _cond(self, cond) -> Any:
        return None if cond is None else np.asarray(cond, np.float32).reshape(1, -1)

    def _margin(self, part: str, overlap: int) -> int:
        """Output pixels at each inner tile edge left out of the blend: the net's receptive
        radius where it is bounded (then tiles join exactly once the overlap is at least
        twice it), at most half the ``overlap`` (output pixels); 0 for nets that see the
        whole image (GroupNorm, attention) or whose reach is unknown."""
        radius = self._radii[part]
        if radius is None:
            return 0
        out = math.ceil(radius / self.stride) if part == "encoder" else math.ceil(
            radius * self.stride)
        return min(out, overlap // 2)

    def _encode(self, x: np.ndarray, cond, tile: int) -> dict[str, np.ndarray]:
        if not tile:
            out = self._program("encode", x.shape[1:])(self.params, x, cond)
            return {k: np.asarray(v) for k, v in out.items()}
        shape = self._tile_shape(tile, x.shape[1:])
        program = self._program("encode", shape)
        overlap = self._overlap(tile)
        return tiled_apply(lambda t: program(self.params, t, cond), x, shape[:2],
                           overlap=overlap * self.stride, scale=Fraction(1, self.stride),
                           margin=self._margin("encoder", overlap))

    def _decode(self, z: np.ndarray, cond, tile: int) -> np.ndarray:
        shape = (z.shape[1] * self.stride, z.shape[2] * self.stride, self.channels)
        if not tile:
            return np.asarray(self._program("decode", shape)(self.params, z, cond))
        tile_shape = self._tile_shape(tile, shape)
        program = self._program("decode", tile_shape)
        overlap = self._overlap(tile)
        return tiled_apply(lambda t: program(self.params, t, cond), z,
                           (tile_shape[0] // self.stride, tile_shape[1] // self.stride),
                           overlap=overlap, scale=self.stride,
                           margin=self._margin("decoder", overlap * self.stride))

    def encode(self, image: np.ndarray, cond=None) -> dict[str, np.ndarray]:
        """``{"mean", "scale"}`` of ``q(z|x)`` for one ``(H, W, C)`` image at its own size:
        ``(ceil(H / s), ceil(W / s), c)`` codes of the reflect-padded image (in tiles, both
        blended across the overlaps)."""
        x = reflect_pad(np.asarray(image, np.float32), self.stride)[None]
        tile = self._plan("encode", x.shape[1:])
        self.tiles.append(tile)
        return {k: v[0] for k, v in self._encode(x, self._cond(cond), tile).items()}

    def decode(self, z: np.ndarray, cond=None, size: tuple[int, int] | None = None) -> np.ndarray:
        """``E[x|z]`` of one ``(h, w, c)`` code: ``(h s, w s, C)``, cropped to ``size``."""
        z = np.asarray(z, np.float32)[None]
        tile = self._plan("decode", (z.shape[1] * self.stride, z.shape[2] * self.stride,
                                     self.channels))
        self.tiles.append(tile)
        out = self._decode(z, self._cond(cond), tile)[0]
        return out if size is None else out[:size[0], :size[1]]

    def reconstruct(self, image: np.ndarray, cond=None) -> np.ndarray:
        """``E[x|z]`` at the posterior mean of one ``(H, W, C)`` image, at its size."""
        image = np.asarray(image, np.float32)
        x = reflect_pad(image, self.stride)[None]
        cond = self._cond(cond)
        tile = self._plan("reconstruct", x.shape[1:])
        self.tiles.append(tile)
        if not tile:
            out = np.asarray(self._program("reconstruct", x.shape[1:])(self.params, x, cond))
        else:
            z = self._encode(x, cond, tile)["mean"]
            out = self._decode(z, cond, tile)
        return out[0, :image.shape[0], :image.shape[1]]
