"""An exponential moving average of the parameters, kept in the optimizer's state.

``parameter_ema(decay)`` is an optax transformation that leaves the updates
as they are and tracks

    ema_t = d_t * ema_{t-1} + (1 - d_t) * params_t,   d_t = min(decay, (1 + t) / (10 + t))

of the parameters *after* each update (``params + updates``). The warm-up of
``d_t`` (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``, also
latent diffusion's ``LitEma``) lets the average follow the first steps instead
of staying near the initialization for ``1 / (1 - decay)`` steps.

Chained after the optimizer (``optax.chain(adam, parameter_ema(0.999))``) the
average lives in :class:`~jvae.train_state.TrainState`'s ``opt_state``: it is
checkpointed, restored and replicated across devices with the rest, and a run
without it keeps the optimizer state it always had. :func:`averaged_params`
reads it back: evaluation, the page, the inference modes and export use it.
A skipped step (zero updates) still moves the average towards the unchanged
parameters, as a step with a zero gradient would.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jvae.base import Array, PyTree

__all__ = ["EmaState", "parameter_ema", "find_ema", "averaged_params", "ema_decay_at"]


class EmaState(NamedTuple):
    """``count``: updates averaged so far; ``ema``: the average, shaped like the parameters."""

    count: Array
    ema: PyTree


def ema_decay_at(decay: float, count: Array) -> Array:
    """``min(decay, (1 + t) / (10 + t))`` at update ``t = count`` (0-based)."""
    t = count.astype(jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def parameter_ema(decay: float) -> optax.GradientTransformationExtraArgs:
    """Tracks an exponential moving average of the parameters; updates pass unchanged.

    Args:
      decay: the average's decay ``d`` in [0, 1).

    Returns:
      An optax transformation whose ``update`` needs ``params``.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    def init(params):
        return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError("parameter_ema needs the parameters: call update(updates, state, params)")
        d = ema_decay_at(decay, state.count)
        ema = jax.tree.map(lambda e, p, u: d * e + (1.0 - d) * (p + u).astype(e.dtype),
                           state.ema, params, updates)
        return updates, EmaState(state.count + 1, ema)

    return optax.GradientTransformationExtraArgs(init, update)


def find_ema(opt_state: PyTree) -> EmaState | None:
    """The :class:`EmaState` in an optimizer state (at its top or in a chain's tuple), or None."""
    for s in (opt_state, *(opt_state if isinstance(opt_state, tuple) else ())):
        if isinstance(s, EmaState):
            return s
    return None


def averaged_params(state) -> PyTree:
    """The parameters to evaluate, show and export: the EMA when the run keeps one.

    Args:
      state: a :class:`~jvae.train_state.TrainState`.

    Returns:
      The average of :func:`parameter_ema` in ``state.opt_state``, else ``state.params``.
    """
    found = find_ema(state.opt_state)
    return state.params if found is None else found.ema
