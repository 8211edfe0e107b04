"""Adam behind NaN zeroing, a non-finite step skip and global-norm clipping, fused.

``optax.chain(zero_nans(), clip_by_global_norm(c), adam(lr, b1, b2))`` is the
reference definition (and what :func:`clipped_adam` is tested against). Run as
a chain, each link walks the whole parameter tree on its own, ``zero_nans``
reduces every leaf to a flag it keeps in its state, and the clipped gradient
is materialized between links: on XLA:CPU that cost ~10% of the MLP VAE's
train step. Here the per-element work is one chain of elementwise maps that
XLA fuses into a single pass per leaf, and the only reduction is the global norm.
:func:`finite_global_norm` is that norm; a train step that reports it as a
metric computes the very same expression, which XLA merges with this one
(common-subexpression elimination) instead of reducing the gradients twice.

A step whose loss or gradient norm is not finite is skipped as a whole
(optax's ``apply_if_finite`` pattern): zero updates, moments and step count
unchanged, counted in the state. Inside the fused update the skip is a select
per element of the same pass; wrapped around it as a separate transformation
it would walk every leaf again. :func:`skip_if_not_finite` gives any other
optax optimizer the same behaviour, and :func:`skip_counts` reads the counters
from either.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jvae.base import Array, PyTree

__all__ = ["ClippedAdamState", "SkipState", "clipped_adam", "skip_if_not_finite", "skip_counts",
           "zero_nans", "finite_global_norm", "is_finite_step"]


class ClippedAdamState(NamedTuple):
    """``count`` (int32 updates applied), Adam's moments and the skip counters.

    ``skipped`` counts every skipped step of the run, ``consecutive_skips``
    those since the last applied update (0 after a good step).
    """

    count: Array
    mu: PyTree
    nu: PyTree
    skipped: Array
    consecutive_skips: Array


class SkipState(NamedTuple):
    """State of :func:`skip_if_not_finite`: the inner state and the skip counters."""

    inner: PyTree
    skipped: Array
    consecutive_skips: Array


def zero_nans(tree: PyTree) -> PyTree:
    """Replaces NaN entries by 0 (``optax.zero_nans``' map)."""
    return jax.tree.map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), tree)


def finite_global_norm(grads: PyTree) -> Array:
    """Global L2 norm of ``grads`` with NaN entries counted as 0: the norm clipping sees."""
    return optax.tree.norm(zero_nans(grads))


def is_finite_step(norm: Array, value: Array | None) -> Array:
    """Whether a step may be applied: finite gradient norm and (when given) finite loss."""
    ok = jnp.isfinite(norm)
    return ok if value is None else ok & jnp.all(jnp.isfinite(value))


def _count_skips(ok: Array, skipped: Array, consecutive: Array) -> tuple[Array, Array]:
    bad = (~ok).astype(jnp.int32)
    return skipped + bad, jnp.where(ok, 0, consecutive + 1)


def skip_counts(opt_state: PyTree) -> tuple[Array, Array] | None:
    """``(skipped, consecutive_skips)`` of an optimizer state, or None if it keeps none.

    Finds :class:`ClippedAdamState` or :class:`SkipState` at the top of
    ``opt_state`` or inside a tuple (an ``optax.chain``'s state).
    """
    for s in (opt_state, *(opt_state if isinstance(opt_state, tuple) else ())):
        if isinstance(s, (ClippedAdamState, SkipState)):
            return s.skipped, s.consecutive_skips
    return None


def skip_if_not_finite(inner: optax.GradientTransformation
                       ) -> optax.GradientTransformationExtraArgs:
    """Skips the whole update of ``inner`` when the loss or the gradient norm is not finite.

    The pattern of ``optax.apply_if_finite`` with the loss taken into account
    (pass it as ``value=``): a skipped step returns zero updates and leaves
    ``inner``'s state untouched. Unlike ``apply_if_finite`` it never gives up
    after a number of failures; the caller reads :func:`skip_counts` and decides.
    The norm is :func:`finite_global_norm`, so isolated NaN entries (zeroed by
    :func:`clipped_adam`) do not skip a step, but an infinite entry does.

    Args:
      inner: the optimizer to protect.

    Returns:
      A transformation with :class:`SkipState` whose ``update`` accepts ``value``.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        # Separate arrays: a donated state must not hold one buffer twice.
        return SkipState(inner.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, *, value=None, **extra):
        ok = is_finite_step(finite_global_norm(grads), value)
        updates, new_inner = inner.update(grads, state.inner, params, value=value, **extra)
        updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_inner, state.inner)
        return updates, SkipState(new_inner, *_count_skips(ok, state.skipped,
                                                           state.consecutive_skips))

    return optax.GradientTransformationExtraArgs(init, update)


def clipped_adam(learning_rate: float | optax.Schedule = 1e-3, *, b1: float = 0.9,
                 b2: float = 0.99, eps: float = 1e-8, clip_norm: float = 1.0
                 ) -> optax.GradientTransformationExtraArgs:
    """Zero NaNs, skip non-finite steps, clip to global norm ``clip_norm``, then Adam.

    Adam is Kingma & Ba (2015).

    For gradients ``g`` (NaNs zeroed) with global norm ``n``:
    ``g <- g * min(1, clip_norm / n)``; ``m <- b1 m + (1 - b1) g``;
    ``v <- b2 v + (1 - b2) g^2``; ``update = -lr_t m_hat / (sqrt(v_hat) + eps)``
    with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)`` and ``t`` the
    step count after this step; ``lr_t = learning_rate(t - 1)`` for a schedule.
    The same updates as ``optax.chain(optax.zero_nans(),
    optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate, b1, b2, eps))``
    up to float rounding.

    NaNs are zeroed *before* the norm is taken: else one NaN entry makes the
    norm NaN, and the whole step is lost. When the norm ``n`` is not finite (an
    infinite entry) or the loss passed as ``value`` is not (the batch is
    corrupt, or the run is diverging) the step is skipped: zero updates, the
    moments and ``t`` stay as they were, ``skipped`` and ``consecutive_skips``
    grow by one (see :func:`skip_if_not_finite`).

    Args:
      learning_rate: step size or an optax schedule of the step count.
      b1: first-moment decay.
      b2: second-moment decay.
      eps: added to the denominator.
      clip_norm: maximum global gradient norm.

    Returns:
      A transformation with :class:`ClippedAdamState`; ``update`` takes the
      loss as the keyword ``value`` (optax's convention for extra arguments).
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm}")

    def init(params):
        def zero():  # separate arrays: a donated state must not hold one buffer twice
            return jnp.zeros((), jnp.int32)
        return ClippedAdamState(zero(), jax.tree.map(jnp.zeros_like, params),
                                jax.tree.map(jnp.zeros_like, params), zero(), zero())

    def update(grads, state, params=None, *, value=None, **extra):
        del params, extra
        grads = zero_nans(grads)
        norm = optax.tree.norm(grads)
        ok = is_finite_step(norm, value)
        scale = jnp.minimum(1.0, clip_norm / norm)  # norm 0 gives inf -> 1
        count = jnp.where(ok, optax.safe_increment(state.count), state.count)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = jnp.maximum(count, 1).astype(jnp.float32)
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t

        # Selects in the same elementwise pass: a skipped step keeps the old
        # moments and yields exact zeros (whatever the discarded branch holds).
        g = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        mu = jax.tree.map(lambda m, g: jnp.where(ok, b1 * m + (1.0 - b1) * g, m), state.mu, g)
        nu = jax.tree.map(lambda v, g: jnp.where(ok, b2 * v + (1.0 - b2) * g * g, v), state.nu, g)
        updates = jax.tree.map(
            lambda m, v: jnp.where(ok, -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), 0.0).astype(
                m.dtype), mu, nu)
        return updates, ClippedAdamState(count, mu, nu, *_count_skips(
            ok, state.skipped, state.consecutive_skips))

    return optax.GradientTransformationExtraArgs(init, update)
