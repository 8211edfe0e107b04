"""What the live page shows, published by the training thread and read by the
server's threads under one lock.

The training thread only appends small host values (floats of a chunk, an
evaluation row) and hands over copies of the parameters; everything the model
computes for the page (the latent map, decodes) runs on the server's side from
a :class:`Snapshot` that no training step can touch.
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jvae.app.dashboard.explorer import Explorer, LatentMap

__all__ = ["Snapshot", "RunState", "IMAGE_KINDS", "AUDIO_KINDS", "AUDIO_PLOT_KINDS"]

# Each epoch's files (jvae.app.outputs): image grids in WORKDIR/images; for
# audio, clips and their plots in WORKDIR/audio.
IMAGE_KINDS = ("samples", "reconstructions")
AUDIO_KINDS = ("samples", "reconstructions")
AUDIO_PLOT_KINDS = ("waveforms", "spectrograms")
# An epoch counts once its samples are written (the first of its files).
_EPOCH_FILES = (("images", re.compile(r"samples_epoch(\d+)\.png")),
                ("audio", re.compile(r"samples_epoch(\d+)\.wav")))


class Snapshot(NamedTuple):
    """A model state the page decodes from.

    Attributes:
      epoch: epochs trained when the parameters were copied.
      step: optimizer step.
      params: a private copy of the parameters, on one device.
      latents: the test set's :class:`~jvae.app.dashboard.explorer.LatentMap`.
    """

    epoch: int
    step: int
    params: Any
    latents: LatentMap


def _finite(x):
    """JSON has no NaN/inf: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class RunState:
    """The page's data. Every change bumps ``version`` and wakes waiting readers."""

    def __init__(self):
        self._cond = threading.Condition()
        self.version = 0
        self.closed = False
        self.status = "waiting"
        self.info: dict[str, Any] = {}
        self.workdir: Path | None = None
        self.explorer: Explorer | None = None
        # The model and the images the map encodes: what a fitted sampler's preview is fit to.
        self.vae: Any = None
        self.map_images: tuple[np.ndarray, np.ndarray | None] | None = None
        self.labels: np.ndarray | None = None
        self.sample_rate: int | None = None
        self.train: list[dict[str, Any]] = []
        self.test: list[dict[str, Any]] = []
        self.snapshot: Snapshot | None = None
        self._t_start = time.monotonic()
        self._last_chunk: tuple[int, float] | None = None
        self.progress: dict[str, Any] = {}

    def _bump(self) -> None:
        self.version += 1
        self._cond.notify_all()

    def start(self, info: dict[str, Any], explorer: Explorer, labels: np.ndarray,
              workdir: Path | None, sample_rate: int | None = None, *, vae: Any = None,
              map_images: tuple[np.ndarray, np.ndarray | None] | None = None) -> None:
        """Records the run card, the model's explorer and (for fitted samplers) the model
        and the mapped images with their conditions."""
        with self._cond:
            self.info, self.explorer, self.labels = info, explorer, labels
            self.vae, self.map_images = vae, map_images
            self.workdir, self.sample_rate = workdir, sample_rate
            self.status = "training"
            self._t_start = time.monotonic()
            self.progress = {"step": info.get("step", 0), "epoch": info.get("start_epoch", 0),
                             "elapsed_s": 0.0, "images_per_sec": None}
            self._bump()

    def add_chunk(self, step: int, metrics: dict[str, float]) -> None:
        """A point of the training curve; images/s from the steps since the last one."""
        now = time.monotonic()
        with self._cond:
            self.train.append({"step": int(step), **{k: _finite(float(v))
                                                     for k, v in metrics.items()}})
            rate = None
            if self._last_chunk is not None and step > self._last_chunk[0]:
                rate = ((step - self._last_chunk[0]) * self.info.get("batch_size", 0)
                        / max(now - self._last_chunk[1], 1e-9))
            self._last_chunk = (int(step), now)
            spe = max(self.info.get("steps_per_epoch", 1), 1)
            self.progress = {**self.progress, "step": int(step), "epoch": step / spe,
                             "elapsed_s": now - self._t_start,
                             "images_per_sec": rate or self.progress.get("images_per_sec")}
            self._bump()

    def add_row(self, row: dict[str, Any]) -> None:
        """An evaluation row (as written to ``metrics.jsonl``)."""
        with self._cond:
            self.test.append({k: _finite(v) for k, v in row.items()})
            self.progress = {**self.progress, "epoch": row.get("epoch"), "step": row.get("step"),
                             "last_checkpoint": row.get("epoch"),
                             "images_per_sec": row.get("images_per_sec",
                                                       self.progress.get("images_per_sec")),
                             "elapsed_s": time.monotonic() - self._t_start}
            if self._last_chunk is not None:  # evaluation time is not training time
                self._last_chunk = None
            self._bump()

    def publish(self, snapshot: Snapshot) -> None:
        """Makes ``snapshot`` the one requests decode from."""
        with self._cond:
            self.snapshot = snapshot
            self._bump()

    def finish(self, status: str = "finished") -> None:
        with self._cond:
            self.status = status
            self._bump()

    def close(self) -> None:
        """Wakes and ends every waiting reader (the server is stopping)."""
        with self._cond:
            self.closed = True
            self._bump()

    def wait_newer(self, version: int, timeout: float) -> int | None:
        """Blocks until ``self.version > version`` (returns it) or ``timeout`` (None)."""
        with self._cond:
            if self._cond.wait_for(lambda: self.version > version or self.closed, timeout):
                return self.version
            return None

    def image_epochs(self) -> list[int]:
        """Epochs whose outputs exist: grids in ``WORKDIR/images`` or clips in ``WORKDIR/audio``."""
        if self.workdir is None:
            return []
        epochs = set()
        for name, pattern in _EPOCH_FILES:
            folder = self.workdir / name
            if folder.is_dir():
                epochs.update(int(m.group(1)) for p in folder.iterdir()
                              if (m := pattern.fullmatch(p.name)))
        return sorted(epochs)

    def _epoch_file(self, folder: str, kind: str, epoch: int, suffix: str) -> Path | None:
        if self.workdir is None:
            return None
        path = self.workdir / folder / f"{kind}_epoch{epoch:03d}{suffix}"
        return path if path.is_file() else None

    def image_path(self, kind: str, epoch: int) -> Path | None:
        """An epoch's PNG: a grid (``IMAGE_KINDS``) or an audio plot (``AUDIO_PLOT_KINDS``)."""
        if kind in IMAGE_KINDS:
            return self._epoch_file("images", kind, epoch, ".png")
        if kind in AUDIO_PLOT_KINDS:
            return self._epoch_file("audio", kind, epoch, ".png")
        return None

    def audio_path(self, kind: str, epoch: int) -> Path | None:
        """An epoch's WAV of prior samples or of test clips and reconstructions."""
        return self._epoch_file("audio", kind, epoch, ".wav") if kind in AUDIO_KINDS else None

    def summary(self, train_from: int = 0, test_from: int = 0) -> dict[str, Any]:
        """Everything but the map's points, as JSON values; curves from the given indices."""
        with self._cond:
            snap = self.snapshot
            out = {"version": self.version, "status": self.status, "info": self.info,
                   "progress": {**self.progress,
                                "elapsed_s": (time.monotonic() - self._t_start
                                              if self.status == "training"
                                              else self.progress.get("elapsed_s"))},
                   "train_from": train_from, "train": self.train[train_from:],
                   "test_from": test_from, "test": self.test[test_from:],
                   "train_total": len(self.train), "test_total": len(self.test)}
        out["image_epochs"] = self.image_epochs()
        if snap is not None:
            lat = snap.latents
            out["latents"] = {
                "epoch": snap.epoch, "step": snap.step, "active_units": lat.active_units,
                "kl": None if lat.kl is None else lat.kl.tolist(),
                "variance": lat.variance.tolist(), "explained": lat.explained.tolist()}
        return out

    def latents(self) -> dict[str, Any] | None:
        """The map: projected points, labels and the way back to latents."""
        snap = self.snapshot
        if snap is None:
            return None
        lat = snap.latents
        lo, hi = np.percentile(lat.codes, [1, 99], axis=0)
        return {"epoch": snap.epoch, "xy": np.round(lat.xy, 4).tolist(),
                "labels": [] if self.labels is None else self.labels.tolist(),
                "center": lat.center.tolist(), "components": lat.components.tolist(),
                "lo": lo.tolist(), "hi": hi.tolist(),
                "axes": ("z" if lat.codes.shape[1] <= 2 else "pca")}
