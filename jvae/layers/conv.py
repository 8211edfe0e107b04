"""Convolutions as one matrix product (im2col), for backends whose GEMM beats their conv.

XLA:CPU lowers ``lax.conv_general_dilated`` to a convolution library call; its
gradients with respect to the input and the kernel are further convolutions
(with window reversal or dilation), some of which run far below the GEMM
rate, and inside a loop body (``lax.scan``, the on-device epoch of
:mod:`jvae.epoch`) XLA:CPU does not use its fast convolution kernels at all.
Written as im2col, a ``k x k`` convolution is

.. math::

    P[n, y, x, (i, j, c)] = x_{\\text{pad}}[n, s y + i, s x + j, c], \\qquad
    Y = P \\cdot W_{(i, j, c), o}

(Chellapilla et al., 2006, "High performance convolutional neural networks
for document processing"): ``k^2`` strided slices concatenated along the
channels, then one GEMM. Forward and both gradients are GEMMs plus slices,
pads and adds, which XLA:CPU compiles the same way in or out of loops; the
kernel keeps Flax's ``(kh, kw, in, out)`` layout, so parameters are unchanged.

The transposed convolution of :mod:`jvae.layers.upsample` uses the same patches:
all ``s^2`` output phases of a stride-``s`` transposed convolution are one
GEMM of the input's patches with the phase sub-kernels laid side by side
(zeros where a phase has no tap), followed by a depth-to-space reshape.

:func:`use_gemm_convolutions` says where this formulation is used: on CPU.
GPU and TPU convolution libraries (cuDNN, the TPU's MXU lowering) run the
native convolution at least as fast, so there ``Conv`` is ``lax``'s.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Conv", "MAX_GEMM_TAPS", "MIN_GEMM_FEATURES", "conv", "conv_patches", "kernel_param",
           "use_gemm_convolutions"]

Padding = str | Sequence[tuple[int, int]]


# Below this many output channels a convolution's im2col is memory-bound: the
# patches are k^2 times the input, and the GEMM does only ``features`` FMAs per
# patch element (the 32->1 head of the conv decoder ran 7-29x slower as a GEMM).
MIN_GEMM_FEATURES = 16

# Above this many kernel taps (7x7) im2col's one slice per tap makes a program
# that compiles slowly (a 28x28 "full-image" kernel is 784 slices); XLA's own
# convolution serves those.
MAX_GEMM_TAPS = 49


def use_gemm_convolutions() -> bool:
    """Whether :class:`Conv` lowers to im2col + GEMM (the default backend is a CPU)."""
    return jax.default_backend() == "cpu"


def _pads(spatial: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int],
          padding: Padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return list(lax.padtype_to_pads(tuple(spatial), tuple(kernel_size), tuple(strides),
                                        padding))
    return [(int(lo), int(hi)) for lo, hi in padding]


def conv_patches(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
                 padding: Padding) -> jax.Array:
    """im2col: every output pixel's input window, flattened in ``(taps..., C)`` order.

    Args:
      x: ``(N, *spatial, C)``.
      kernel_size: window size per spatial axis.
      strides: stride per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(lo, hi)`` zero padding per axis.

    Returns:
      ``(N, *out_spatial, prod(kernel_size) * C)``, so that a convolution is
      ``patches @ kernel.reshape(-1, out)`` for a kernel ``(*kernel_size, C, out)``.
    """
    n = x.ndim - 2
    ks, ss = tuple(kernel_size), tuple(strides)
    pads = _pads(x.shape[1:-1], ks, ss, padding)
    xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads),
                                              (0, 0, 0)])
    out = [(xp.shape[1 + a] - ks[a]) // ss[a] + 1 for a in range(n)]
    if math.prod(ks) == 1 and all(s == 1 for s in ss):
        return xp
    taps = []
    for offset in itertools.product(*(range(k) for k in ks)):
        start = (0, *offset, 0)
        limit = (xp.shape[0], *(o + s * (d - 1) + 1 for o, s, d in zip(offset, ss, out)),
                 xp.shape[-1])
        taps.append(lax.slice(xp, start, limit, (1, *ss, 1)))
    return jnp.concatenate(taps, axis=-1)


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding
         ) -> jax.Array:
    """``lax.conv_general_dilated`` in NHWC/HWIO, computed as im2col + one GEMM.

    Args:
      x: ``(N, *spatial, C)``.
      kernel: ``(*kernel_size, C, out)``.
      strides: stride per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(lo, hi)`` per spatial axis.

    Returns:
      ``(N, *out_spatial, out)``, equal (up to float rounding) to the
      cross-correlation ``lax.conv_general_dilated`` computes.
    """
    n = x.ndim - 2
    ks = kernel.shape[:n]
    patches = conv_patches(x, ks, strides, padding)
    return lax.dot_general(patches, kernel.reshape(-1, kernel.shape[-1]),
                           (((patches.ndim - 1,), (0,)), ((), ())))


def kernel_param(module: nn.Module, x: jax.Array, kernel_size: tuple[int, ...],
                 strides: tuple[int, ...], features: int) -> jax.Array:
    """A convolution's float32 ``"kernel"`` (``(*kernel_size, C_in, features)``, LeCun
    normal, Flax's name and initializer) in ``x``'s dtype, after checking the shapes.

    Raises:
      ValueError: ``kernel_size`` or ``strides`` do not name each spatial dim of ``x``.
    """
    if len(kernel_size) != x.ndim - 2 or len(strides) != len(kernel_size):
        raise ValueError(f"kernel_size {kernel_size} and strides {strides} must name each of the "
                         f"{x.ndim - 2} spatial dims of an input of shape {x.shape}")
    kernel = module.param("kernel", nn.initializers.lecun_normal(),
                          (*kernel_size, x.shape[-1], features), jnp.float32)
    return kernel.astype(x.dtype)


class Conv(nn.Module):
    """Drop-in for ``nn.Conv(features, kernel_size, strides, padding)``, im2col on CPU.

    Same parameters (``kernel`` of shape ``(*kernel_size, in, features)``,
    ``bias``), initializers and outputs as Flax's module (up to float
    rounding); checkpoints are interchangeable. On CPU it computes
    :func:`conv` (for 1x1 kernels and at least :data:`MIN_GEMM_FEATURES`
    output channels, at most :data:`MAX_GEMM_TAPS` kernel taps); elsewhere ``lax.conv_general_dilated``.

    Attributes:
      features: output channels.
      kernel_size: spatial kernel size.
      strides: stride per spatial dimension (default 1).
      padding: ``"SAME"``, ``"VALID"`` or ``(lo, hi)`` pairs per spatial dimension.
      use_bias: add a bias.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Padding = "SAME"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = tuple(self.kernel_size)
        ss = tuple(self.strides) if self.strides is not None else (1,) * len(ks)
        kernel = kernel_param(self, x, ks, ss, self.features)
        dtype = x.dtype
        padding = self.padding if isinstance(self.padding, str) else tuple(
            tuple(p) for p in self.padding)
        if use_gemm_convolutions() and math.prod(ks) <= MAX_GEMM_TAPS and (
                self.features >= MIN_GEMM_FEATURES or (
                    math.prod(ks) == 1 and all(s == 1 for s in ss))):
            y = conv(x, kernel, ss, padding)
        else:
            axes = "HWD"[:len(ks)]
            y = lax.conv_general_dilated(
                x, kernel, ss, _pads(x.shape[1:-1], ks, ss, padding),
                dimension_numbers=(f"N{axes}C", f"{axes}IO", f"N{axes}C"))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
            y = y + bias.astype(dtype)
        return y
