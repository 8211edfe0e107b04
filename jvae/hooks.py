"""Hooks: objects the training loop calls at fixed points, so that watchers
(the live page of :mod:`jvae.dashboard`, :mod:`jvae.tensorboard` logs) plug in
without editing the loop.

A hook may define any of these methods; missing ones are skipped:

* ``on_start(info: RunInfo)`` once, after compilation, before the first step;
* ``on_chunk(step, metrics)`` after each chunk of steps, ``metrics`` being
  host floats (means over the chunk's steps);
* ``on_epoch(row, params)`` after each epoch's evaluation, checkpoint and
  images, with the row written to ``metrics.jsonl``; ``params`` may be donated
  by the next step, so a hook that keeps them must copy them before returning;
* ``on_end()`` once when training stops, also on an error or Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["RunInfo", "call_hooks"]


class RunInfo(NamedTuple):
    """What a hook learns about a run when it starts.

    Attributes:
      cfg: the run's :class:`~jvae.config.Config`.
      workdir: the run directory.
      vae: the model (pure encode/decode functions).
      test: the test split (``image``, ``label`` and, for a conditional model,
        the condition under ``cond_key``).
      cond_key: the batch entry the model is conditioned on, or None.
      num_devices: devices the run trains on.
      steps_per_epoch: training steps per epoch.
      start_epoch: epochs already done (a resumed run).
      step: the optimizer step at the start.
      params: the parameters at the start (copy them to keep them).
      sample_rate: audio sample rate for sequence data heard as sound, else None.
    """

    cfg: Any
    workdir: Path
    vae: Any
    test: dict[str, np.ndarray]
    cond_key: str | None
    num_devices: int
    steps_per_epoch: int
    start_epoch: int
    step: int
    params: Any
    sample_rate: int | None = None


def call_hooks(hooks: Sequence[Any], name: str, *args) -> None:
    """Calls ``hook.name(*args)`` on every hook that defines it, in order."""
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)
