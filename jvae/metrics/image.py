"""Full-reference image metrics: PSNR, MS-SSIM and the high-frequency energy ratio.

All take image batches ``(..., H, W, C)`` in [0, 1] (``max_val`` otherwise),
are jit-able and return one value per image, so a split's mean is a sum over
batches divided by its size. SSIM itself is :func:`jvae.terms.similarity.ssim`.

* :func:`psnr`: ``10 log10(max_val^2 / MSE)`` in dB.
* :func:`ms_ssim`: multi-scale SSIM (Wang, Simoncelli & Bovik, 2003,
  "Multiscale structural similarity for image quality assessment"): the
  contrast-structure terms of scales 1..M-1 and the full SSIM of scale M, each
  raised to its weight, halving the image (2x2 average) between scales.
  Five scales need images of at least ``window * 16`` pixels a side (176 for
  the usual 11-tap window, which the coarsest scale must still hold); smaller
  images use the scales that still fit a window (at least 2), with the standard weights of those scales
  renormalized to sum to 1, so 64x64 crops and 28x28 digits get a value too.
  Each channel's product is taken, then their mean, and negative terms are
  clipped to 0 (as TensorFlow's ``ssim_multiscale`` and ``pytorch_msssim``
  do), so the product stays real.
* :func:`high_frequency_energy`: the spectral power of each image above half
  the Nyquist frequency (radial frequency over 0.25 cycles per pixel), after
  removing its mean; the ratio of a reconstruction's to its original's
  (:func:`high_frequency_ratio`) is 1.0 when it is as sharp as the input, and
  falls towards 0 as it blurs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jvae.base import Array
from jvae.terms.similarity import gaussian_blur, gaussian_window

__all__ = ["MS_SSIM_WEIGHTS", "psnr", "ms_ssim", "ms_ssim_scales", "high_frequency_energy",
           "high_frequency_ratio"]

# Wang et al.'s per-scale exponents, finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(x: Array, y: Array, *, max_val: float = 1.0, eps: float = 1e-10) -> Array:
    """Peak signal-to-noise ratio of each image pair in dB, ``(...)``.

    Args:
      x, y: images ``(..., H, W, C)``.
      max_val: the pixels' peak value.
      eps: floor on the MSE (identical images give ``10 log10(max^2 / eps)``).
    """
    mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(max_val ** 2 / jnp.maximum(mse, eps))


def ms_ssim_scales(height: int, width: int, window: int = 11, max_scales: int = 5) -> int:
    """Scales MS-SSIM uses for an image size: halvings while a side still fits ``window``."""
    scales, side = 0, min(height, width)
    while scales < max_scales and side >= window:
        scales += 1
        side //= 2
    if scales < 2:
        raise ValueError(f"MS-SSIM needs images of at least {2 * window} pixels a side for two "
                         f"scales of an {window}-tap window, got {height}x{width}")
    return scales


def _ssim_parts(x: Array, y: Array, win: Array, c1: float, c2: float) -> tuple[Array, Array]:
    """SSIM and its contrast-structure term, spatial means per image and channel ``(N, C)``."""
    mu_x, mu_y = gaussian_blur(x, win), gaussian_blur(y, win)
    var_x = gaussian_blur(x * x, win) - mu_x ** 2
    var_y = gaussian_blur(y * y, win) - mu_y ** 2
    cov = gaussian_blur(x * y, win) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return jnp.mean(lum * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def _halve(x: Array) -> Array:
    """2x2 average pooling (an odd last row or column is dropped)."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x: Array, y: Array, *, max_val: float = 1.0, window: int = 11, sigma: float = 1.5,
            k1: float = 0.01, k2: float = 0.03, scales: int | None = None) -> Array:
    """Multi-scale SSIM of each image pair, ``(...)``, in [0, 1] (1 for identical images).

    Args:
      x, y: images ``(..., H, W, C)``.
      max_val: the pixels' dynamic range.
      window, sigma: the Gaussian window (11 taps, 1.5).
      k1, k2: SSIM's stabilizers.
      scales: scales to use (None: :func:`ms_ssim_scales`, at most 5).
    """
    x, y = jnp.broadcast_arrays(x.astype(jnp.float32), y.astype(jnp.float32))
    lead, (h, w, c) = x.shape[:-3], x.shape[-3:]
    scales = scales or ms_ssim_scales(h, w, window)
    weights = jnp.asarray(MS_SSIM_WEIGHTS[:scales], jnp.float32)
    weights = weights / jnp.sum(weights)
    win = gaussian_window(window, sigma)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    x, y = x.reshape(-1, h, w, c), y.reshape(-1, h, w, c)
    terms = []
    for s in range(scales):
        full, cs = _ssim_parts(x, y, win, c1, c2)
        terms.append(jax.nn.relu(full if s == scales - 1 else cs))
        x, y = _halve(x), _halve(y)
    per_channel = jnp.prod(jnp.stack(terms, axis=-1) ** weights, axis=-1)
    return jnp.mean(per_channel, axis=-1).reshape(lead)


def high_frequency_energy(x: Array, *, cutoff: float = 0.25) -> Array:
    """Spectral power above ``cutoff`` cycles per pixel (0.25: half Nyquist), per image.

    Channels are averaged to grey first and each image's mean is removed.

    Args:
      x: images ``(..., H, W, C)``.
      cutoff: the radial frequency above which power counts.
    """
    grey = jnp.mean(x.astype(jnp.float32), axis=-1)
    grey = grey - jnp.mean(grey, axis=(-2, -1), keepdims=True)
    h, w = grey.shape[-2:]
    power = jnp.abs(jnp.fft.fft2(grey)) ** 2
    fy, fx = jnp.fft.fftfreq(h), jnp.fft.fftfreq(w)
    high = jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) > cutoff
    return jnp.sum(power * high, axis=(-2, -1)) / (h * w)


def high_frequency_ratio(recon: Array, original: Array, *, cutoff: float = 0.25) -> Array:
    """``sum HF(recon) / sum HF(original)`` over a batch: 1.0 is as sharp as the input."""
    return (jnp.sum(high_frequency_energy(recon, cutoff=cutoff))
            / jnp.sum(high_frequency_energy(original, cutoff=cutoff)))
