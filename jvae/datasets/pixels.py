"""Pixel values: uint8 to floats, and stochastic binarization (dynamic or static)."""

from __future__ import annotations

import numpy as np

__all__ = ["BINARIZE_MODES", "binarize", "static_binarize", "to_float"]


BINARIZE_MODES = ("none", "dynamic", "static")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def binarize(x, u):
    """Stochastic binarization ``1[u < x]``: pixel ``x`` becomes 1 with probability x.

    Works on NumPy or JAX arrays; ``u`` holds uniform [0, 1) draws of ``x``'s shape.
    """
    return (u < x).astype(x.dtype)


def static_binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Binarizes float images once with a fixed seed (statically binarized data)."""
    u = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return binarize(images, u)
