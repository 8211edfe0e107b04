"""A pseudo-quadrature mirror filter bank (PQMF): a signal as ``M`` decimated sub-bands.

RAVE (Caillon & Esling, 2021, arXiv:2111.05011) and multi-band MelGAN (Yang
et al., 2020, arXiv:2005.05106) let their networks see and emit ``M``
sub-bands at ``1/M`` of the sample rate instead of the waveform: the
full-rate layers, which cost the most and do the least, are replaced by a
fixed, nearly invertible linear transform. Band ``k`` of a cosine-modulated
filter bank (Nguyen, 1994; Lin & Vaidyanathan, 1998) filters with

.. math::

    h_k[n] = 2 p[n] \\cos\\left(\\frac{(2k+1)\\pi}{2M}\\left(n - \\frac{N}{2}\\right)
             + (-1)^k \\frac{\\pi}{4}\\right),

and synthesis uses the same with ``-(-1)^k pi/4``. ``p`` is a Kaiser-windowed
sinc low-pass of ``N + 1`` taps whose cutoff is chosen (:func:`design_prototype`)
so that ``|P(w)|^2 + |P(pi/M - w)|^2`` stays closest to 1 across the
transition band, the condition for analysis then synthesis to give the
signal back up to a delay (near-perfect reconstruction). Here the delay is
compensated (filters applied centred), so ``synthesis(analysis(x)) ~ x``.

Both directions are single strided (transposed) convolutions with fixed
kernels, so they cost little and differentiate like any layer.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.base import Array

__all__ = ["PQMF", "design_prototype", "pqmf_filters", "reconstruction_error_db"]


def _prototype(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """Kaiser-windowed ideal low-pass of ``taps + 1`` coefficients (cutoff in units of
    pi), normalized to unit gain at DC."""
    n = np.arange(taps + 1) - taps / 2
    p = cutoff * np.sinc(cutoff * n) * np.kaiser(taps + 1, beta)
    return p / p.sum()


def _pr_error(p: np.ndarray, bands: int) -> float:
    """``max_w | |P(w)|^2 + |P(pi/M - w)|^2 - 1 |`` over ``[0, pi/M]``."""
    grid = np.linspace(0.0, np.pi / bands, 64)
    n = np.arange(len(p))

    def power(w):
        return np.abs(np.exp(-1j * np.outer(w, n)) @ p) ** 2
    return float(np.max(np.abs(power(grid) + power(np.pi / bands - grid) - 1.0)))


@functools.lru_cache(maxsize=None)
def design_prototype(bands: int, taps: int | None = None, beta: float = 9.0) -> np.ndarray:
    """The prototype low-pass ``p`` of an ``M``-band PQMF (Lin & Vaidyanathan, 1998).

    Args:
      bands: ``M``, the number of sub-bands.
      taps: filter order ``N``, even (``N + 1`` coefficients; default ``8 M``).
      beta: Kaiser window shape (stop-band attenuation).

    Returns:
      float64 ``(N + 1,)``, unit DC gain, its cutoff the one (searched coarse to
      fine in ``[0.5, 1.5] pi / M``) that minimizes :func:`_pr_error`.
    """
    taps = taps or 8 * bands
    if taps % 2:
        raise ValueError(f"the PQMF prototype needs an even order, got {taps}")
    lo, hi = 0.5 / bands, 1.5 / bands
    for _ in range(3):
        grid = np.linspace(lo, hi, 21)
        errors = [_pr_error(_prototype(taps, c, beta), bands) for c in grid]
        best = int(np.argmin(errors))
        lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    return _prototype(taps, float(grid[best]), beta)


@functools.lru_cache(maxsize=None)
def pqmf_filters(bands: int, taps: int | None = None, beta: float = 9.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Analysis and synthesis filters ``h_k`` and ``g_k``, float32 ``(M, N + 1)`` each."""
    p = design_prototype(bands, taps, beta)
    n = np.arange(len(p)) - (len(p) - 1) / 2
    k = np.arange(bands)[:, None]
    phase = (2 * k + 1) * np.pi / (2 * bands) * n
    shift = np.where(k % 2 == 0, 1.0, -1.0) * np.pi / 4
    return ((2 * p * np.cos(phase + shift)).astype(np.float32),
            (2 * p * np.cos(phase - shift)).astype(np.float32))


class PQMF:
    """An ``M``-band PQMF as two pure functions on ``(B, T, 1)`` and ``(B, T / M, M)`` arrays.

    Args:
      bands: ``M``; ``T`` must be a multiple of it (``M = 1`` is the identity).
      taps: filter order (default ``8 M``).
      beta: Kaiser window shape.
    """

    def __init__(self, bands: int, taps: int | None = None, beta: float = 9.0):
        if bands < 1:
            raise ValueError(f"a PQMF needs at least one band, got {bands}")
        self.bands = int(bands)
        if self.bands > 1:
            self.analysis_filters, self.synthesis_filters = pqmf_filters(self.bands, taps, beta)

    def analysis(self, x: Array) -> Array:
        """``(B, T, 1) -> (B, T / M, M)``: correlate with every ``h_k`` (centred), keep every
        ``M``-th sample."""
        if self.bands == 1:
            return x
        if x.shape[1] % self.bands or x.shape[2] != 1:
            raise ValueError(f"a {self.bands}-band PQMF takes (B, T, 1) with T divisible by "
                             f"{self.bands}, got {x.shape}")
        half = (self.analysis_filters.shape[1] - 1) // 2
        kernel = jnp.asarray(self.analysis_filters.T[:, None, :], x.dtype)  # (K, 1, M)
        return lax.conv_general_dilated(x, kernel, (self.bands,), ((half, half),),
                                        dimension_numbers=("NHC", "HIO", "NHC"))

    def synthesis(self, sub: Array) -> Array:
        """``(B, T / M, M) -> (B, T, 1)``: zero-stuff by ``M`` (gain ``M``), correlate band
        ``k`` with ``g_k`` (centred) and sum the bands."""
        if self.bands == 1:
            return sub
        half = (self.synthesis_filters.shape[1] - 1) // 2
        kernel = jnp.asarray(self.synthesis_filters.T[:, :, None] * self.bands, sub.dtype)
        return lax.conv_general_dilated(sub, kernel, (1,), ((half, half + self.bands - 1),),
                                        lhs_dilation=(self.bands,),
                                        dimension_numbers=("NHC", "HIO", "NHC"))


def reconstruction_error_db(bands: int, length: int = 4096, seed: int = 0) -> float:
    """``10 log10(||x - S(A(x))||^2 / ||x||^2)`` on white noise, away from the edges."""
    x = np.random.default_rng(seed).standard_normal((1, length, 1)).astype(np.float32)
    q = PQMF(bands)
    y = np.asarray(q.synthesis(q.analysis(jnp.asarray(x))))
    edge = q.analysis_filters.shape[1]
    err = x[0, edge:-edge, 0] - y[0, edge:-edge, 0]
    return float(10 * np.log10(np.sum(err ** 2) / np.sum(x[0, edge:-edge, 0] ** 2)))
