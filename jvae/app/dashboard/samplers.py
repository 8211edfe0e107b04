"""Fitted samplers on the live page: ``/api/samples?sampler=gmm|two-stage|maf``.

For the snapshot on display the page uses the sampler ``jvae sample --sampler``
saved for that checkpoint (:func:`~jvae.app.samplers.saved_sampler`: the same
step and parameters; fitted to the training set's codes). Without one it fits
a preview in memory to posterior draws of the images the page maps (up to
:data:`~jvae.app.dashboard.explorer.MAP_POINTS` test images; the page writes
nothing), once per snapshot and sampler. Each answer says which in its
``X-Jvae-Sampler`` header, which the page shows under the samples.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from jvae.app.samplers import params_digest, run_sampler, saved_sampler
from jvae.training.samplers import FittedSampler

__all__ = ["PageSamplers", "SAMPLER_HEADER"]

# The response header that says what the samples were drawn from.
SAMPLER_HEADER = "X-Jvae-Sampler"


class PageSamplers:
    """The page's fitted samplers: one per name, for the newest snapshot asked about.

    Fits run one at a time (a request for a sampler being fitted waits for it).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._fits: dict[str, tuple[Any, FittedSampler, str]] = {}

    def get(self, name: str, snap, vae, map_images: tuple[Any, Any] | None,
            workdir: Path | None) -> tuple[FittedSampler, str]:
        """``(fitted, note)`` of sampler ``name`` for ``snap`` (a
        :class:`~jvae.app.dashboard.state.Snapshot`).

        Raises:
          SamplerError: the family has no real-valued codes, or nothing to fit to.
        """
        with self._lock:
            cached = self._fits.get(name)
            if cached is not None and cached[0] is snap:
                return cached[1], cached[2]
            fitted, note = self._fit(name, snap, vae, map_images, workdir)
            self._fits[name] = (snap, fitted, note)
            return fitted, note

    @staticmethod
    def _fit(name, snap, vae, map_images, workdir) -> tuple[FittedSampler, str]:
        if workdir is not None:
            saved = saved_sampler(workdir, name, snap.step, params_digest(snap.params),
                                  vae.latent_shape)
            if saved is not None:
                return saved.fitted, (f"{name} fitted on {saved.meta.get('codes', 0):,} training "
                                      f"codes at step {snap.step} ({saved.path.name})")
        images, cond = map_images if map_images is not None else ([], None)
        fit = run_sampler(None, name, step=snap.step, vae=vae, params=snap.params,
                          images=images, cond=cond, source="test")
        return fit.fitted, (f"{name} fitted here on {fit.meta['codes']:,} test codes, a preview "
                            f"(jvae sample --sampler {name} fits the training set's)")
