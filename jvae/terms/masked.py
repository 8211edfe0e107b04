"""Reductions over a batch whose padded rows carry ``mask = 0``.

Evaluation pads the last batch of a split so every batch has one shape (one
compile); a ``"mask"`` entry (1 for real rows, 0 for padding) keeps the padding
out of every mean and sum, so each example counts exactly once.
"""

from __future__ import annotations

import jax.numpy as jnp

from jvae.base import LENGTH_KEY, Array

__all__ = ["masked_mean", "masked_sums", "valid_mask"]


def masked_mean(x: Array, mask: Array | None, axis: int = 0) -> Array:
    """Mean of ``x`` over its leading (batch) axis, weighted by ``mask``.

    Args:
      x: ``(B, ...)`` values.
      mask: ``(B,)`` weights (1 real, 0 padding), or None for a plain mean.
      axis: the batch axis (0).

    Returns:
      ``sum_b mask_b x_b / max(sum_b mask_b, 1)``, of shape ``x.shape[1:]``.
    """
    if mask is None:
        return jnp.mean(x, axis)
    m = mask.reshape(mask.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
    return jnp.sum(x * m, axis) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_sums(values: dict[str, Array], mask: Array | None) -> dict[str, Array]:
    """Masked sums of per-example values plus their ``"count"``.

    Adding the results of every batch and dividing by the total count gives
    split means in which every example counts once, whatever the batch size.

    Args:
      values: ``{name: (B,)}`` per-example values.
      mask: ``(B,)`` weights, or None (every row real).

    Returns:
      ``{name: scalar sum, ..., "count": scalar}``.
    """
    if mask is None:
        mask = jnp.ones(next(iter(values.values())).shape[0], jnp.float32)
    sums = {k: jnp.sum(v * mask) for k, v in values.items()}
    sums["count"] = jnp.sum(mask)
    return sums


def valid_mask(batch, x: Array) -> Array | None:
    """The ``(B, T)`` float mask of real elements of a batch's padded clips.

    Args:
      batch: a batch dict; its ``"length"`` entry ``(B,)`` holds each example's
        number of real elements along the first data axis of ``x``.
      x: the batch's data ``(B, T, ...)``.

    Returns:
      ``mask[b, t] = 1`` for ``t < length[b]``, else 0; None when the batch has
      no ``"length"`` (every element real).
    """
    length = batch.get(LENGTH_KEY) if hasattr(batch, "get") else None
    if length is None:
        return None
    steps = jnp.arange(x.shape[1], dtype=jnp.int32)
    return (steps[None, :] < length.astype(jnp.int32)[:, None]).astype(jnp.float32)
