"""The order of an epoch: which examples each training step sees.

Every training path (on-device epochs, host batches, streamed batches) takes
its order from here, so a run resumed at any step sees the batches the
uninterrupted run saw.
"""

from __future__ import annotations

import numpy as np

__all__ = ["num_batches", "epoch_permutation", "epoch_order"]


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
    """Number of batches an epoch of ``n`` examples yields."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The shuffled example indices of epoch ``epoch``: ``default_rng([seed, epoch])``'s permutation."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def epoch_order(num_examples: int, batch_size: int, *, seed: int, epoch: int) -> np.ndarray:
    """The example indices of one shuffled epoch, one row per step.

    The permutation is :func:`epoch_permutation` (:func:`jvae.data.batches`'
    too), the last partial batch dropped, so every training path sees
    identical batches.

    Args:
      num_examples: size of the training split.
      batch_size: global batch size.
      seed: the run's seed.
      epoch: 0-based epoch index.

    Returns:
      int32 array of shape ``(num_examples // batch_size, batch_size)``.
    """
    steps = num_batches(num_examples, batch_size, True)
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} examples available; "
                         "use a smaller --batch-size")
    order = epoch_permutation(num_examples, seed=seed, epoch=epoch)
    return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)

