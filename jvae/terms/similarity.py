"""Structural similarity (SSIM) between image batches, differentiable.

SSIM (Wang et al., 2004, "Image quality assessment: from error visibility to
structural similarity") compares local means, variances and covariance in a
Gaussian window:

    SSIM(x, y) = mean over windows of
        (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))

with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` and ``L`` the dynamic range. It is 1
exactly when the images are equal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jvae.base import Array

__all__ = ["ssim", "gaussian_window", "gaussian_blur"]


def gaussian_window(size: int, sigma: float) -> Array:
    """A normalized 1-D Gaussian of odd length ``size``."""
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    w = jnp.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def gaussian_blur(x: Array, w: Array) -> Array:
    """Separable 'valid' filter of NHWC images by the 1-D window ``w``, each channel alone."""
    c = x.shape[-1]
    k = len(w)
    dn = ("NHWC", "HWIO", "NHWC")
    kh = jnp.tile(w.reshape(k, 1, 1, 1), (1, 1, 1, c)).astype(x.dtype)
    kw = jnp.tile(w.reshape(1, k, 1, 1), (1, 1, 1, c)).astype(x.dtype)
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                     feature_group_count=c)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                        feature_group_count=c)


def ssim(x: Array, y: Array, *, max_val: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Array:
    """Mean SSIM of each image pair.

    Args:
      x: images ``(..., H, W, C)``.
      y: images broadcastable to ``x``'s shape.
      max_val: dynamic range ``L`` of the pixels (1 for [0, 1] images).
      window: Gaussian window size (clipped to the image size, kept odd).
      sigma: the window's standard deviation.
      k1: stabilizer of the luminance term.
      k2: stabilizer of the contrast-structure term.

    Returns:
      SSIM per image, shape ``x.shape[:-3]`` (in [-1, 1], 1 for identical images).
    """
    x, y = jnp.broadcast_arrays(x, y)
    if x.ndim < 3:
        raise ValueError(f"SSIM needs images (..., H, W, C), got shape {x.shape}")
    lead, (h, w_, c) = x.shape[:-3], x.shape[-3:]
    size = min(window, h, w_)
    size -= 1 - size % 2
    win = gaussian_window(size, sigma)
    x = x.reshape(-1, h, w_, c)
    y = y.reshape(-1, h, w_, c)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_x, mu_y = gaussian_blur(x, win), gaussian_blur(y, win)
    var_x = gaussian_blur(x * x, win) - mu_x ** 2
    var_y = gaussian_blur(y * y, win) - mu_y ** 2
    cov = gaussian_blur(x * y, win) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return jnp.mean(num / den, axis=(1, 2, 3)).reshape(lead)
