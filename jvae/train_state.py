"""Train state, optimizer and the jitted, data-parallel train and eval steps.

The front door of training; the implementation lives in :mod:`jvae.training`
(one module per idea, all re-exported there). Behind this module:

* :class:`TrainState`, :func:`create_train_state` and the steps
  :func:`make_train_step`, :func:`make_eval_step` (:mod:`jvae.training.state`),
  pure functions ``(state, batch) -> (state, metrics)`` jitted over a device mesh;
* :func:`make_optimizer`: Adam behind NaN zeroing and global-norm clipping,
  fused (:mod:`jvae.training.optim`);
* :func:`make_train_epoch`: whole epochs on device as one ``lax.scan``
  (:mod:`jvae.training.epoch`);
* :func:`build`: a run's settings to an :class:`Experiment` (model, objective,
  optimizer; :mod:`jvae.training.experiment`).
"""

from jvae.training.epoch import make_train_epoch, put_dataset
from jvae.training.experiment import DataSpec, Experiment, build, init_state
from jvae.training.optim import clipped_adam
from jvae.training.state import (
    TrainState,
    create_train_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
    make_update_fn,
)

__all__ = [
    "DataSpec",
    "Experiment",
    "TrainState",
    "build",
    "clipped_adam",
    "create_train_state",
    "init_state",
    "make_eval_step",
    "make_optimizer",
    "make_train_epoch",
    "make_train_step",
    "make_update_fn",
    "put_dataset",
]
