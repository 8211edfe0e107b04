"""Samplers by name, the codes they are fitted to, and their files.

:func:`fit_sampler` is the front door: ``fit_sampler("gmm", latents, key)``
returns a :class:`~jvae.training.samplers.base.FittedSampler` whose ``sample``
and ``log_prob`` are jitted pure functions. :func:`posterior_codes` makes the
codes from a trained model: one draw of ``q(z|x)`` per image (the code itself
for deterministic families), so the sampler estimates the aggregate posterior
``q(z) = E_x q(z|x)`` the decoder was trained on, not the narrower cloud of
posterior means (as Pythae's samplers, which fit ``model(x).z``, the
reparameterised draw of a VAE). :func:`save_sampler` and :func:`load_sampler`
write and read one fitted sampler as msgpack
(:func:`flax.serialization.msgpack_serialize`): its name, options, state and
the caller's metadata.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jvae.base import VAE, Array
from jvae.layers.convolution import native_convolutions
from jvae.training.samplers.base import FittedSampler, Sampler, SamplerError
from jvae.training.samplers.gmm import gaussian_mixture
from jvae.training.samplers.maf import masked_autoregressive_flow
from jvae.training.samplers.two_stage import two_stage_vae

__all__ = ["SAMPLERS", "MAX_SAMPLER_DIM", "sampler_by_name", "fit_sampler", "posterior_codes",
           "save_sampler", "load_sampler", "sampler_to_bytes", "sampler_from_bytes"]

# Every fitted sampler by name: ``name -> factory(**options) -> Sampler``.
SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "gmm": gaussian_mixture,
    "two-stage": two_stage_vae,
    "maf": masked_autoregressive_flow,
}

# The largest flat code a sampler is fitted to: a full-covariance mixture holds
# K D^2 numbers and each EM iteration costs N K D^2; a MAF samples in D passes per layer.
MAX_SAMPLER_DIM = 512

# What a saved sampler's file format is; a file of another version is refitted.
_FORMAT = 1


def sampler_by_name(name: str, **options: Any) -> Sampler:
    """The :class:`~jvae.training.samplers.base.Sampler` registered as ``name``.

    Raises:
      SamplerError: an unknown name or option.
    """
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[name](**options)
    except TypeError as e:  # an option the factory does not take
        raise SamplerError(f"sampler {name}: {e}") from None


def _check_latents(latents: np.ndarray, name: str) -> np.ndarray:
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or len(latents) < 2:
        raise SamplerError(f"a sampler is fitted to flat codes (N, D) with N >= 2, got shape "
                           f"{latents.shape}")
    if latents.shape[1] > MAX_SAMPLER_DIM:
        raise SamplerError(f"the {name} sampler models codes of at most {MAX_SAMPLER_DIM} "
                           f"numbers; these have {latents.shape[1]} (sample such a model from "
                           "its prior)")
    if not np.all(np.isfinite(latents)):
        raise SamplerError("the codes to fit hold values that are not finite")
    return latents


def fit_sampler(name: str, latents: np.ndarray | Array, key: Array,
                **options: Any) -> FittedSampler:
    """Fits the sampler ``name`` (:data:`SAMPLERS`) to flat codes.

    Args:
      name: ``gmm``, ``two-stage`` or ``maf``.
      latents: ``(N, D)`` codes (:func:`posterior_codes`).
      key: PRNG key of the fit (initialisation, minibatches).
      **options: the factory's keyword arguments (e.g. ``num_components`` for
        ``gmm``, ``steps`` for ``maf``).

    Returns:
      The :class:`~jvae.training.samplers.base.FittedSampler`.

    Raises:
      SamplerError: an unknown name or option, codes that are not ``(N, D)``,
        not finite, too wide, or fewer than a mixture's components.
    """
    sampler = sampler_by_name(name, **options)
    latents = _check_latents(latents, name)
    k = sampler.options.get("num_components", 1)
    if len(latents) < k:
        raise SamplerError(f"a mixture of {k} components needs at least {k} codes, got "
                           f"{len(latents)}; lower the components")
    return FittedSampler(sampler, sampler.fit(key, jnp.asarray(latents)))


@functools.lru_cache(maxsize=8)
def _draw_program(vae: VAE, draw: bool) -> Callable:
    def codes(params, x, cond, key):
        with native_convolutions():  # forward only: XLA's own convolutions
            post = vae.encode(params, x, cond)
            z = vae.posterior.sample(key, post, 1)[0] if draw else vae.posterior.mean(post)
        return z.reshape(z.shape[0], -1).astype(jnp.float32)

    return jax.jit(codes)


def posterior_codes(vae: VAE, params: Any, images: np.ndarray, key: Array, *,
                    cond: np.ndarray | None = None, draw: bool = True,
                    batch_size: int = 256) -> np.ndarray:
    """Flat codes ``(N, D)`` of ``images``: one draw of ``q(z|x)`` each, or with
    ``draw=False`` the posterior means.

    Batches have one shape (the last is padded with its first row, whose code is
    dropped), so any number of images compiles once; batch ``i`` draws with
    ``fold_in(key, i)``.
    """
    images = np.asarray(images, np.float32)
    if len(images) == 0:
        raise SamplerError("no images to encode")
    program = _draw_program(vae, draw)
    batch_size = min(batch_size, len(images))
    out = []
    for i, start in enumerate(range(0, len(images), batch_size)):
        x = images[start:start + batch_size]
        c = None if cond is None else np.asarray(cond[start:start + batch_size], np.float32)
        pad = batch_size - len(x)
        if pad:
            x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
            c = None if c is None else np.concatenate([c, np.repeat(c[:1], pad, 0)])
        z = program(params, jnp.asarray(x), None if c is None else jnp.asarray(c),
                    jax.random.fold_in(key, i))
        out.append(np.asarray(z)[:batch_size - pad])
    return np.concatenate(out)


def _json_value(v: Any) -> Any:
    return [_json_value(x) for x in v] if isinstance(v, (list, tuple)) else v


def sampler_to_bytes(fitted: FittedSampler, meta: dict[str, Any] | None = None) -> bytes:
    """A fitted sampler as msgpack bytes: its name, options, state and ``meta``."""
    record = {"format": _FORMAT, "name": fitted.name,
              "options": {k: _json_value(v) for k, v in fitted.sampler.options.items()},
              "state": jax.tree.map(np.asarray, jax.device_get(fitted.state)),
              "meta": dict(meta or {})}
    return serialization.msgpack_serialize(record)


def sampler_from_bytes(data: bytes) -> tuple[FittedSampler, dict[str, Any]]:
    """The inverse of :func:`sampler_to_bytes`: ``(fitted, meta)``.

    Raises:
      SamplerError: bytes that are not a fitted sampler of this version.
    """
    try:
        record = serialization.msgpack_restore(data)
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise ValueError("not a fitted sampler of this version")
        sampler = sampler_by_name(record["name"], **record["options"])
        state = jax.tree.map(jnp.asarray, record["state"])
        return FittedSampler(sampler, state), dict(record.get("meta") or {})
    except SamplerError:
        raise
    except Exception as e:  # msgpack's own errors, missing entries
        raise SamplerError(f"not a saved sampler ({type(e).__name__}: {e})") from None


def save_sampler(path: str | os.PathLike, fitted: FittedSampler,
                 meta: dict[str, Any] | None = None) -> None:
    """Writes :func:`sampler_to_bytes` to ``path`` atomically (a temporary file, then a
    rename), so a reader never sees half a file."""
    path = Path(path)
    data = sampler_to_bytes(fitted, meta)
    # A name of its own per writer (and the umask's permissions, unlike mkstemp's 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_sampler(path: str | os.PathLike) -> tuple[FittedSampler, dict[str, Any]]:
    """Reads a file :func:`save_sampler` wrote: ``(fitted, meta)``.

    Raises:
      SamplerError: the file is not a saved sampler of this version.
      OSError: it cannot be read.
    """
    return sampler_from_bytes(Path(path).read_bytes())
