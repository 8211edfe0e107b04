"""LPIPS, the learned perceptual image distance, as pure JAX functions over a params pytree.

LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as
a Perceptual Metric", arXiv:1801.03924) compares two images through the
activations of an ImageNet classifier, as the ``lpips`` 0.1.4 package computes
it (``lpips.LPIPS(net='vgg', lpips=True, spatial=False)``, version 0.1):

1. the scaling layer: images in [-1, 1] are shifted and scaled per channel,
   ``(x - SHIFT) / SCALE``, to the ImageNet statistics the backbone expects;
2. the backbone's activations at five taps: for VGG16 (Simonyan & Zisserman,
   2015, arXiv:1409.1556) relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of
   torchvision's ``vgg16().features`` (3x3 convolutions with padding 1, 2x2
   max pools between the taps); for AlexNet the ReLUs after each of its five
   convolutions;
3. each activation is normalized to unit length along channels,
   ``f / (||f|| + 1e-10)``;
4. the squared difference of the two images' normalized activations is
   weighted per channel by the layer's 1x1 bias-free "lin" head (learned on
   human judgements), averaged over space, and summed over the five layers.

Images are NHWC in [-1, 1] (in [0, 1] with ``normalize=True``). :func:`lpips_distance`
returns one distance per image, shape ``(B,)``; it is jit-able and
differentiable in both images (use it as a loss term). Parameters come from
torchvision's and lpips' PyTorch state dicts by :func:`params_from_state_dicts`,
or from the local weight store (:mod:`jvae.metrics.weights`, after
``jvae weights fetch lpips``)::

    params = weights.load("lpips")      # or params_from_state_dicts(backbone_sd, heads_sd)
    distance = lpips_fn(params)(x, y)   # x, y: (B, H, W, 3) in [-1, 1] -> (B,)
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.base import Array, ConfigError, JvaeError

__all__ = ["SHIFT", "SCALE", "EPS", "BackboneConv", "Backbone", "BACKBONES", "LpipsError",
           "params_from_state_dicts", "scale_inputs", "backbone_features", "normalize_channels",
           "feature_distances", "layer_distances", "lpips_distance", "lpips_fn"]

# lpips' scaling layer (v0.1): x -> (x - SHIFT) / SCALE per RGB channel.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# lpips' normalize_tensor: f / (sqrt(sum_c f^2) + EPS).
EPS = 1e-10

LpipsParams = dict[str, dict[str, dict[str, Array]]]


class LpipsError(JvaeError, ValueError):
    """State dicts LPIPS cannot use; the message names the tensor and the fix."""


class BackboneConv(NamedTuple):
    """One convolution of the backbone, followed by a ReLU.

    Attributes:
      index: its position in torchvision's ``features`` (``features.<index>.weight``).
      in_channels: input channels.
      out_channels: output channels.
      kernel: kernel height and width.
      stride: the same along both axes.
      padding: zero padding on every side.
    """

    index: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 1


class Backbone(NamedTuple):
    """A backbone as lpips slices it.

    Attributes:
      slices: per tap, whether it starts with a max pool and the convolutions
        (each with its ReLU) up to the tap.
      pool: max-pool window and stride (no padding, floor of odd sizes).
      channels: channels of the five taps, the widths of the lin heads.
    """

    slices: tuple[tuple[bool, tuple[BackboneConv, ...]], ...]
    pool: tuple[int, int]
    channels: tuple[int, ...]


def _vgg16() -> Backbone:
    widths = ((3, 64, 64), (64, 128, 128), (128, 256, 256, 256), (256, 512, 512, 512), (512, 512, 512, 512))
    slices, index = [], 0
    for i, chans in enumerate(widths):
        index += i > 0  # the max pool before the slice
        convs = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            convs.append(BackboneConv(index, cin, cout, 3))
            index += 2  # convolution and ReLU
        slices.append((i > 0, tuple(convs)))
    return Backbone(tuple(slices), (2, 2), (64, 128, 256, 512, 512))


# lpips' backbones by its ``net`` names: VGG16 (configuration D) and torchvision's AlexNet
# (Krizhevsky, 2014, arXiv:1404.5997: 64-192-384-256-256 channels, 3x3 stride-2 pools).
BACKBONES: dict[str, Backbone] = {
    "vgg": _vgg16(),
    "alex": Backbone(
        ((False, (BackboneConv(0, 3, 64, 11, 4, 2),)), (True, (BackboneConv(3, 64, 192, 5, 1, 2),)),
         (True, (BackboneConv(6, 192, 384, 3),)), (False, (BackboneConv(8, 384, 256, 3),)),
         (False, (BackboneConv(10, 256, 256, 3),))),
        (3, 2), (64, 192, 384, 256, 256)),
}


def _convs(arch: Backbone) -> tuple[BackboneConv, ...]:
    return tuple(c for _, convs in arch.slices for c in convs)


def _backbone(net: str) -> Backbone:
    if net not in BACKBONES:
        raise ConfigError(f"unknown LPIPS network {net!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[net]


def _net_of(params: Mapping[str, Any]) -> str:
    """The backbone a params pytree holds, told by its layer names."""
    names = set(params.get("backbone", {}))
    for net, arch in BACKBONES.items():
        if names == {f"features_{c.index}" for c in _convs(arch)}:
            return net
    raise LpipsError(f"LPIPS params hold backbone layers {sorted(names)[:4]}..., which are neither VGG16's "
                     "nor AlexNet's; build them with params_from_state_dicts")


# lpips' own module names: net.slice<k>.<features index>.weight, lin<k>.model.<i>.weight (also lins.<k>....).
_BACKBONE_KEY = re.compile(r"^(?:module\.)?(?:features\.|net\.slice\d\.)?(\d+)\.(weight|bias)$")
_HEAD_KEY = re.compile(r"^(?:module\.)?(?:lin(\d)|lins\.(\d))\.model\.\d\.weight$")


def _tensor(tensors: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if key not in tensors:
        raise LpipsError(f"the {what} has no {key}; pass {what}")
    value = np.asarray(tensors[key])
    if value.shape != shape:
        raise LpipsError(f"the {what}'s {key} is {value.shape}, expected {shape}; pass {what}")
    return value.astype(np.float32)


def params_from_state_dicts(backbone: Mapping[str, Any], heads: Mapping[str, Any], net: str = "vgg") -> LpipsParams:
    """Converts PyTorch state dicts into LPIPS params.

    Args:
      backbone: torchvision's ``vgg16()`` (or ``alexnet()``) state dict, keys
        ``features.0.weight``, ``features.0.bias``, ... (the classifier is
        ignored), or lpips' spelling of them (``net.slice1.0.weight``, as in
        ``lpips.LPIPS(...).state_dict()``).
      heads: lpips' lin heads, keys ``lin0.model.1.weight`` ... ``lin4...``
        (the ``weights/v0.1/vgg.pth`` file of the lpips package, or an
        ``lpips.LPIPS`` state dict; ``lins.<k>`` and ``model.0`` spellings too).
      net: "vgg" or "alex".

    Returns:
      ``{"backbone": {"features_<i>": {"kernel": (kh, kw, in, out), "bias": (out,)}},
      "heads": {"lin<k>": {"kernel": (1, 1, channels, 1)}}}``, float32 numpy
      arrays (kernels transposed from torch's OIHW to HWIO).

    Raises:
      ConfigError: an unknown ``net``.
      LpipsError: a missing tensor or one of the wrong shape.
    """
    arch = _backbone(net)
    feats: dict[str, np.ndarray] = {}
    for key, value in backbone.items():
        m = _BACKBONE_KEY.match(key)
        if m:
            feats[f"{m[1]}.{m[2]}"] = value
    lins: dict[str, np.ndarray] = {}
    for key, value in heads.items():
        m = _HEAD_KEY.match(key)
        if m:
            lins.setdefault(m[1] or m[2], value)
    what = f"torchvision {'vgg16' if net == 'vgg' else 'alexnet'} state dict (features.<i>.weight/bias)"
    out: LpipsParams = {"backbone": {}, "heads": {}}
    for c in _convs(arch):
        w = _tensor(feats, f"{c.index}.weight", (c.out_channels, c.in_channels, c.kernel, c.kernel), what)
        b = _tensor(feats, f"{c.index}.bias", (c.out_channels,), what)
        out["backbone"][f"features_{c.index}"] = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
                                                  "bias": b}
    head_what = f"lpips {net}.pth heads (lin<k>.model.1.weight)"
    for k, chans in enumerate(arch.channels):
        w = _tensor(lins, str(k), (1, chans, 1, 1), head_what)
        out["heads"][f"lin{k}"] = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0))}
    return out


def scale_inputs(images: Array) -> Array:
    """lpips' scaling layer: ``(x - SHIFT) / SCALE`` per channel of NHWC images in [-1, 1]."""
    return (images - jnp.asarray(SHIFT, images.dtype)) / jnp.asarray(SCALE, images.dtype)


def _max_pool(x: Array, window: int, stride: int) -> Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")


def backbone_features(params: LpipsParams, images: Array, *,
                      precision: lax.Precision | str | None = lax.Precision.HIGHEST) -> list[Array]:
    """The backbone's five tapped activations (after the scaling layer).

    Args:
      params: from :func:`params_from_state_dicts`.
      images: ``(B, H, W, 3)`` already scaled by :func:`scale_inputs`.
      precision: of the convolutions; HIGHEST (full float32 on every backend,
        the reference's numbers) by default, DEFAULT for speed on GPUs/TPUs.

    Returns:
      Five ``(B, h, w, channels)`` arrays, relu1_2 ... relu5_3 for VGG16.
    """
    arch = BACKBONES[_net_of(params)]
    taps, x = [], images
    for pool_first, convs in arch.slices:
        if pool_first:
            x = _max_pool(x, *arch.pool)
        for c in convs:
            p = params["backbone"][f"features_{c.index}"]
            x = lax.conv_general_dilated(x, jnp.asarray(p["kernel"], x.dtype), (c.stride, c.stride),
                                         ((c.padding, c.padding),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=precision)
            x = jax.nn.relu(x + jnp.asarray(p["bias"], x.dtype))
        taps.append(x)
    return taps


def normalize_channels(features: Array, eps: float = EPS) -> Array:
    """``f / (||f||_2 + eps)`` along the last (channel) axis, as lpips' ``normalize_tensor``.

    Where a pixel's activations are all zero the gradient is that of ``f / eps``
    (finite), where torch's square root would give NaN.
    """
    squares = jnp.sum(features * features, axis=-1, keepdims=True)
    positive = squares > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)
    return features / (norm + eps)


def feature_distances(params: LpipsParams, features_x: list[Array], features_y: list[Array]) -> list[Array]:
    """The per-layer LPIPS terms of two images' backbone taps (steps 3 and 4 of the module doc).

    Args:
      params: from :func:`params_from_state_dicts` (only the heads are used).
      features_x: :func:`backbone_features` of the first images.
      features_y: those of the second images (the same shapes).

    Returns:
      Five ``(B,)`` arrays: per layer, the head-weighted squared difference of
      the unit-normalized activations, averaged over space.
    """
    out = []
    for k, (fx, fy) in enumerate(zip(features_x, features_y, strict=True)):
        diff = (normalize_channels(fx) - normalize_channels(fy)) ** 2
        weights = jnp.asarray(params["heads"][f"lin{k}"]["kernel"][0, 0, :, 0], diff.dtype)
        out.append(jnp.mean(jnp.einsum("bhwc,c->bhw", diff, weights, precision=lax.Precision.HIGHEST), axis=(1, 2)))
    return out


def layer_distances(params: LpipsParams, x: Array, y: Array, *, normalize: bool = False,
                    precision: lax.Precision | str | None = lax.Precision.HIGHEST) -> list[Array]:
    """Each layer's contribution to LPIPS (lpips' ``retPerLayer``); they sum to :func:`lpips_distance`.

    Args:
      params: from :func:`params_from_state_dicts`.
      x: ``(B, H, W, 3)`` images in [-1, 1] (in [0, 1] with ``normalize``).
      y: images of the same shape.
      normalize: map inputs from [0, 1] to [-1, 1] first (lpips' ``normalize=True``).
      precision: of the backbone's convolutions (see :func:`backbone_features`).

    Returns:
      Five ``(B,)`` arrays.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise LpipsError(f"LPIPS compares two (B, H, W, 3) batches of the same shape; got {x.shape} and "
                         f"{y.shape}")
    if normalize:
        x, y = 2 * x - 1, 2 * y - 1
    batch = x.shape[0]
    feats = backbone_features(params, scale_inputs(jnp.concatenate([x, y])), precision=precision)
    return feature_distances(params, [f[:batch] for f in feats], [f[batch:] for f in feats])


def lpips_distance(params: LpipsParams, x: Array, y: Array, *, normalize: bool = False,
          precision: lax.Precision | str | None = lax.Precision.HIGHEST) -> Array:
    """The LPIPS distance of each pair of images (Zhang et al., 2018).

    Args:
      params: from :func:`params_from_state_dicts` (or ``jvae.metrics.weights.load("lpips")``).
      x: ``(B, H, W, 3)`` images in [-1, 1] (in [0, 1] with ``normalize``).
      y: images of the same shape.
      normalize: map inputs from [0, 1] to [-1, 1] first.
      precision: of the backbone's convolutions (see :func:`backbone_features`).

    Returns:
      ``(B,)`` distances; 0 for identical images.
    """
    return functools.reduce(jnp.add, layer_distances(params, x, y, normalize=normalize, precision=precision))


def lpips_fn(params: LpipsParams, *, normalize: bool = False,
             precision: lax.Precision | str | None = lax.Precision.HIGHEST) -> Callable[[Array, Array], Array]:
    """A jitted ``(x, y) -> (B,)`` LPIPS with ``params`` bound (see :func:`lpips_distance`).

    Args:
      params: from :func:`params_from_state_dicts`.
      normalize: inputs are in [0, 1] rather than [-1, 1].
      precision: of the backbone's convolutions.

    Returns:
      The distance function; differentiable in both images.
    """
    params = jax.tree.map(jnp.asarray, params)
    compute = jax.jit(functools.partial(lpips_distance, normalize=normalize, precision=precision))
    return lambda x, y: compute(params, x, y)
