"""Fitted samplers beside a run's checkpoints: fitted once per checkpoint, then reused.

``jvae sample --sampler gmm|two-stage|maf`` draws codes from a density fitted
to the run's training codes (:mod:`jvae.training.samplers`) instead of the
prior. The fit is saved as ``WORKDIR/samplers/<name>-<step>.msgpack`` for the
checkpoint of that optimizer step, and read back by the next command (and the
live page) while it matches: the same step, the same parameters (a digest of
them: a run started over reaches the same step with others), the same
options. A new checkpoint gets a new fit, which replaces the older files of
that sampler. ``samplers/`` is one of the run's own entries
(:data:`~jvae.app.write_guard.RUN_ENTRIES`), so no command's ``--output`` lands
in it; a run directory that cannot be written still gets its samples, with a
warning that the fit was not kept.

The codes are one posterior draw per training image
(:func:`~jvae.training.samplers.posterior_codes`), drawn and fitted with
fixed seeds, so a fit is a function of the checkpoint and the options.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jvae.base import VAE
from jvae.training.samplers import (
    SAMPLERS,
    FittedSampler,
    SamplerError,
    fit_sampler,
    load_sampler,
    posterior_codes,
    sampler_by_name,
    save_sampler,
)

__all__ = ["SAMPLER_CHOICES", "SAMPLERS_DIR", "RunSampler", "sampler_path", "params_digest",
           "check_sampler_family", "saved_sampler", "run_sampler"]

# ``--sampler``'s choices: the prior (what ``sample`` always drew) or a fitted one.
SAMPLER_CHOICES = ("prior", *SAMPLERS)
# The run's folder of fitted samplers.
SAMPLERS_DIR = "samplers"
# Seeds of the codes' posterior draws and of the fit.
_CODES_SEED, _FIT_SEED = 0, 1
# Families whose codes a density on R^D does not fit, with why.
_UNFIT = {"dirichlet": "lie on the simplex", "vq": "are codebook entries",
          "vmf": "lie on the unit sphere"}


class RunSampler(NamedTuple):
    """A run's fitted sampler.

    Attributes:
      fitted: the sampler and its state.
      path: its file (None for a fit kept in memory only).
      refitted: whether this call fitted it (False: read from ``path``).
      meta: what it was fitted on: ``step``, ``params`` (digest), ``latent_shape``,
        ``codes`` (how many), ``source`` and the fit's seconds ``fit_s``.
    """

    fitted: FittedSampler
    path: Path | None
    refitted: bool
    meta: dict[str, Any]


def sampler_path(workdir: str | os.PathLike, name: str, step: int) -> Path:
    """``WORKDIR/samplers/<name>-<step>.msgpack``."""
    return Path(workdir) / SAMPLERS_DIR / f"{name}-{int(step)}.msgpack"


def params_digest(params: Any) -> str:
    """A digest of a parameter pytree's values, shapes and dtypes (16 hex digits)."""
    h = hashlib.blake2b(digest_size=8)
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_sampler_family(vae: VAE, name: str) -> None:
    """Refuses a fitted sampler for codes a density on ``R^D`` does not fit.

    Raises:
      SamplerError: a Dirichlet (simplex), VQ (codebook) or von Mises-Fisher (sphere)
        family.
    """
    why = _UNFIT.get(vae.posterior.name)
    if why is not None:
        raise SamplerError(f"--sampler {name}: this run's {vae.posterior.name} codes {why}, "
                           "which a density fitted on R^D does not respect; use --sampler prior")


def _matches(meta: dict, want: dict) -> bool:
    return all(meta.get(k) == v for k, v in want.items())


def saved_sampler(workdir: str | os.PathLike, name: str, step: int, digest: str,
                  latent_shape: tuple[int, ...], options: dict[str, Any] | None = None
                  ) -> RunSampler | None:
    """The sampler saved for this checkpoint, or None when there is none that matches.

    A file of another step, parameters, code shape or options (None: any options),
    or one that cannot be read, does not match (it is fitted again).
    """
    path = sampler_path(workdir, name, step)
    want = {"step": int(step), "params": digest, "latent_shape": list(latent_shape)}
    try:
        fitted, meta = load_sampler(path)
    except (OSError, SamplerError):
        return None
    if fitted.name != name or not _matches(meta, want):
        return None
    if options is not None and fitted.sampler.options != sampler_by_name(name, **options).options:
        return None
    return RunSampler(fitted, path, False, meta)


def _keep(path: Path, run: RunSampler) -> None:
    """Saves ``run`` at ``path`` and drops the sampler's files of other steps; a run
    directory that cannot be written gets a warning (the samples are drawn all the same)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_sampler(path, run.fitted, run.meta)
        for old in path.parent.glob(f"{run.fitted.name}-*.msgpack"):
            if old != path and old.stem[len(run.fitted.name) + 1:].isdigit():
                old.unlink(missing_ok=True)
    except OSError as e:
        print(f"warning: the fitted {run.fitted.name} sampler could not be kept at {path} "
              f"({e.strerror or e}); the next command fits it again", file=sys.stderr,
              flush=True)


def run_sampler(workdir: str | os.PathLike | None, name: str, *, step: int, vae: VAE,
                params: Any, images: np.ndarray, cond: np.ndarray | None = None,
                options: dict[str, Any] | None = None, refit: bool = False,
                source: str = "train", batch_size: int = 256) -> RunSampler:
    """The sampler ``name`` fitted for a run's checkpoint: read back, or fitted and saved.

    Args:
      workdir: the run directory (None: fit, keep nothing).
      name: a name of :data:`~jvae.training.samplers.SAMPLERS`.
      step: the checkpoint's optimizer step.
      vae: the run's model.
      params: the checkpoint's parameters (those the samples are decoded with).
      images: the images whose posterior draws it is fitted to (the training split).
      cond: their one-hot labels, for a conditional model.
      options: the sampler's options (e.g. ``{"num_components": 10}``).
      refit: fit even when a matching file exists.
      source: what ``images`` are, recorded in the file's metadata.
      batch_size: images per encoder call.

    Returns:
      A :class:`RunSampler`.

    Raises:
      SamplerError: a family without real-valued codes, no images to fit to,
        bad options.
    """
    check_sampler_family(vae, name)
    options = dict(options or {})
    sampler_by_name(name, **options)  # bad options fail before any encoding
    digest = params_digest(params)
    if workdir is not None and not refit:
        found = saved_sampler(workdir, name, step, digest, vae.latent_shape, options)
        if found is not None:
            return found
    if len(images) == 0:
        raise SamplerError(f"--sampler {name} is fitted to the run's training codes, and this "
                           "run has no training data to encode (an imported run); train it, "
                           "or use --sampler prior")
    start = time.perf_counter()
    codes = posterior_codes(vae, params, images, jax.random.key(_CODES_SEED), cond=cond,
                            batch_size=batch_size)
    fitted = fit_sampler(name, codes, jax.random.key(_FIT_SEED), **options)
    jax.block_until_ready(fitted.state)
    meta = {"step": int(step), "params": digest, "latent_shape": list(vae.latent_shape),
            "codes": int(len(codes)), "source": source,
            "fit_s": round(time.perf_counter() - start, 3)}
    path = None if workdir is None else sampler_path(workdir, name, step)
    run = RunSampler(fitted, path, True, meta)
    if path is not None:
        _keep(path, run)
    return run
