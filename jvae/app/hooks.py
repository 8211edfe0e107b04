"""Training hooks: what observes a run, and the ones the train mode attaches.

A hook is any object with some of the methods of :class:`Hook`;
:func:`jvae.app.trainer.train_and_evaluate` calls them. The live page
(:class:`jvae.app.dashboard.Dashboard`) and TensorBoard event files
(:class:`jvae.app.tensorboard.TensorBoardLogger`) are hooks.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from jvae.app.config import Config

__all__ = ["Hook", "call_hooks", "watch_hooks"]


class Hook(Protocol):
    """Observes a training run; every method is optional.

    ``on_start(info)`` once, with the run's settings, devices, model, test
    split and a copy of the starting parameters (:func:`~jvae.app.runs.hook_info`);
    ``on_chunk(step, metrics)`` after each chunk of steps with the chunk's
    metric means (host floats); ``on_epoch(row, params)`` after each
    evaluation, with the ``metrics.jsonl`` row and a copy of the parameters
    (never a buffer a later donated step frees); ``on_end()`` once, however
    training stops. In a multi-process run only process 0 calls its hooks.
    """


def call_hooks(hooks: Sequence[Any], name: str, *args) -> None:
    """Calls ``hook.name(*args)`` on every hook that has that method."""
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)


def watch_hooks(cfg: Config) -> list[Any]:
    """The hooks the train mode attaches: the live page (``--dashboard``) and
    TensorBoard event files (``--tensorboard``)."""
    hooks: list[Any] = []
    if cfg.dashboard:
        from jvae.app.dashboard import Dashboard
        hooks.append(Dashboard(cfg.dashboard_host, cfg.dashboard_port))
    if cfg.tensorboard:
        from jvae.app.tensorboard import TensorBoardLogger
        hooks.append(TensorBoardLogger())
    return hooks
