"""TensorBoard event files for a run, written with ``tensorboardX`` (no TensorFlow).

:class:`TensorBoardLogger` is a training hook (:mod:`jvae.app.hooks`). Into
``WORKDIR/tb`` it writes every training chunk's metrics (``train/...``) and
every evaluation row (``test/...``) as scalars, the run's sample and
reconstruction grids as images, the config as text, and at the end of each
epoch a projector embedding of the test set's posterior means with their
labels as metadata and a sprite of the images. An audio run gets, instead of
grids and sprite, each epoch's clips as audio summaries (``samples``, and
``reconstructions``: test clips and their reconstructions in turn, at the
run's sample rate) and their waveform and log-mel spectrogram plots as images
(``waveforms``, ``spectrograms``), all read from the files the epoch wrote in
``WORKDIR/audio`` (:func:`~jvae.app.outputs.save_epoch_audio`).
``tensorboard --logdir WORKDIR/tb`` shows them. An epoch trained again (a run
resumed from a checkpoint before it) replaces its embedding.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jvae.app.dashboard.explorer import MAP_POINTS, latent_map, make_explorer
from jvae.app.outputs import run_sample_rate

__all__ = ["TensorBoardLogger", "EMBEDDING_TAG", "AUDIO_TAGS", "AUDIO_IMAGE_TAGS"]

EMBEDDING_TAG = "test_posterior_means"
# An audio run's summaries per epoch: clips (audio plugin) and plots (images).
AUDIO_TAGS = ("samples", "reconstructions")
AUDIO_IMAGE_TAGS = ("waveforms", "spectrograms")


class TensorBoardLogger:
    """Writes a run's scalars, images and latent embeddings for TensorBoard.

    Args:
      logdir: the event file folder (default ``WORKDIR/tb``).
      embedding_points: test images in each projector embedding (as many as
        the live page maps, so both share one compiled encoder).
    """

    def __init__(self, logdir: str | Path | None = None, embedding_points: int = MAP_POINTS):
        self.logdir = None if logdir is None else Path(logdir)
        self.embedding_points = embedding_points
        self.writer = None

    def on_start(self, info: dict[str, Any]) -> None:
        """Opens the writer; ``info`` as :func:`~jvae.app.runs.hook_info` makes it."""
        from tensorboardX import SummaryWriter
        self.workdir = Path(info["workdir"])
        self.logdir = self.logdir or self.workdir / "tb"
        self.writer = SummaryWriter(str(self.logdir))
        self.sample_rate = run_sample_rate(info)
        experiment, test = info["experiment"], info["test"]
        cond_key = experiment.cond_key
        num_classes = None if cond_key is None else int(test[cond_key].shape[-1])
        self.explorer = make_explorer(experiment.vae, num_classes)
        n = min(self.embedding_points, len(test["image"]))
        self.images = test["image"][:n]
        self.cond = None if cond_key is None else test[cond_key][:n]
        self.labels = [int(v) for v in np.asarray(test["label"][:n])]
        self.writer.add_text("config", "```\n" + json.dumps(info["config"], indent=1)
                             + "\n```", info["step"])

    def on_chunk(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def on_epoch(self, row: dict[str, Any], params: Any) -> None:
        step, epoch = int(row["step"]), int(row["epoch"])
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch",
                                                                                  "step"):
                group = "epoch" if k.startswith("train_") else "test"
                self.writer.add_scalar(f"{group}/{k}", v, step)
        if self.sample_rate:
            self._add_audio(epoch, step)
        else:
            for kind in ("samples", "reconstructions"):
                self._add_png(kind, self.workdir / "images" / f"{kind}_epoch{epoch:03d}.png",
                              step)
        codes = latent_map(self.explorer, params, self.images, self.cond).codes
        # A sprite shows each point's image; audio clips have none to show.
        sprite = (np.clip(np.transpose(self.images, (0, 3, 1, 2)), 0.0, 1.0)
                  if self.images.ndim == 4 else None)
        self._forget_embedding(epoch)
        self.writer.add_embedding(codes, metadata=self.labels, label_img=sprite,
                                  global_step=epoch, tag=EMBEDDING_TAG)
        self.writer.flush()

    def _forget_embedding(self, epoch: int) -> None:
        """Removes an earlier embedding of ``epoch``, folder and projector entry.

        A resumed run trains the epochs after its checkpoint again; adding one
        twice would print tensorboardX's "Embedding dir exists" and list the
        epoch twice in the projector.
        """
        folder = self.logdir / f"{epoch:05d}" / EMBEDDING_TAG
        if folder.is_dir():
            shutil.rmtree(folder)
        config = self.logdir / "projector_config.pbtxt"
        if not config.is_file():
            return
        text = config.read_text()
        name = f'tensor_name: "{EMBEDDING_TAG}:{epoch:05d}"'
        kept = "".join(b for b in _pbtxt_blocks(text) if name not in b.splitlines())
        if kept != text:
            tmp = config.with_name(config.name + ".tmp")
            tmp.write_text(kept)
            os.replace(tmp, config)

    def _add_png(self, tag: str, path: Path, step: int) -> None:
        if path.is_file():
            img = np.asarray(Image.open(path).convert("RGB"))
            self.writer.add_image(tag, img, step, dataformats="HWC")

    def _add_audio(self, epoch: int, step: int) -> None:
        """The epoch's clips and their plots, as written in ``WORKDIR/audio``."""
        from jvae.datasets.audio import read_wav
        folder = self.workdir / "audio"
        for kind in AUDIO_TAGS:
            path = folder / f"{kind}_epoch{epoch:03d}.wav"
            if path.is_file():
                clip, rate = read_wav(path)
                self.writer.add_audio(kind, clip, step, sample_rate=rate)
        for kind in AUDIO_IMAGE_TAGS:
            self._add_png(kind, folder / f"{kind}_epoch{epoch:03d}.png", step)

    def on_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _pbtxt_blocks(text: str) -> list[str]:
    """The top-level ``embeddings { ... }`` blocks of a projector config, each with its lines."""
    blocks, current, depth = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            blocks.append("".join(current))
            current, depth = [], 0
    if current:  # an unclosed block (a torn write) is kept as it is
        blocks.append("".join(current))
    return blocks
