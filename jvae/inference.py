"""Using a trained model: encode, reconstruct, sample, interpolate, traverse.

:func:`make_inference` binds a :class:`~jvae.model.VAE` into jitted pure
functions of ``(params, ...)``; the host helpers around them run whole arrays
through one fixed batch shape (the last batch padded), so a folder of
thousands of images compiles each function once. Latent-space paths
(:func:`interpolate_latents`, :func:`traverse_latents`) are plain ``jnp``
functions of codes, usable inside or outside ``jit``.

Every decode returns the likelihood's mean ``E[x|z]`` (pixel probabilities
for a Bernoulli likelihood), the usual way to show a VAE's output.

:func:`make_sampler` and :func:`make_reconstructor` are the jitted generators
the train loop and the live page draw their images with.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jvae.base import VAE, Array, JvaeError, Posterior
from jvae.datasets.images import IMAGE_SUFFIXES as _FOLDER_SUFFIXES
from jvae.datasets.images import walk_files
from jvae.datasets.pixels import to_float
from jvae.datasets.reader import ImageReadError, read_image
from jvae.distributions.priors import draw_prior
from jvae.layers.convolution import native_convolutions

__all__ = ["InferenceError", "Inference", "make_inference", "posterior_scale", "encode_all",
           "decode_all", "reconstruct_all", "sample_all", "scales_prior", "interpolate_latents",
           "traverse_latents", "make_sampler", "make_reconstructor", "IMAGE_SUFFIXES",
           "list_images", "load_images", "read_images"]


# The suffixes a training folder takes.
IMAGE_SUFFIXES = tuple(sorted(_FOLDER_SUFFIXES))


# Draws of the Monte Carlo posterior scale of families without a closed form (flows).
_SCALE_SAMPLES = 64


class InferenceError(JvaeError, ValueError):
    """Input an inference mode cannot use; the message names it and the fix."""


def posterior_scale(posterior: Posterior, post: dict[str, Array]) -> Array:
    """Per-dimension standard deviation of ``q(z|x)``, shaped like its mean.

    Closed forms for the Normal (its ``scale``) and the Dirichlet
    (``sqrt(a_i (a_0 - a_i) / (a_0^2 (a_0 + 1)))``, ``a_0 = sum_i a_i``); 0 for
    deterministic codes (``point``, ``vq``); otherwise (flows) the standard
    deviation of a fixed set of posterior draws.
    """
    if posterior.name == "normal":
        return post["scale"]
    if posterior.name == "dirichlet":
        a = post["concentration"]
        a0 = a.sum(-1, keepdims=True)
        return jnp.sqrt(a * (a0 - a) / (a0 ** 2 * (a0 + 1.0)))
    if posterior.name in ("point", "vq"):
        return jnp.zeros_like(posterior.mean(post))
    return posterior.sample(jax.random.key(0), post, _SCALE_SAMPLES).std(0)


class Inference(NamedTuple):
    """Jitted pure functions of a trained model.

    Attributes:
      encode: ``(params, x, cond) -> {"mean", "scale"}`` of ``q(z|x[, y])``,
        each ``(B, *latent_shape)`` (:func:`posterior_scale`).
      decode: ``(params, z, cond) -> E[x|z[, y]]``, ``(B, *data_shape)``.
      reconstruct: ``(params, x, cond) -> E[x|z = mean of q(z|x)]``.
      sample: ``(params, key, num, cond=None, temperature=1.0) -> (z, E[x|z])``
        for ``num`` (static) codes ``z`` from the prior; a Normal prior's draws
        are scaled by ``temperature`` (a learned prior's are not: see :func:`scales_prior`).
      vae: the model.
      batch_size: the fixed batch shape of the host helpers.
    """

    encode: Callable[..., dict[str, Array]]
    decode: Callable[..., Array]
    reconstruct: Callable[..., Array]
    sample: Callable[..., tuple[Array, Array]]
    vae: VAE
    batch_size: int


def make_inference(vae: VAE, batch_size: int = 256) -> Inference:
    """Binds ``vae`` into the jitted functions of :class:`Inference`.

    Args:
      vae: the model.
      batch_size: batch shape the host helpers (:func:`encode_all`, ...) pad to.

    Returns:
      An :class:`Inference`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def encode(params, x, cond=None):
        post = vae.encode(params, x, cond)
        return {"mean": vae.posterior.mean(post), "scale": posterior_scale(vae.posterior, post)}

    def decode(params, z, cond=None):
        return vae.likelihood.mean(vae.decode(params, z, cond))

    def reconstruct(params, x, cond=None):
        return decode(params, vae.posterior.mean(vae.encode(params, x, cond)), cond)

    def sample(params, key, num, cond=None, temperature=1.0):
        z = draw_prior(vae, key, num, params)
        if scales_prior(vae):
            z = z * temperature  # a N(0, I) prior (normal, flow, point): N(0, T^2 I)
        return z, decode(params, z, cond)

    return Inference(_forward_jit(encode), _forward_jit(decode), _forward_jit(reconstruct),
                     _forward_jit(sample, static_argnames="num"),
                     vae, int(batch_size))


def scales_prior(vae: VAE) -> bool:
    """Whether a temperature scales the model's prior draws: a fixed N(0, I) prior
    (normal, flow, point) becomes N(0, T^2 I); a Dirichlet, a codebook, the uniform
    prior on a sphere (vmf, whose codes have unit norm) and a learned prior (a
    mixture, a second stochastic layer) have no such scale."""
    return vae.prior is None and vae.posterior.name not in ("dirichlet", "vq", "vmf")


def _forward_jit(fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit`` of a forward-only program, its convolutions XLA's own (on CPU 2-6x
    faster than the im2col + GEMM training uses; :func:`~jvae.layers.native_convolutions`)."""

    @functools.wraps(fn)
    def forward(*args, **kwargs):
        with native_convolutions():
            return fn(*args, **kwargs)

    return jax.jit(forward, **jit_kwargs)


def _batched(fn: Callable[..., dict[str, Array] | Array], batch_size: int, inputs: np.ndarray,
             cond: np.ndarray | None) -> dict[str, np.ndarray] | np.ndarray:
    """Runs ``fn(x, cond)`` over ``inputs`` in batches of one shape (the last one padded)."""
    n = len(inputs)
    if n == 0:
        raise InferenceError("no inputs to process")
    out = []
    for i in range(0, n, batch_size):
        x, c = inputs[i:i + batch_size], None if cond is None else cond[i:i + batch_size]
        pad = batch_size - len(x)
        if pad:  # repeat the first row: padding with zeros could be out of a family's support
            x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
            c = None if c is None else np.concatenate([c, np.repeat(c[:1], pad, 0)])
        y = jax.device_get(fn(jnp.asarray(x), None if c is None else jnp.asarray(c)))
        keep = len(x) - pad
        out.append(jax.tree.map(lambda a: np.asarray(a)[:keep], y))  # noqa: B023 (used here)
    return jax.tree.map(lambda *parts: np.concatenate(parts), *out)


def encode_all(inf: Inference, params, images: np.ndarray,
               cond: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Posterior means and scales of every image: ``{"mean", "scale"}`` ``(N, *latent_shape)``."""
    return _batched(lambda x, c: inf.encode(params, x, c), inf.batch_size,
                    np.asarray(images, np.float32), cond)


def decode_all(inf: Inference, params, z: np.ndarray,
               cond: np.ndarray | None = None) -> np.ndarray:
    """``E[x|z]`` for every code ``(N, *latent_shape)``."""
    return _batched(lambda x, c: inf.decode(params, x, c), inf.batch_size,
                    np.asarray(z, np.float32), cond)


def reconstruct_all(inf: Inference, params, images: np.ndarray,
                    cond: np.ndarray | None = None) -> np.ndarray:
    """``E[x|z]`` at each image's posterior mean (the model's reconstruction)."""
    return _batched(lambda x, c: inf.reconstruct(params, x, c), inf.batch_size,
                    np.asarray(images, np.float32), cond)


def sample_all(inf: Inference, params, key: Array, num: int, cond: np.ndarray | None = None,
               temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``num`` prior samples ``(z, E[x|z])``, drawn ``inf.batch_size`` at a time.

    Batch ``i`` uses ``fold_in(key, i)``, so the first samples do not depend on
    ``num``. ``cond`` ``(num, ...)`` conditions a conditional model.
    """
    if num < 1:
        raise InferenceError(f"need at least one sample, got {num}")
    if temperature <= 0:
        raise InferenceError(f"the temperature must be positive, got {temperature}")
    bs, zs, xs = inf.batch_size, [], []
    for i, start in enumerate(range(0, num, bs)):
        c = None
        if cond is not None:
            c = np.asarray(cond[start:start + bs], np.float32)
            c = jnp.asarray(np.concatenate([c, np.repeat(c[:1], bs - len(c), 0)]))
        z, x = inf.sample(params, jax.random.fold_in(key, i), bs, c, temperature)
        keep = min(bs, num - start)
        zs.append(np.asarray(z)[:keep])
        xs.append(np.asarray(x)[:keep])
    return np.concatenate(zs), np.concatenate(xs)


def interpolate_latents(z_a: Array, z_b: Array, steps: int, *, slerp: bool = False) -> Array:
    """``steps`` codes from ``z_a`` to ``z_b``, both included: ``(steps, *z_a.shape)``.

    Linear: ``(1 - t) z_a + t z_b``. Spherical (White, 2016, arXiv:1609.04468),
    for codes under a Gaussian prior, where the straight line passes through
    the improbable region near the origin:
    ``sin((1 - t) w) / sin(w) z_a + sin(t w) / sin(w) z_b`` with ``w`` the
    angle between the flattened codes; nearly parallel codes fall back to
    the linear path.

    Args:
      z_a: first code, any shape.
      z_b: last code, same shape.
      steps: number of codes (>= 2).
      slerp: spherical instead of linear.
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
    z_a, z_b = jnp.asarray(z_a, jnp.float32), jnp.asarray(z_b, jnp.float32)
    t = jnp.linspace(0.0, 1.0, steps).reshape((steps,) + (1,) * z_a.ndim)
    wa, wb = 1.0 - t, t
    if slerp:
        a, b = z_a.ravel(), z_b.ravel()
        cos = jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-12)
        omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
        sin = jnp.sin(omega)
        parallel = sin < 1e-6
        safe = jnp.where(parallel, 1.0, sin)
        wa = jnp.where(parallel, wa, jnp.sin(wa * omega) / safe)
        wb = jnp.where(parallel, wb, jnp.sin(wb * omega) / safe)
    return wa * z_a + wb * z_b


def traverse_latents(z: Array, dims: Sequence[int], radius: float, steps: int) -> Array:
    """A latent traversal: ``(len(dims), steps, *z.shape)`` codes.

    Row ``i`` holds ``z`` with flattened dimension ``dims[i]`` moved by each of
    ``linspace(-radius, radius, steps)``; the other dimensions keep ``z``'s values
    (Higgins et al., 2017, Figure 7).

    Args:
      z: the centre code (a posterior mean, or the prior's mean).
      dims: flattened latent dimensions, one row each.
      radius: the largest offset.
      steps: offsets per row.
    """
    z = jnp.asarray(z, jnp.float32)
    size = z.size
    bad = [d for d in dims if not 0 <= d < size]
    if bad:
        raise InferenceError(f"latent dimensions {bad} out of range: the code has {size} "
                             f"(0-{size - 1})")
    offsets = jnp.linspace(-radius, radius, steps)
    onehot = jax.nn.one_hot(jnp.asarray(dims), size, dtype=z.dtype)  # (D, size)
    flat = z.ravel()[None, None] + offsets[None, :, None] * onehot[:, None, :]
    return flat.reshape((len(dims), steps, *z.shape))


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, sorted by path: the files a training folder takes
    (:func:`~jvae.datasets.images.walk_files`: recursive, symlinked folders
    followed, hidden entries skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InferenceError(f"--input {folder} is not a folder of images")
    files = walk_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise InferenceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


_CHANNELS = (1, 3, 4)


def _load_one(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One file as float32 ``(H, W, channels)`` in [0, 1]: the training folders' reader
    (:func:`~jvae.datasets.reader.read_image`), at its own size or ``size``."""
    try:
        return to_float(read_image(path, channels, size))
    except ImageReadError as e:
        raise InferenceError(str(e)) from None


def _check_image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(data_shape) != 3 or data_shape[-1] not in _CHANNELS:
        raise InferenceError(f"the run's data have shape {tuple(data_shape)}, not images "
                             "(H, W, 1|3|4); use --dataset instead of image files")
    return tuple(int(d) for d in data_shape)  # type: ignore[return-value]


def load_images(paths: Sequence[str | Path], data_shape: tuple[int, ...],
                workers: int = 8) -> np.ndarray:
    """Reads image files as float32 ``(N, *data_shape)`` in [0, 1].

    Each file is read as a training folder's files are
    (:func:`~jvae.datasets.reader.read_image`: upright by its EXIF orientation,
    8-bit by its bit depth, the data's channels, resized so the short side
    covers the data's height and width, then center-cropped); files are
    decoded on a thread pool (Pillow releases the interpreter lock while decoding).

    Raises:
      InferenceError: an unreadable file, or data that are not images.
    """
    shape = _check_image_shape(data_shape)
    arrays = read_images(paths, shape, shape[:2], workers)
    return np.stack(arrays) if arrays else np.zeros((0, *shape), np.float32)


def read_images(paths: Sequence[str | Path], data_shape: tuple[int, ...],
                size: tuple[int, int] | None = None, workers: int = 8) -> list[np.ndarray]:
    """Reads image files as float32 ``(H, W, C)`` arrays in [0, 1], each at its own size.

    Like :func:`load_images` (the same reader, the data's channels), but an
    image keeps its height and width unless ``size`` ``(H, W)`` is given.

    Args:
      paths: the files.
      data_shape: the run's ``(H, W, C)``; only ``C`` is used.
      size: resize and center-crop every image to this ``(H, W)`` (as training
        does) instead.
      workers: decoding threads.

    Raises:
      InferenceError: an unreadable file (a decompression bomb too), or data
        that are not images.
    """
    channels = _check_image_shape(data_shape)[-1]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda p: _load_one(Path(p), channels, size), paths))


def make_sampler(vae: VAE, num: int, *, repeats: int = 1) -> Callable[..., Array]:
    """``(params, key, cond=None) -> (num, *data_shape)`` decoded prior samples.

    Each z ~ p(z) is decoded to the likelihood's mean E[x|z] (pixel
    probabilities for a Bernoulli likelihood), the usual way to show samples.
    With ``repeats = r``, ``num / r`` codes are drawn and repeated ``r`` times
    in order: a conditional grid with one row per class then decodes every
    class from the same codes (column ``j`` shares ``z_j``), so the rows
    differ only by the label.
    """
    if num % repeats:
        raise ValueError(f"num={num} is not a multiple of repeats={repeats}")

    def sample(params, key, cond=None):
        z = draw_prior(vae, key, num // repeats, params)
        z = jax.numpy.tile(z, (repeats,) + (1,) * (z.ndim - 1))
        return vae.likelihood.mean(vae.decode(params, z, cond))

    return _forward_jit(sample)


def make_reconstructor(vae: VAE) -> Callable[..., Array]:
    """``(params, x, cond=None) -> E[x|z]`` at the posterior mean z = E_q[z|x]."""

    def reconstruct(params, x, cond=None):
        z = vae.posterior.mean(vae.encode(params, x, cond))
        return vae.likelihood.mean(vae.decode(params, z, cond))

    return _forward_jit(reconstruct)
