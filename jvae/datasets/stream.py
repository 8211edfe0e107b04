"""Streaming batches from a memory-mapped cache or from files, with grain.

For data larger than memory: each epoch's batches are gathered (and, without
a cache, decoded) by ``grain`` with worker processes and prefetching while
the devices train, so a step never waits on the input when decoding keeps up.

The order is jvae's own: :func:`jvae.epoch.epoch_order`'s permutation of
``(seed, epoch)``, so a streamed epoch visits exactly the batches of the
in-memory paths, whatever the worker count. Under multi-host training each
process takes its own slice of every global batch (:func:`epoch_rows`).
A loader's iterator state (``get_state()``, JSON) is saved beside the model
and restored with ``set_state``, so a resumed epoch continues at its next batch.

Worker processes are started with ``spawn`` and import jax again: keep the
entry point of a program that streams under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

__all__ = ["MemmapArray", "ImageFiles", "GatherBatch", "epoch_rows", "make_loader"]


class MemmapArray:
    """A read-only ``.npy`` memmap that pickles as its path (for worker processes)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._array = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: np.ndarray) -> np.ndarray:
        # Sorted reads touch the file front to back; the batch keeps its order.
        order = np.argsort(rows)
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        out[order] = self.array[rows[order]]
        return out

    def __getstate__(self):
        return {"path": self.path, "_array": None}


class ImageFiles:
    """Image files decoded on the fly (no cache): ``take`` decodes a batch."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: tuple[int, int], channels: int):
        self.paths = [str(p) for p in paths]
        self.size, self.channels = tuple(size), channels

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: np.ndarray) -> np.ndarray:
        from jvae.datasets.images import DECODE_ERRORS, decode_image
        out = np.zeros((len(rows), *self.size, self.channels), np.uint8)
        for i, r in enumerate(rows):
            try:
                out[i] = decode_image(self.paths[r], self.size, self.channels)
            except DECODE_ERRORS:  # left black; a cache build reports such files
                pass
        return out


def _source(data: Any):
    if isinstance(data, (MemmapArray, ImageFiles)):
        return data
    if isinstance(data, np.memmap) and data.filename:
        return MemmapArray(data.filename)
    return _InMemory(np.asarray(data))


class _InMemory:
    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


class GatherBatch:
    """``rows -> {"image": float32 batch, "label": int32 batch, "mask": ones}``.

    uint8 images become floats in [0, 1]; float data (audio) pass unchanged.
    A grain map transform (any picklable callable works).
    """

    def __init__(self, source, labels: np.ndarray):
        self.source, self.labels = source, np.asarray(labels, np.int32)

    def __call__(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        x = self.source.take(np.asarray(rows))
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return {"image": x, "label": self.labels[rows],
                "mask": np.ones(len(rows), np.float32)}


def epoch_rows(rows: np.ndarray, batch_size: int, *, seed: int, epoch: int,
               process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's example rows of each step of an epoch, ``(steps, batch_size / P)``.

    Args:
      rows: the split's row indices in the data array.
      batch_size: the global batch size (divisible by ``process_count``).
      seed, epoch: the permutation's seed, as in :func:`jvae.epoch.epoch_order`.
      process_index, process_count: this process among ``jax.process_count()``.
    """
    from jvae.epoch import epoch_order
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    order = epoch_order(len(rows), batch_size, seed=seed, epoch=epoch)
    per = batch_size // process_count
    return np.asarray(rows)[order[:, process_index * per:(process_index + 1) * per]]


def make_loader(data: Any, labels: np.ndarray, rows: np.ndarray, *, batch_size: int, seed: int,
                epoch: int, workers: int = 0, threads: int = 2, prefetch: int = 4,
                process_index: int | None = None, process_count: int | None = None,
                state: dict | None = None):
    """A grain iterator over one epoch's batches.

    Args:
      data: a memmap from the cache (read by path in each worker), an
        :class:`ImageFiles`, or an in-memory array.
      labels: int32 labels of every row of ``data``.
      rows: the split's rows.
      batch_size: global batch size.
      seed, epoch: the epoch's permutation (:func:`epoch_rows`).
      workers: grain worker processes (0: threads in this process).
      threads: reader threads per process.
      prefetch: batches read ahead.
      process_index, process_count: default ``jax.process_index()`` / ``process_count()``.
      state: an iterator state from ``get_state()`` to continue from.

    Returns:
      A grain ``DatasetIterator`` yielding host batches (``get_state``/``set_state``).
    """
    import grain
    if process_index is None or process_count is None:
        import jax
        process_index, process_count = jax.process_index(), jax.process_count()
    steps = epoch_rows(rows, batch_size, seed=seed, epoch=epoch, process_index=process_index,
                       process_count=process_count)
    ds = grain.MapDataset.source(list(steps)).map(GatherBatch(_source(data), labels))
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    if workers > 0:
        # grain's workers read absl flags; a program that never parsed any
        # (any non-absl CLI) would fail on the first access: use the defaults.
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                         per_worker_buffer_size=prefetch))
    it = iter(ds)
    if state is not None:
        it.set_state(state)
    return it
