"""The Inception v3 network FID is measured with, as pure JAX functions over a params pytree.

This is the network pytorch-fid 0.3.0 builds for FID (``InceptionV3([3])`` with
``use_fid_inception=True``, ``resize_input=True``, ``normalize_input=True``):
Inception v3 (Szegedy et al., 2016, "Rethinking the Inception Architecture for
Computer Vision", arXiv:1512.00567) as TensorFlow's 2015-12-05 graph computes it,
the graph the FID of Heusel et al. (2017, arXiv:1706.08500) is defined with:

* images are resized to 299x299 bilinearly with half-pixel centres and no
  antialiasing (``F.interpolate(mode='bilinear', align_corners=False)``,
  written out here with torch's float32 source indices and weights; not
  ``jax.image.resize``, which antialiases when shrinking), then scaled from
  [0, 1] to [-1, 1];
* every convolution is bias-free, followed by batch normalization in inference
  mode (``eps = 0.001``) and a ReLU;
* the average pools inside the Mixed_5*, Mixed_6b-e and Mixed_7b blocks do not
  count the zero padding, and the pool branch of the last block (Mixed_7c) is a
  3x3 max pool;
* the features are the 2048 channels of the last block averaged over space
  (pool3).

Images are NHWC in [0, 1] (or ``uint8`` in [0, 255]), any height and width,
with 1 channel (replicated to 3) or 3. Parameters come from pytorch-fid's state
dict, or from the FID weights file it downloads, by :func:`params_from_state_dict`.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.base import Array, JvaeError

__all__ = ["IMAGE_SIZE", "FEATURE_DIM", "BN_EPS", "InceptionParams", "ConvSpec", "InceptionError", "ARCHITECTURE",
           "state_dict_shapes", "params_from_state_dict", "resize_bilinear", "inception_features"]

IMAGE_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3

InceptionParams = dict[str, dict[str, dict[str, Array]]]


class InceptionError(JvaeError, ValueError):
    """Weights or images the FID Inception network cannot use; the message names the fix."""


class ConvSpec(NamedTuple):
    """One bias-free convolution followed by batch normalization and a ReLU.

    Attributes:
      in_channels: input channels.
      out_channels: output channels.
      kernel: ``(height, width)`` of the kernel.
      stride: the same along both axes.
      padding: ``(height, width)`` zeros added on each side.
    """

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]


def _conv(cin: int, cout: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
          valid: bool = False) -> ConvSpec:
    """A ConvSpec padded to keep the size (odd kernels, stride 1) unless ``valid`` or strided."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    same = not valid and stride == 1
    return ConvSpec(cin, cout, (kh, kw), stride, ((kh - 1) // 2, (kw - 1) // 2) if same else (0, 0))


def _block_a(cin: int, pool: int) -> dict[str, ConvSpec]:
    return {"branch1x1": _conv(cin, 64),
            "branch5x5_1": _conv(cin, 48), "branch5x5_2": _conv(48, 64, 5),
            "branch3x3dbl_1": _conv(cin, 64), "branch3x3dbl_2": _conv(64, 96, 3),
            "branch3x3dbl_3": _conv(96, 96, 3),
            "branch_pool": _conv(cin, pool)}


def _block_b(cin: int) -> dict[str, ConvSpec]:
    return {"branch3x3": _conv(cin, 384, 3, stride=2),
            "branch3x3dbl_1": _conv(cin, 64), "branch3x3dbl_2": _conv(64, 96, 3),
            "branch3x3dbl_3": _conv(96, 96, 3, stride=2)}


def _block_c(cin: int, c7: int) -> dict[str, ConvSpec]:
    return {"branch1x1": _conv(cin, 192),
            "branch7x7_1": _conv(cin, c7), "branch7x7_2": _conv(c7, c7, (1, 7)),
            "branch7x7_3": _conv(c7, 192, (7, 1)),
            "branch7x7dbl_1": _conv(cin, c7), "branch7x7dbl_2": _conv(c7, c7, (7, 1)),
            "branch7x7dbl_3": _conv(c7, c7, (1, 7)), "branch7x7dbl_4": _conv(c7, c7, (7, 1)),
            "branch7x7dbl_5": _conv(c7, 192, (1, 7)),
            "branch_pool": _conv(cin, 192)}


def _block_d(cin: int) -> dict[str, ConvSpec]:
    return {"branch3x3_1": _conv(cin, 192), "branch3x3_2": _conv(192, 320, 3, stride=2),
            "branch7x7x3_1": _conv(cin, 192), "branch7x7x3_2": _conv(192, 192, (1, 7)),
            "branch7x7x3_3": _conv(192, 192, (7, 1)), "branch7x7x3_4": _conv(192, 192, 3, stride=2)}


def _block_e(cin: int) -> dict[str, ConvSpec]:
    return {"branch1x1": _conv(cin, 320),
            "branch3x3_1": _conv(cin, 384), "branch3x3_2a": _conv(384, 384, (1, 3)),
            "branch3x3_2b": _conv(384, 384, (3, 1)),
            "branch3x3dbl_1": _conv(cin, 448), "branch3x3dbl_2": _conv(448, 384, 3),
            "branch3x3dbl_3a": _conv(384, 384, (1, 3)), "branch3x3dbl_3b": _conv(384, 384, (3, 1)),
            "branch_pool": _conv(cin, 192)}


# Module name (torchvision's, as the FID weights file names it) -> convolution name -> spec;
# a stem convolution is its own module, named "" inside it. Listed in the order they run.
ARCHITECTURE: dict[str, dict[str, ConvSpec]] = {
    "Conv2d_1a_3x3": {"": _conv(3, 32, 3, stride=2)},
    "Conv2d_2a_3x3": {"": _conv(32, 32, 3, valid=True)},
    "Conv2d_2b_3x3": {"": _conv(32, 64, 3)},
    "Conv2d_3b_1x1": {"": _conv(64, 80)},
    "Conv2d_4a_3x3": {"": _conv(80, 192, 3, valid=True)},
    "Mixed_5b": _block_a(192, 32),
    "Mixed_5c": _block_a(256, 64),
    "Mixed_5d": _block_a(288, 64),
    "Mixed_6a": _block_b(288),
    "Mixed_6b": _block_c(768, 128),
    "Mixed_6c": _block_c(768, 160),
    "Mixed_6d": _block_c(768, 160),
    "Mixed_6e": _block_c(768, 192),
    "Mixed_7a": _block_d(768),
    "Mixed_7b": _block_e(1280),
    "Mixed_7c": _block_e(2048),
}

# pytorch-fid's InceptionV3([3]) holds the modules as ``blocks.<block>.<index>``.
_PYTORCH_FID_BLOCKS = {
    "0.0": "Conv2d_1a_3x3", "0.1": "Conv2d_2a_3x3", "0.2": "Conv2d_2b_3x3",
    "1.0": "Conv2d_3b_1x1", "1.1": "Conv2d_4a_3x3",
    **{f"2.{i}": name for i, name in enumerate(
        ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])},
    **{f"3.{i}": name for i, name in enumerate(["Mixed_7a", "Mixed_7b", "Mixed_7c"])},
}
_BLOCKS_KEY = re.compile(r"^blocks\.(\d+\.\d+)\.(.+)$")
# In the FID weights file but not used for pool3 features: the 1008-way classifier.
_UNUSED_PREFIXES = ("fc.", "AuxLogits.")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def _prefix(module: str, conv: str) -> str:
    return f"{module}.{conv}." if conv else f"{module}."


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """The tensors the network needs, under the FID weights file's key names.

    Returns:
      ``{key: shape}`` for every convolution weight (``(out, in, kh, kw)``) and
      batch-norm ``weight``/``bias``/``running_mean``/``running_var`` (``(out,)``),
      e.g. ``Mixed_5b.branch1x1.conv.weight``.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for module, convs in ARCHITECTURE.items():
        for conv, spec in convs.items():
            p = _prefix(module, conv)
            shapes[f"{p}conv.weight"] = (spec.out_channels, spec.in_channels, *spec.kernel)
            for field in _BN_FIELDS:
                shapes[f"{p}bn.{field}"] = (spec.out_channels,)
    return shapes


def _canonical_key(key: str) -> str | None:
    """The FID weights file's name for ``key``; None for a tensor the features do not use."""
    m = _BLOCKS_KEY.match(key)
    if m is not None:
        if m.group(1) not in _PYTORCH_FID_BLOCKS:
            return key
        key = f"{_PYTORCH_FID_BLOCKS[m.group(1)]}.{m.group(2)}"
    if key.startswith(_UNUSED_PREFIXES) or key.endswith(".num_batches_tracked"):
        return None
    return key


def params_from_state_dict(state_dict: Mapping[str, Any]) -> InceptionParams:
    """Converts pytorch-fid's Inception weights to this module's params pytree.

    Accepts the keys of pytorch-fid's ``InceptionV3([3]).state_dict()``
    (``blocks.0.0.conv.weight``, ``blocks.2.0.branch1x1.bn.running_mean``, ...)
    and those of the FID weights file ``pt_inception-2015-12-05-6726825d.pth``
    (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.conv.weight``, ...).
    The classifier (``fc.*``), auxiliary head and ``num_batches_tracked``
    entries are ignored. Batch normalization is kept as a per-channel affine
    map, ``scale = gamma / sqrt(running_var + 0.001)`` and
    ``bias = beta - running_mean * scale``, computed in float64.

    Args:
      state_dict: key -> array (numpy arrays, or anything ``np.asarray`` takes).

    Returns:
      ``{module: {conv: {"kernel": (kh, kw, in, out), "scale": (out,), "bias": (out,)}}}``,
      float32 jax arrays, with modules and convolutions named as in :data:`ARCHITECTURE`.

    Raises:
      InceptionError: a key the network does not have, or a missing tensor, or
        one of the wrong shape.
    """
    tensors: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        name = _canonical_key(key)
        if name is not None:
            tensors[name] = np.asarray(value)
    expected = state_dict_shapes()
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unknown or missing:
        raise InceptionError(
            f"not pytorch-fid's Inception v3 weights: {len(missing)} tensors missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), {len(unknown)} unknown "
            f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}); pass the state dict of "
            "pytorch_fid.inception.InceptionV3([3]) or of pt_inception-2015-12-05-6726825d.pth")
    wrong = [f"{k} is {tensors[k].shape}, expected {shape}" for k, shape in expected.items()
             if tensors[k].shape != shape]
    if wrong:
        raise InceptionError(f"Inception v3 weights of the wrong shape: {'; '.join(wrong[:3])}; pass the "
                             "FID Inception's state dict (pytorch-fid, use_fid_inception=True)")
    params: InceptionParams = {}
    for module, convs in ARCHITECTURE.items():
        params[module] = {}
        for conv in convs:
            p = _prefix(module, conv)
            gamma, beta, mean, var = (tensors[f"{p}bn.{f}"].astype(np.float64) for f in _BN_FIELDS)
            scale = gamma / np.sqrt(var + BN_EPS)
            params[module][conv] = {
                "kernel": jnp.asarray(tensors[f"{p}conv.weight"].transpose(2, 3, 1, 0), jnp.float32),
                "scale": jnp.asarray(scale, jnp.float32),
                "bias": jnp.asarray(beta - mean * scale, jnp.float32)}
    return params


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear resize along one axis.

    ``align_corners=False`` and no explicit scale: in float32 as torch's CPU
    kernel computes them, ``src = max((i + 0.5) * in / out - 0.5, 0)``,
    ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``, ``w1 = src - i0``.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, w1


def resize_bilinear(images: Array, height: int, width: int) -> Array:
    """Bilinear resize equal to ``F.interpolate(mode='bilinear', align_corners=False)``.

    Half-pixel centres, edge samples clamped, no antialiasing when shrinking
    (unlike ``jax.image.resize``): each output pixel mixes the 2x2 nearest
    input pixels, along the width first and then the height, as torch does.

    Args:
      images: ``(B, H, W, C)``, floating.
      height: output height.
      width: output width.

    Returns:
      ``(B, height, width, C)``, the dtype of ``images``.
    """
    _, h, w, _ = images.shape
    x0, x1, wx = _linear_taps(w, width)
    y0, y1, wy = _linear_taps(h, height)
    wx = jnp.asarray(wx, images.dtype)[:, None]
    wy = jnp.asarray(wy, images.dtype)[:, None, None]
    rows = images[:, :, x0] * (1 - wx) + images[:, :, x1] * wx
    return rows[:, y0] * (1 - wy) + rows[:, y1] * wy


def _basic_conv(p: Mapping[str, Array], spec: ConvSpec, x: Array) -> Array:
    """Convolution (full float32 precision on every backend), batch norm, ReLU."""
    (ph, pw) = spec.padding
    y = lax.conv_general_dilated(x, p["kernel"], (spec.stride, spec.stride), ((ph, ph), (pw, pw)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)
    return jax.nn.relu(y * p["scale"] + p["bias"])


def _max_pool(x: Array, stride: int, padding: int = 0) -> Array:
    """3x3 max pool; padding counts as minus infinity, as in torch."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad)


def _avg_pool_excluding_padding(x: Array) -> Array:
    """3x3 stride-1 average pool over the in-image pixels only (``count_include_pad=False``)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    return total / count


def _block(params: InceptionParams, module: str) -> Callable[[str, Array], Array]:
    return lambda conv, x: _basic_conv(params[module][conv], ARCHITECTURE[module][conv], x)


def _inception_a(c: Callable[[str, Array], Array], x: Array) -> Array:
    b5 = c("branch5x5_2", c("branch5x5_1", x))
    b3 = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)))
    return jnp.concatenate([c("branch1x1", x), b5, b3, c("branch_pool", _avg_pool_excluding_padding(x))], -1)


def _inception_b(c: Callable[[str, Array], Array], x: Array) -> Array:
    b3 = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)))
    return jnp.concatenate([c("branch3x3", x), b3, _max_pool(x, 2)], -1)


def _inception_c(c: Callable[[str, Array], Array], x: Array) -> Array:
    b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
    b7d = x
    for i in range(1, 6):
        b7d = c(f"branch7x7dbl_{i}", b7d)
    return jnp.concatenate([c("branch1x1", x), b7, b7d, c("branch_pool", _avg_pool_excluding_padding(x))], -1)


def _inception_d(c: Callable[[str, Array], Array], x: Array) -> Array:
    b3 = c("branch3x3_2", c("branch3x3_1", x))
    b7 = x
    for i in range(1, 5):
        b7 = c(f"branch7x7x3_{i}", b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)


def _inception_e(c: Callable[[str, Array], Array], x: Array, max_pool: bool) -> Array:
    b3 = c("branch3x3_1", x)
    b3 = jnp.concatenate([c("branch3x3_2a", b3), c("branch3x3_2b", b3)], -1)
    b3d = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
    b3d = jnp.concatenate([c("branch3x3dbl_3a", b3d), c("branch3x3dbl_3b", b3d)], -1)
    pooled = _max_pool(x, 1, padding=1) if max_pool else _avg_pool_excluding_padding(x)
    return jnp.concatenate([c("branch1x1", x), b3, b3d, c("branch_pool", pooled)], -1)


_MIXED: dict[str, Callable[[Callable[[str, Array], Array], Array], Array]] = {
    "Mixed_5b": _inception_a, "Mixed_5c": _inception_a, "Mixed_5d": _inception_a,
    "Mixed_6a": _inception_b,
    "Mixed_6b": _inception_c, "Mixed_6c": _inception_c, "Mixed_6d": _inception_c, "Mixed_6e": _inception_c,
    "Mixed_7a": _inception_d,
    "Mixed_7b": functools.partial(_inception_e, max_pool=False),
    "Mixed_7c": functools.partial(_inception_e, max_pool=True),
}


def _as_unit_rgb(images: Array) -> Array:
    """Checks the layout; ``uint8`` -> [0, 1]; float32; grey replicated to three channels."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InceptionError(f"FID images must be (batch, height, width, 1 or 3 channels), got shape "
                             f"{tuple(images.shape)}; reshape them to NHWC grey or RGB")
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(images.dtype, jnp.floating):
        raise InceptionError(f"FID images must be floating in [0, 1] or uint8, got {images.dtype}; "
                             "convert them with images / 255.0")
    images = images.astype(jnp.float32)
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    return images


@jax.jit
def inception_features(params: InceptionParams, images: Array) -> Array:
    """The 2048-d pool3 features FID is computed from.

    Equal to pytorch-fid's ``InceptionV3([3])(x)[0]`` on the NCHW transpose of
    ``images`` (resize to 299x299, [0, 1] -> [-1, 1], the FID Inception blocks,
    global average pool). Convolutions run at full float32 precision on every
    backend (no TF32/bfloat16 passes), so features agree across devices.

    Args:
      params: from :func:`params_from_state_dict`.
      images: ``(B, H, W, C)``, floating in [0, 1] or ``uint8``; ``C`` is 1 or 3.

    Returns:
      ``(B, 2048)`` float32 features.

    Raises:
      InceptionError: images that are not NHWC grey/RGB, or of an integer type other than uint8.
    """
    x = _as_unit_rgb(jnp.asarray(images))
    x = resize_bilinear(x, IMAGE_SIZE, IMAGE_SIZE)
    x = 2 * x - 1
    for module in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = _block(params, module)("", x)
    x = _max_pool(x, 2)
    for module in ("Conv2d_3b_1x1", "Conv2d_4a_3x3"):
        x = _block(params, module)("", x)
    x = _max_pool(x, 2)
    for module, mixed in _MIXED.items():
        x = mixed(_block(params, module), x)
    return jnp.mean(x, axis=(1, 2))
