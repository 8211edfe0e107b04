"""The model side of the live page: fixed-shape jitted encode and decode, the
2-D map of posterior means, KL per latent dimension, interpolation.

Every function is compiled once per run for one batch size, so requests from
the page never trigger a recompile: a single latent is decoded as row 0 of a
padded batch.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jvae.evaluation import ACTIVE_UNIT_THRESHOLD
from jvae.inference import interpolate_latents, make_sampler

Array = jax.Array

__all__ = ["Explorer", "make_explorer", "LatentMap", "latent_map", "project_2d",
           "interpolate", "DECODE_BATCH", "ENCODE_BATCH", "MAP_POINTS"]

DECODE_BATCH = 10    # one interpolation strip; a single decode is its row 0
ENCODE_BATCH = 250
MAP_POINTS = 1000    # test images on the latent map


class Explorer(NamedTuple):
    """Jitted functions of one model, each for one fixed batch size.

    Attributes:
      decode: ``(params, z (DECODE_BATCH, D), cond) -> E[x|z]`` with flat latents.
      encode: ``(params, x (B, ...), cond) -> (means (B, D), kl (B, D))``, called with
        ``B = min(ENCODE_BATCH, images mapped)``;
        ``kl`` is per dimension for a factorized Normal posterior, else zeros.
      sample: ``(params, key, cond) -> (DECODE_BATCH, ...)`` decoded prior samples.
      latent_shape: the model's per-example latent shape.
      latent_size: ``D = prod(latent_shape)``.
      kl_per_dim: whether ``encode``'s ``kl`` is meaningful.
      num_classes: classes of a conditional model (one-hot condition), else None.
    """

    decode: Callable[..., Array]
    encode: Callable[..., tuple[Array, Array]]
    sample: Callable[..., Array]
    latent_shape: tuple[int, ...]
    latent_size: int
    kl_per_dim: bool
    num_classes: int | None


@functools.lru_cache(maxsize=8)
def make_explorer(vae, num_classes: int | None = None) -> Explorer:
    """Builds the page's jitted functions for ``vae``.

    Memoized on the model (a tuple of functions), so the live page and the
    TensorBoard logger of one run share one set of compiled executables.

    Args:
      vae: a :class:`~jvae.model.VAE`.
      num_classes: for a model conditioned on one-hot labels, their number.
    """
    latent_shape = tuple(vae.latent_shape)
    size = math.prod(latent_shape)
    # KL(q || p) splits over dimensions only for a factorized family with a
    # closed form; the family's own kl is applied to each dimension alone.
    factorized = (vae.posterior.name == "normal" and vae.posterior.analytic_kl
                  and vae.prior is None)

    @jax.jit
    def decode(params, z, cond):
        z = z.reshape(z.shape[0], *latent_shape)
        return vae.likelihood.mean(vae.decode(params, z, cond))

    @jax.jit
    def encode(params, x, cond):
        post = vae.encode(params, x, cond)
        means = vae.posterior.mean(post).reshape(x.shape[0], -1).astype(jnp.float32)
        if factorized:
            one_dim = {k: post[k].reshape(-1, 1) for k in ("loc", "scale")}
            kl = vae.posterior.kl(one_dim).reshape(x.shape[0], -1).astype(jnp.float32)
        else:
            kl = jnp.zeros_like(means)
        return means, kl

    return Explorer(decode, encode, make_sampler(vae, DECODE_BATCH), latent_shape, size,
                    factorized, num_classes)


def one_hot(labels, num_classes: int | None, n: int) -> np.ndarray | None:
    """``n`` one-hot rows of ``labels`` (an int or a sequence), or None without classes."""
    if num_classes is None:
        return None
    labels = np.broadcast_to(np.asarray(labels, np.int64), (n,))
    return np.eye(num_classes, dtype=np.float32)[labels]


def decode_latents(ex: Explorer, params, z: np.ndarray, label: int = 0) -> np.ndarray:
    """Decodes up to ``DECODE_BATCH`` flat latents ``(n, D)`` (padded to the fixed batch)."""
    n = len(z)
    batch = np.zeros((DECODE_BATCH, ex.latent_size), np.float32)
    batch[:n] = z
    out = ex.decode(params, batch, one_hot(label, ex.num_classes, DECODE_BATCH))
    return np.asarray(out[:n], np.float32)


class LatentMap(NamedTuple):
    """Posterior means of test images and their 2-D projection.

    Attributes:
      codes: ``(N, D)`` posterior means.
      kl: ``(D,)`` mean KL per dimension (None when the family does not factorize).
      variance: ``(D,)`` variance of the means across images (activity).
      active_units: dimensions with ``variance > 0.01`` (Burda et al., 2015).
      xy: ``(N, 2)`` projected points.
      center: ``(D,)`` and components ``(2, D)``: ``z = center + xy @ components``.
      explained: fraction of the variance each axis carries.
    """

    codes: np.ndarray
    kl: np.ndarray | None
    variance: np.ndarray
    active_units: int
    xy: np.ndarray
    center: np.ndarray
    components: np.ndarray
    explained: np.ndarray


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """2-D view of ``(N, D)`` codes: the dimensions themselves when ``D <= 2``,
    else the first two principal components (an SVD of the centred codes).

    Returns:
      ``(xy, center, components, explained)`` with ``xy = (codes - center) @ components.T``.
    """
    return tuple(np.asarray(a, np.float32) for a in _project_2d(jnp.asarray(codes, jnp.float32)))


@jax.jit
def _project_2d(codes):
    d = codes.shape[1]
    var = codes.var(axis=0)
    if d <= 2:
        center = jnp.zeros((d,))
        components = jnp.eye(2, d)
        explained = jnp.pad(var, (0, 2 - d)) / jnp.maximum(var.sum(), 1e-12)
    else:
        center = codes.mean(axis=0)
        _, s, vt = jnp.linalg.svd(codes - center, full_matrices=False)
        components = vt[:2]
        explained = s[:2] ** 2 / jnp.maximum((s ** 2).sum(), 1e-12)
    return (codes - center) @ components.T, center, components, explained


def latent_map(ex: Explorer, params, images: np.ndarray, cond: np.ndarray | None) -> LatentMap:
    """Encodes ``images`` (any number, in fixed batches) into a :class:`LatentMap`."""
    n = len(images)
    batch = min(ENCODE_BATCH, n)  # one shape per run: the last batch is padded
    codes, kls = [], []
    for i in range(0, n, batch):
        x = _pad(images[i:i + batch], batch)
        c = None if cond is None else _pad(cond[i:i + batch], batch)
        m, k = jax.device_get(ex.encode(params, x, c))
        codes.append(m)
        kls.append(k)
    codes = np.concatenate(codes)[:n]
    variance = codes.var(axis=0)
    kl = np.concatenate(kls)[:n].mean(axis=0) if ex.kl_per_dim else None
    xy, center, components, explained = project_2d(codes)
    return LatentMap(codes, kl, variance, int(np.sum(variance > ACTIVE_UNIT_THRESHOLD)), xy,
                     center, components, explained)


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if len(a) == n:
        return a
    return np.concatenate([a, np.zeros((n - len(a), *a.shape[1:]), np.float32)])


def interpolate(a: np.ndarray, b: np.ndarray, mode: str, steps: int = DECODE_BATCH) -> np.ndarray:
    """``steps`` latents from ``a`` to ``b``, ``mode`` ``linear`` or ``slerp``
    (:func:`~jvae.inference.interpolate_latents`)."""
    return np.asarray(interpolate_latents(a, b, steps, slerp=mode == "slerp"), np.float32)


def sample_images(ex: Explorer, params, seed: int, label: int = 0) -> np.ndarray:
    """``DECODE_BATCH`` decoded prior samples (of class ``label`` for a conditional model)."""
    cond = one_hot(label, ex.num_classes, DECODE_BATCH)
    return np.asarray(ex.sample(params, jax.random.key(seed), cond), np.float32)

