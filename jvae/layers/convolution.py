"""Convolutions as one matrix product (im2col), for backends whose GEMM beats their conv.

XLA:CPU lowers ``lax.conv_general_dilated`` to a convolution library call; its
gradients with respect to the input and the kernel are further convolutions
(with window reversal or dilation), some of which run far below the GEMM
rate, and inside a loop body (``lax.scan``, the on-device epoch of
:mod:`jvae.training.epoch`) XLA:CPU does not use its fast convolution kernels at all.
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

import contextlib
import contextvars
import functools
import itertools
import math
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Conv", "MAX_GEMM_TAPS", "MIN_GEMM_FEATURES", "conv", "conv_patches", "kernel_param",
           "native_convolutions", "use_gemm_convolutions"]

Padding = str | Sequence[tuple[int, int]]


# Below this many output channels a convolution's im2col is memory-bound: the
# patches are k^2 times the input, and the GEMM does only ``features`` FMAs per
# patch element (the 32->1 head of the conv decoder ran 7-29x slower as a GEMM).
MIN_GEMM_FEATURES = 16

# Above this many kernel taps (7x7) im2col's one slice per tap makes a program
# that compiles slowly (a 28x28 "full-image" kernel is 784 slices); XLA's own
# convolution serves those.
MAX_GEMM_TAPS = 49


# Set while tracing programs that only run forward, outside loops (inference):
# there XLA:CPU's own convolution is 2-6x faster than im2col + GEMM (3x3, 64-512
# channels, 64-512 pixels square: 168-205 against 30-107 GFLOP/s on a 2-core CPU,
# benchmarks/sd_family.py).
_NATIVE = contextvars.ContextVar("jvae_native_convolutions", default=False)


def use_gemm_convolutions() -> bool:
    """Whether :class:`Conv` lowers to im2col + GEMM: on CPU, unless traced under
    :func:`native_convolutions`."""
    return jax.default_backend() == "cpu" and not _NATIVE.get()


@contextlib.contextmanager
def native_convolutions() -> Iterator[None]:
    """Traces :class:`Conv` as XLA's own convolution on every backend.

    A trace-time switch, like ``jax.default_matmul_precision``: use it around
    the body of a jitted function that runs forward only and outside a loop,
    such as an inference program. Parameters and outputs are unchanged.
    """
    token = _NATIVE.set(True)
    try:
        yield
    finally:
        _NATIVE.reset(token)


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

    The gradients are written by hand (:func:`_conv_gemm_bwd`) rather than
    left to autodiff, which contracts the patches' three leading axes in one
    4-D ``dot_general`` for the kernel gradient: XLA:CPU ran that product at
    about half the rate of the same one on 2-D operands.

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
    strides = tuple(int(s) for s in strides)
    pads = tuple(_pads(x.shape[1:-1], ks, strides, padding))
    return _conv_gemm(x, kernel, strides, pads)


def _lax_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
             pads: Sequence[tuple[int, int]]) -> jax.Array:
    """XLA's convolution in NHWC/HWIO (1 to 3 spatial dims) with explicit ``(lo, hi)`` pads."""
    axes = "HWD"[:x.ndim - 2]
    return lax.conv_general_dilated(x, kernel, tuple(strides), tuple(pads),
                                    dimension_numbers=(f"N{axes}C", f"{axes}IO", f"N{axes}C"))


def _gemm(patches: jax.Array, kernel: jax.Array) -> jax.Array:
    # 2-D operands: XLA:CPU's dot emitter is fastest on plain matrices.
    flat = patches.reshape(-1, patches.shape[-1])
    out = flat @ kernel.reshape(-1, kernel.shape[-1])
    return out.reshape(*patches.shape[:-1], kernel.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_gemm(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...]) -> jax.Array:
    return _conv_gemm_fwd(x, kernel, strides, pads)[0]


def _conv_gemm_fwd(x, kernel, strides, pads):
    n = x.ndim - 2
    patches = conv_patches(x, kernel.shape[:n], strides, pads)
    return _gemm(patches, kernel), (patches, x.shape, kernel)


def _conv_gemm_bwd(strides, pads, residuals, g):
    r"""Both gradients of ``Y = P W`` as GEMMs on 2-D operands.

    .. math::

        \partial W = P^\top G, \qquad \partial x = \operatorname{col2im}(G W^\top)

    where col2im sends each patch column back to the input pixel it was
    sliced from (the transpose of :func:`conv_patches`: pads and adds).
    Tried and slower on XLA:CPU for equal in and out channels (1.2-2x): the
    input gradient as the "full" correlation of ``G`` with the flipped kernel.
    """
    patches, x_shape, kernel = residuals
    n = len(x_shape) - 2
    flat = patches.reshape(-1, patches.shape[-1])
    d_kernel = (flat.T @ g.reshape(-1, g.shape[-1])).reshape(kernel.shape)
    d_patches = _gemm(g, jnp.swapaxes(kernel.reshape(-1, kernel.shape[-1]), 0, 1))
    _, col2im = jax.vjp(lambda x: conv_patches(x, kernel.shape[:n], strides, pads),
                        jnp.zeros(x_shape, g.dtype))
    (d_x,) = col2im(d_patches)
    return d_x, d_kernel


_conv_gemm.defvjp(_conv_gemm_fwd, _conv_gemm_bwd)


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
            y = _lax_conv(x, kernel, ss, _pads(x.shape[1:-1], ks, ss, padding))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
            y = y + bias.astype(dtype)
        return y
