"""A split's batches on the host: the seeded epoch iterator, and conditioning labels."""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from jvae.datasets.errors import DataError
from jvae.datasets.order import epoch_permutation, num_batches
from jvae.datasets.pixels import binarize
from jvae.devices.parallel import shard_batch

__all__ = ["batches", "add_condition"]


def batches(data: dict[str, np.ndarray], batch_size: int, *, seed: int = 0, epoch: int = 0,
            shuffle: bool = True, drop_remainder: bool = True, dynamic_binarize: bool = False,
            mesh: Mesh | None = None, start: int = 0) -> Iterator[dict[str, jax.Array]]:
    """Yields batches of one epoch, placed on the mesh.

    The order is a permutation drawn from ``(seed, epoch)``, so an epoch's
    batches are the same whether the run was resumed or not.

    The last partial batch: with ``drop_remainder=True`` (training) it is
    dropped, so every step has the same shape (no recompilation) and equal
    weight; each epoch reshuffles, so no example is permanently left out. With
    ``drop_remainder=False`` (evaluation) it is padded to ``batch_size`` with
    zeros and every batch carries a ``"mask"`` (1 real, 0 padding), so
    masked sums count every example exactly once.

    Args:
      data: arrays with a shared leading axis; ``"image"`` must be float.
      batch_size: global batch size (divisible by the mesh size).
      seed: base seed of the shuffling and binarization.
      epoch: epoch index, folded into the seed.
      shuffle: permute the examples.
      drop_remainder: see above.
      dynamic_binarize: resample binary pixels ``1[u < x]`` for every batch.
      mesh: device mesh to shard the batch over; host NumPy arrays if None.
      start: index of the first batch to yield (a run resumed mid-epoch
        continues with the batch it would have seen next).

    Yields:
      Dicts with the arrays of ``data`` plus ``"mask"`` (float32, ``(batch,)``).
    """
    n = len(next(iter(data.values())))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_remainder and n < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {n} examples available; "
                         "use a smaller --batch-size")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    for i in range(start, num_batches(n, batch_size, drop_remainder)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        batch = {k: v[idx] for k, v in data.items()}
        mask = np.ones(len(idx), np.float32)
        if len(idx) < batch_size:
            pad = batch_size - len(idx)
            batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                     for k, v in batch.items()}
            mask = np.concatenate([mask, np.zeros(pad, np.float32)])
        if dynamic_binarize:
            x = batch["image"]
            # A stream per batch: batch i's noise does not depend on where the epoch began.
            u = np.random.default_rng([seed, epoch, i]).random(x.shape, dtype=np.float32)
            batch["image"] = binarize(x, u)
        batch["mask"] = mask
        yield batch if mesh is None else shard_batch(batch, mesh)


def add_condition(split: dict[str, np.ndarray], num_classes: int,
                  key: str = "cond") -> dict[str, np.ndarray]:
    """Adds one-hot labels ``(N, num_classes)`` float32 under ``key``."""
    labels = np.asarray(split["label"])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, "
                         f"{labels.max()}]")
    return {**split, key: np.eye(num_classes, dtype=np.float32)[labels]}
