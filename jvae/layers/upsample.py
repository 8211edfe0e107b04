"""A transposed convolution whose gradient is fast on every backend.

``flax.linen.ConvTranspose`` lowers to one convolution with *input dilation*
(``lhs_dilation``): zeros between the input pixels. Its kernel gradient is a
convolution XLA:CPU has no fast kernel for, and it dominated the conv
decoder's train step (figures in ``benchmarks/README.md``).

This module computes the same map by its polyphase (sub-pixel) decomposition
(Shi et al., 2016, arXiv:1609.05158): output pixels of phase ``r`` along each
axis (``o = s * i + r``) see only the kernel taps ``t`` with ``(r + t - p) % s
== 0`` (``p`` the leading padding), so each phase is an ordinary stride-1
convolution of the *undilated* input with a sub-kernel, and the ``s^d``
phases are interleaved by a reshape. No multiply touches an inserted zero,
and both gradients are ordinary convolutions, which XLA:CPU has fast
kernels for; on GPU/TPU the convolution libraries handle either form.

On CPU (:func:`~jvae.layers.convolution.use_gemm_convolutions`) :class:`ConvTranspose`
computes all phases as one im2col GEMM (:func:`transposed_conv_gemm`), so
that no convolution is left for XLA:CPU.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.layers.convolution import conv, kernel_param, use_gemm_convolutions

__all__ = ["ConvTranspose", "transposed_conv", "transposed_conv_gemm"]


def _same_padding(k: int, s: int) -> tuple[int, int]:
    """Before/after padding of the dilated input for ``"SAME"`` (``lax.conv_transpose``'s)."""
    total = k + s - 2
    before = k - 1 if s > k - 1 else math.ceil(total / 2)
    return before, total - before


def _phase_taps(k: int, s: int, r: int, before: int) -> tuple[list[int], list[int]]:
    """Kernel taps of output phase ``r`` and the input offsets they read."""
    taps = [t for t in range(k) if (r + t - before) % s == 0]
    return taps, [(r + t - before) // s for t in taps]


def transposed_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")`` by polyphase decomposition.

    Args:
      x: ``(N, *spatial, C_in)``.
      kernel: ``(*kernel_size, C_in, C_out)``, not flipped (Flax's
        ``transpose_kernel=False``).
      strides: upsampling factor per spatial axis.

    Returns:
      ``(N, *(s * spatial), C_out)``.
    """
    n = x.ndim - 2
    spatial, cout = x.shape[1:-1], kernel.shape[-1]
    ks, ss = kernel.shape[:n], tuple(int(s) for s in strides)
    before = [_same_padding(k, s)[0] for k, s in zip(ks, ss)]
    if not 1 <= n <= 3 or kernel.ndim != n + 2 or len(ss) != n:
        raise ValueError(f"transposed_conv takes 1 to 3 spatial dims with a kernel and strides "
                         f"for each; got input {x.shape}, kernel {kernel.shape}, strides {ss}")
    axes = "HWD"[:n]
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape,
                                    (f"N{axes}C", f"{axes}IO", f"N{axes}C"))
    phases = []
    for rs in itertools.product(*(range(s) for s in ss)):
        per_axis = [_phase_taps(k, s, r, b) for k, s, r, b in zip(ks, ss, rs, before)]
        if any(not taps for taps, _ in per_axis):  # a phase no tap reaches (kernel < stride)
            phases.append(jnp.zeros((x.shape[0], *spatial, cout), x.dtype))
            continue
        sub = kernel[np.ix_(*(np.array(taps) for taps, _ in per_axis))]
        # Input offsets d_0..d_last for output i: pad (negative: crop) so a VALID
        # correlation reads x[i + d].
        xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [
            (-offs[0], offs[-1], 0) for _, offs in per_axis] + [(0, 0, 0)])
        phases.append(lax.conv_general_dilated(xp, sub, (1,) * n, "VALID",
                                               dimension_numbers=dn))
    # (s_1, ..., s_n, N, *spatial, C) -> (N, spatial_1, s_1, ..., spatial_n, s_n, C).
    y = jnp.stack(phases).reshape(*ss, x.shape[0], *spatial, cout)
    order = [n] + [a for i in range(n) for a in (n + 1 + i, i)] + [2 * n + 1]
    return y.transpose(order).reshape(x.shape[0], *(d * s for d, s in zip(spatial, ss)), cout)


def transposed_conv_gemm(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """:func:`transposed_conv` with all phases in one im2col GEMM (:mod:`jvae.layers.convolution`).

    Every phase reads input offsets within one window ``d_min..d_max`` per
    axis; the patches of that window, times a kernel holding each phase's
    sub-kernel in its own output columns (zeros for taps a phase does not use:
    ``(s / k)^d``-fold work, 16/9 for 3x3 stride 2), give all ``s^d`` phases at
    once, interleaved by a depth-to-space reshape. Forward and both gradients
    are GEMMs, which XLA:CPU runs at its matmul rate, in loops too.

    Args:
      x: ``(N, *spatial, C_in)``.
      kernel: ``(*kernel_size, C_in, C_out)``, not flipped.
      strides: upsampling factor per spatial axis.

    Returns:
      ``(N, *(s * spatial), C_out)``.
    """
    n = x.ndim - 2
    spatial, cin, cout = x.shape[1:-1], x.shape[-1], kernel.shape[-1]
    ks, ss = kernel.shape[:n], tuple(int(s) for s in strides)
    if not 1 <= n <= 3 or kernel.ndim != n + 2 or len(ss) != n:
        raise ValueError(f"transposed_conv_gemm takes 1 to 3 spatial dims with a kernel and "
                         f"strides for each; got input {x.shape}, kernel {kernel.shape}, "
                         f"strides {ss}")
    selects, pads = [], []
    for k, s in zip(ks, ss):
        before = _same_padding(k, s)[0]
        used = [list(zip(*_phase_taps(k, s, r, before))) for r in range(s)]
        offsets = [d for phase in used for _, d in phase]
        lo, hi = min(offsets), max(offsets)
        # select[l, r, t] = 1 where phase r reads tap t at input offset lo + l.
        select = np.zeros((hi - lo + 1, s, k), np.float32)
        for r, phase in enumerate(used):
            for t, d in phase:
                select[d - lo, r, t] = 1.0
        selects.append(select)
        pads.append((-lo, hi))
    # kernel (t..., I, O) -> (l..., I, r..., O): each phase's taps in its own columns.
    taps_, window_, phases_ = "abc"[:n], "def"[:n], "ghi"[:n]
    spec = ",".join(w + p + t for w, p, t in zip(window_, phases_, taps_))
    big = jnp.einsum(f"{spec},{taps_}IO->{window_}I{phases_}O",
                     *(jnp.asarray(m, kernel.dtype) for m in selects), kernel)
    window = tuple(m.shape[0] for m in selects)
    y = conv(x, big.reshape(*window, cin, -1), (1,) * n, pads)
    # (N, *spatial, s_1..s_n, C) -> (N, spatial_1, s_1, ..., spatial_n, s_n, C).
    y = y.reshape(x.shape[0], *spatial, *ss, cout)
    order = [0] + [a for i in range(n) for a in (1 + i, 1 + n + i)] + [2 * n + 1]
    return y.transpose(order).reshape(x.shape[0], *(d * s for d, s in zip(spatial, ss)), cout)


class ConvTranspose(nn.Module):
    """Drop-in for ``nn.ConvTranspose(features, kernel_size, strides, padding="SAME")``.

    Same parameters (``kernel`` of shape ``(*kernel_size, in, features)``,
    ``bias``), same initializers, same outputs (up to float rounding) as Flax's
    module with ``transpose_kernel=False``; checkpoints are interchangeable.

    Attributes:
      features: output channels.
      kernel_size: spatial kernel size.
      strides: upsampling factor per spatial dimension.
      use_bias: add a bias.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ss = tuple(self.strides)
        kernel = kernel_param(self, x, tuple(self.kernel_size), ss, self.features)
        y = (transposed_conv_gemm if use_gemm_convolutions() else transposed_conv)(x, kernel, ss)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
            y = y + bias.astype(x.dtype)
        return y
