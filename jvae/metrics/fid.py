"""The Fréchet Inception Distance: activation statistics, their cache, and the distance.

FID (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium", arXiv:1706.08500) fits a Gaussian to the pool3
features of each image set and measures

.. math::

    d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\big(\\Sigma_1 + \\Sigma_2
          - 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\big),

computed here exactly as pytorch-fid 0.3.0 computes it (:func:`frechet_distance`).

The statistics are accumulated on the device batch by batch (:func:`accumulate`):
sums of the features and of their outer products, shifted by the first batch's
mean so that the covariance does not cancel catastrophically, and Kahan-compensated
so that float32 sums over many batches lose no more than one rounding. The
covariance is unbiased (``N - 1``), as ``np.cov``. The statistics of a data split
are computed once and cached in an ``.npz`` file under a key the caller derives,
e.g. :func:`split_fingerprint` of the split's images (:func:`cached_stats`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import linalg

from jvae.base import Array, JvaeError

__all__ = ["FidError", "ActivationStats", "MomentSums", "frechet_distance", "fid_score", "init_moments", "accumulate",
           "moments_to_stats", "activation_statistics", "save_stats", "load_stats", "cached_stats",
           "split_fingerprint"]


class FidError(JvaeError, ValueError):
    """Statistics FID cannot be computed from; the message names the fix."""


class ActivationStats(NamedTuple):
    """A Gaussian fitted to features.

    Attributes:
      mu: ``(D,)`` float64 mean.
      sigma: ``(D, D)`` float64 unbiased covariance.
      count: number of samples; 0 where a loaded file did not record it.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int


class MomentSums(NamedTuple):
    """On-device running sums of features (a pytree; :func:`accumulate` updates it).

    Attributes:
      shift: ``(D,)`` the first batch's mean, subtracted from every feature.
      count: samples summed (int32 scalar).
      total: ``(D,)`` sum of ``x - shift``.
      total_err: ``(D,)`` its Kahan compensation (the true sum is ``total - total_err``).
      outer: ``(D, D)`` sum of ``(x - shift)(x - shift)^T``.
      outer_err: ``(D, D)`` its Kahan compensation.
    """

    shift: Array
    count: Array
    total: Array
    total_err: Array
    outer: Array
    outer_err: Array


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm``, without the warning SciPy 1.16+ gives for a singular matrix.

    pytorch-fid's fallback looks at the root, not at the warning: a singular
    product (fewer images than feature dimensions) whose root is finite is
    used as it is, so the warning says nothing the caller can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(a)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """The Fréchet distance between two Gaussians, as pytorch-fid computes it.

    ``(Sigma1 Sigma2)^{1/2}`` is ``scipy.linalg.sqrtm``'s; where the product is
    too singular for it (a non-finite result), ``eps`` is added to both
    diagonals and the root taken again. SciPy's warning about a singular
    product (statistics of fewer images than dimensions) is not passed on:
    as in pytorch-fid, only a non-finite root changes the result. A complex root whose diagonal has an
    imaginary part within 1e-3 of zero is replaced by its real part.

    Args:
      mu1: ``(D,)`` mean of the first set.
      sigma1: ``(D, D)`` covariance of the first set.
      mu2: ``(D,)`` mean of the second set.
      sigma2: ``(D, D)`` covariance of the second set.
      eps: the diagonal offset of the singular case.

    Returns:
      The squared Fréchet distance (FID when the inputs are pool3 statistics).

    Raises:
      FidError: shapes that differ, or a root with a large imaginary part.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise FidError(f"statistics of different dimensions: mu {mu1.shape} vs {mu2.shape}, sigma "
                       f"{sigma1.shape} vs {sigma2.shape}; compute both with the same network and layer")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FidError(f"the covariances' product has no real square root (imaginary component "
                           f"{np.max(np.abs(covmean.imag)):.3g}): they are too ill-conditioned; "
                           "compute the statistics from more images")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_score(stats_a: ActivationStats, stats_b: ActivationStats) -> float:
    """The Fréchet Inception Distance between two sets' statistics.

    Args:
      stats_a: pool3 statistics of one image set.
      stats_b: those of the other.

    Returns:
      FID (symmetric in its arguments up to rounding).
    """
    return frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma)


def init_moments(dim: int, dtype: Any = None) -> MomentSums:
    """Empty sums for ``dim``-dimensional features.

    Args:
      dim: feature dimension (2048 for pool3).
      dtype: of the sums; default float64 where JAX has it enabled, else float32.

    Returns:
      A :class:`MomentSums` holding no samples.
    """
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
    vec, mat = jnp.zeros((dim,), dtype), jnp.zeros((dim, dim), dtype)
    return MomentSums(vec, jnp.zeros((), jnp.int32), vec, vec, mat, mat)


def _kahan_add(total: Array, err: Array, value: Array) -> tuple[Array, Array]:
    """Compensated summation: ``total - err`` tracks the exact running sum."""
    y = value - err
    t = total + y
    return t, (t - total) - y


@jax.jit
def accumulate(moments: MomentSums, features: Array, mask: Array | None = None) -> MomentSums:
    """Adds one batch of features to the running sums, on the device.

    The first batch holding samples sets the shift to its mean. Padding rows
    (``mask`` False) contribute nothing, whatever their values, so a last
    partial batch can be padded to the batch size and reuse the compiled step.

    Args:
      moments: the sums so far (:func:`init_moments` at first).
      features: ``(B, D)``.
      mask: optional ``(B,)`` bool, True for real samples.

    Returns:
      The updated sums.
    """
    dtype = moments.total.dtype
    x = features.astype(dtype)
    keep = jnp.ones(x.shape[:1], bool) if mask is None else mask.astype(bool)
    n = jnp.sum(keep, dtype=jnp.int32)
    batch_mean = jnp.sum(jnp.where(keep[:, None], x, 0), axis=0) / jnp.maximum(n, 1).astype(dtype)
    shift = jnp.where(moments.count == 0, batch_mean, moments.shift)
    d = jnp.where(keep[:, None], x - shift, 0)
    total, total_err = _kahan_add(moments.total, moments.total_err, jnp.sum(d, axis=0))
    outer, outer_err = _kahan_add(moments.outer, moments.outer_err,
                                  jnp.matmul(d.T, d, precision=lax.Precision.HIGHEST))
    return MomentSums(shift, moments.count + n, total, total_err, outer, outer_err)


def moments_to_stats(moments: MomentSums) -> ActivationStats:
    """Mean and unbiased covariance (as ``np.mean``, ``np.cov``) from the sums, in float64.

    Args:
      moments: sums of at least two samples.

    Returns:
      The :class:`ActivationStats`.

    Raises:
      FidError: fewer than two samples.
    """
    n = int(moments.count)
    if n < 2:
        raise FidError(f"FID statistics need at least 2 images, got {n}; pass more images")
    mean_d = _compensated(moments.total, moments.total_err) / n
    outer = _compensated(moments.outer, moments.outer_err)
    sigma = (outer - n * np.outer(mean_d, mean_d)) / (n - 1)
    return ActivationStats(np.asarray(moments.shift, np.float64) + mean_d, (sigma + sigma.T) / 2, n)


def _compensated(total: Array, err: Array) -> np.ndarray:
    """A Kahan sum's value in float64."""
    return np.asarray(total, np.float64) - np.asarray(err, np.float64)


def activation_statistics(features_fn: Callable[[Any], Array], images_iter: Iterable[Any],
                          dtype: Any = None) -> ActivationStats:
    """Feature statistics of an image set, accumulated on the device batch by batch.

    Args:
      features_fn: images -> ``(B, D)`` features, e.g.
        ``functools.partial(inception_features, params)``.
      images_iter: yields image batches, or ``(images, mask)`` pairs whose
        ``(B,)`` bool mask marks the real images of a padded batch.
      dtype: of the on-device sums (see :func:`init_moments`).

    Returns:
      The :class:`ActivationStats` of all real images.

    Raises:
      FidError: fewer than two images.
    """
    moments = None
    for batch in images_iter:
        images, mask = batch if isinstance(batch, tuple) else (batch, None)
        features = features_fn(images)
        if moments is None:
            moments = init_moments(features.shape[-1], dtype)
        moments = accumulate(moments, features, None if mask is None else jnp.asarray(mask, bool))
    if moments is None:
        raise FidError("FID statistics need at least 2 images, got none; pass a non-empty image iterator")
    return moments_to_stats(moments)


def save_stats(path: str | os.PathLike, stats: ActivationStats, key: str = "") -> None:
    """Writes statistics to an ``.npz`` file (atomically: a reader never sees half a file).

    Args:
      path: the file; its name is used as given.
      stats: what to store (``mu``, ``sigma`` and ``count`` arrays, as pytorch-fid's files plus ``count``).
      key: identifies what they are statistics of (e.g. :func:`split_fingerprint` of a split).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, mu=np.asarray(stats.mu, np.float64), sigma=np.asarray(stats.sigma, np.float64),
                 count=np.int64(stats.count), key=np.str_(key))
    os.replace(tmp, path)


def load_stats(path: str | os.PathLike, key: str | None = None) -> ActivationStats:
    """Reads statistics written by :func:`save_stats` (or pytorch-fid's ``mu``/``sigma`` files).

    Args:
      path: the ``.npz`` file.
      key: when given, the key the file must hold.

    Returns:
      The stored :class:`ActivationStats`.

    Raises:
      FidError: no such file, not a statistics file, or one of another key.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key = str(z["key"]) if "key" in z.files else ""
            stats = ActivationStats(np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64),
                                    int(z["count"]) if "count" in z.files else 0)
    except (OSError, KeyError, ValueError) as e:
        raise FidError(f"cannot read FID statistics from {path} ({e}); "
                       "delete the file to compute them again") from None
    if key is not None and stored_key != key:
        raise FidError(f"{path} holds FID statistics of {stored_key!r}, not {key!r}; "
                       "delete the file or pass its key")
    return stats


def cached_stats(path: str | os.PathLike, key: str, compute: Callable[[], ActivationStats]) -> ActivationStats:
    """Statistics from the cache file when it holds ``key``; else computed, saved and returned.

    Args:
      path: the ``.npz`` cache file.
      key: what the statistics are of, e.g. :func:`split_fingerprint` of the split's images.
      compute: computes them on a miss, e.g. a closure over :func:`activation_statistics`.

    Returns:
      The :class:`ActivationStats` of ``key``.
    """
    if Path(path).is_file():
        try:
            return load_stats(path, key)
        except FidError:
            pass
    stats = compute()
    save_stats(path, stats, key)
    return stats


def split_fingerprint(array: Any) -> str:
    """A stable hash of an array's dtype, shape and bytes (BLAKE2b, 128 bits).

    The same data give the same hex string in every process and on every
    machine; reading 1 GB takes about a second.

    Args:
      array: a numeric array (anything ``np.asarray`` takes).

    Returns:
      32 hex digits.

    Raises:
      FidError: an array of Python objects, which has no stable bytes.
    """
    a = np.ascontiguousarray(array)
    if a.dtype.hasobject:
        raise FidError(f"cannot fingerprint an array of {a.dtype}: it holds Python objects; "
                       "pass a numeric array")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()
