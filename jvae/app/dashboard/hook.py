"""The live page as a training hook (:mod:`jvae.app.hooks`)."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jvae.app.dashboard.explorer import MAP_POINTS, latent_map, make_explorer
from jvae.app.dashboard.server import DashboardServer, start_server
from jvae.app.dashboard.state import RunState, Snapshot
from jvae.app.outputs import run_sample_rate

__all__ = ["Dashboard"]


class Dashboard:
    """Serves the live page of a run; pass it to ``train_and_evaluate(hooks=...)``.

    The server starts (and prints its address) when the object is made. Each
    hook call from the training thread only appends small host values or queues
    the copy of the parameters the loop hands over; a background thread moves
    that copy to one device, computes the latent map and publishes it for
    decoding, so no request ever reads arrays a later (donating) step reuses.

    Args:
      host: address to bind (loopback by default; another prints a warning).
      port: port to bind; 0 picks a free one. A port in use prints one warning
        and the hook does nothing.
      quiet: do not print the address.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 2998, *, quiet: bool = False):
        self.state = RunState()
        self.server: DashboardServer | None = start_server(self.state, host, port, quiet=quiet)
        self._jobs: queue.Queue = queue.Queue(maxsize=1)
        self._worker: threading.Thread | None = None
        self._map_images: tuple[np.ndarray, np.ndarray | None] | None = None
        self._device = jax.local_devices()[0]

    @property
    def url(self) -> str | None:
        """The page's address, or None when it could not start."""
        return None if self.server is None else self.server.url

    # -- hook methods ----------------------------------------------------------
    def on_start(self, info: dict[str, Any]) -> None:
        """Reads the run card and the model from ``info``: the train loop's keys
        (``config``, ``workdir``, ``devices``, ``start_epoch``, ``step``) plus
        ``experiment``, ``test`` (the test split), ``params`` (a private copy),
        ``steps_per_epoch`` and optionally ``sample_rate``; an audio run's rate
        comes from there or from the model's data spec
        (:func:`~jvae.app.outputs.run_sample_rate`)."""
        if self.server is None:
            return
        experiment, test = info["experiment"], info["test"]
        vae, cond_key = experiment.vae, experiment.cond_key
        num_classes = None if cond_key is None else int(test[cond_key].shape[-1])
        n = min(MAP_POINTS, len(test["image"]))
        self._map_images = (test["image"][:n], None if cond_key is None else test[cond_key][:n])
        config = info.get("config", {})
        sample_rate = run_sample_rate(info)
        card = {"config": config, "workdir": str(info.get("workdir", "")),
                "num_devices": info.get("devices", 1), "placement": info.get("placement"),
                "device_kind": self._device.device_kind, "platform": self._device.platform,
                "batch_size": config.get("batch_size", 0), "epochs": config.get("epochs"),
                "steps_per_epoch": info.get("steps_per_epoch", 1),
                "start_epoch": info.get("start_epoch", 0), "step": info.get("step", 0),
                "latent_size": int(np.prod(vae.latent_shape)),
                "data_shape": list(test["image"].shape[1:]), "num_classes": num_classes,
                "sample_rate": sample_rate, "posterior": vae.posterior.name}
        workdir = info.get("workdir")
        self.state.start(card, make_explorer(vae, num_classes),
                         np.asarray(test["label"][:n]).astype(int),
                         None if workdir is None else Path(workdir), sample_rate,
                         vae=vae, map_images=self._map_images)
        self._worker = threading.Thread(target=self._work, name="jvae-dashboard-maps",
                                        daemon=True)
        self._worker.start()
        self.publish_params(card["start_epoch"], card["step"], info["params"])

    def on_chunk(self, step: int, metrics: dict[str, float]) -> None:
        if self.server is not None:
            self.state.add_chunk(step, metrics)

    def on_epoch(self, row: dict[str, Any], params: Any) -> None:
        if self.server is None:
            return
        self.state.add_row(row)
        self.publish_params(int(row.get("epoch", 0)), int(row.get("step", 0)), params)

    def on_end(self) -> None:
        if self.server is None:
            return
        self.state.finish()
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout=5)
        self.server.stop()
        self.server = None

    # -- background work -------------------------------------------------------
    def publish_params(self, epoch: int, step: int, params: Any) -> None:
        """Queues parameters to decode from: a private copy (the train loop's
        ``on_epoch`` hands one over); a queued job not yet started is replaced,
        only the newest parameters matter to the page."""
        job = (epoch, step, params)
        try:
            self._jobs.get_nowait()
        except queue.Empty:
            pass
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            epoch, step, params = job
            try:
                params = jax.device_put(params, self._device)
                images, cond = self._map_images
                lat = latent_map(self.state.explorer, params, images, cond)
            except Exception as e:  # the page must never stop the run
                print(f"warning: live page could not map epoch {epoch}: {e}", file=sys.stderr)
                continue
            self.state.publish(Snapshot(epoch, step, params, lat))

    def wait_for_snapshot(self, epoch: int, timeout: float = 60.0) -> bool:
        """Blocks until the published snapshot is at least ``epoch`` (for tests, serve)."""
        version = -1
        while True:
            snap = self.state.snapshot
            if snap is not None and snap.epoch >= epoch:
                return True
            newer = self.state.wait_newer(version, timeout)
            if newer is None or self.state.closed:
                return False
            version = newer
