"""Streaming batches from a memory-mapped cache or from files, with grain.

For data larger than memory: each epoch's batches are gathered (and, without
a cache, decoded) by ``grain`` with worker processes and prefetching while
the devices train, so a step never waits on the input when decoding keeps up.

The order is jvae's own: :func:`jvae.training.epoch.epoch_order`'s permutation of
``(seed, epoch)``, so a streamed epoch visits exactly the batches of the
in-memory paths, whatever the worker count. Under multi-host training each
process takes its own slice of every global batch (:func:`epoch_rows`).
A loader's iterator state (``get_state()``, JSON) is saved beside the model
and restored with ``set_state``, so a resumed epoch continues at its next batch.

A training split that stays on disk is a :class:`SplitView`: its rows of a
cache or a file list, read on demand. :class:`Feed` streams it to the train
program (``--data-placement stream``).

Worker processes are started with ``spawn`` and import jax again: keep the
entry point of a program that streams under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from jvae.base import ConfigError
from jvae.datasets.order import epoch_order
from jvae.datasets.pixels import binarize, to_float

__all__ = ["MemmapArray", "ImageFiles", "SplitView", "GatherSteps", "Feed",
           "epoch_rows", "make_loader", "split_loader", "is_lazy"]


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

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

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

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.size, self.channels)

    dtype = np.dtype(np.uint8)

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
    if isinstance(data, (MemmapArray, ImageFiles, _InMemory)):
        return data
    if isinstance(data, np.memmap) and data.filename:
        return MemmapArray(data.filename)
    return _InMemory(np.asarray(data))


class _InMemory:
    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


def _as_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (:func:`~jvae.datasets.pixels.to_float`); floats pass as float32."""
    return to_float(x) if x.dtype == np.uint8 else x.astype(np.float32)


class SplitView:
    """Rows of a cache or of image files, read on demand: a split that stays on disk.

    Array-like where training needs it (``len``, ``shape``, ``dtype``,
    indexing returns NumPy arrays); ``np.asarray(view)`` reads it all.

    Args:
      data: a memmap from the cache, :class:`ImageFiles` or an in-memory array.
      rows: the split's rows of ``data``.
      as_float: present uint8 pixels as float32 in [0, 1].
    """

    def __init__(self, data: Any, rows: np.ndarray, *, as_float: bool = False):
        self.source, self.rows, self.as_float = _source(data), np.asarray(rows, np.int64), as_float

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.as_float else np.dtype(self.source.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def floats(self) -> SplitView:
        """The same rows presented as float32 in [0, 1]."""
        return SplitView(self.source, self.rows, as_float=True)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The examples at ``positions`` of the split."""
        x = self.source.take(self.rows[np.asarray(positions)])
        return _as_float(x) if self.as_float else x

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.take(np.array([index]))[0]
        return self.take(np.arange(len(self.rows))[index])

    def read(self, chunk: int = 4096) -> np.ndarray:
        """The whole split in memory."""
        out = np.empty(self.shape, self.dtype)
        for i in range(0, len(self.rows), chunk):
            out[i:i + chunk] = self.take(np.arange(i, min(i + chunk, len(self.rows))))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype)


def is_lazy(split: dict[str, Any]) -> bool:
    """Whether a split's images stay on disk (a :class:`SplitView`)."""
    return isinstance(split.get("image"), SplitView)


class GatherSteps:
    """``step -> batch``: this process's rows of a step of training, from a split.

    Steps count on across epochs: step ``g`` is step ``g % steps_per_epoch``
    of epoch ``g // steps_per_epoch``, whose rows are :func:`epoch_rows`'
    (cached for the epoch at hand). Every entry of ``split`` is indexed by
    position (a :class:`SplitView` reads its rows from disk); the batch gets
    ``"mask"`` (ones) and ``"step"`` (``g``). Under dynamic binarization the
    noise is :func:`jvae.data.batches`' (``default_rng([seed, epoch, step])``
    over the global batch), sliced to this process's rows, so the streamed
    batches equal the host iterator's.

    Args:
      split: arrays or views sharing a leading axis.
      batch_size: global batch size.
      seed: the permutation's (and binarization's) seed.
      dynamic_binarize: binarize ``"image"`` afresh for every batch.
      process_index, process_count: this process among ``jax.process_count()``.
    """

    def __init__(self, split: dict[str, Any], *, batch_size: int, seed: int,
                 dynamic_binarize: bool = False, process_index: int = 0,
                 process_count: int = 1):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.dynamic_binarize = dynamic_binarize
        self.process_index, self.process_count = process_index, process_count
        self.steps_per_epoch = len(next(iter(split.values()))) // batch_size
        self._epoch, self._positions = None, None

    def positions(self, epoch: int) -> np.ndarray:
        """``(steps, rows per process)`` split positions of every step of ``epoch``."""
        if epoch != self._epoch:
            n = len(next(iter(self.split.values())))
            self._positions = epoch_rows(np.arange(n), self.batch_size, seed=self.seed,
                                         epoch=epoch, process_index=self.process_index,
                                         process_count=self.process_count)
            self._epoch = epoch
        return self._positions

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        pos = self.positions(epoch)[i]
        batch = {k: v.take(pos) if isinstance(v, SplitView) else np.asarray(v[pos])
                 for k, v in self.split.items()}
        if self.dynamic_binarize:
            x = batch["image"]
            u = np.random.default_rng([self.seed, epoch, i]).random(
                (self.batch_size, *x.shape[1:]), dtype=np.float32)
            first = self.process_index * len(pos)
            batch["image"] = binarize(x, u[first:first + len(pos)])
        batch["mask"] = np.ones(len(pos), np.float32)
        batch["step"] = np.int64(step)
        return batch

    def __getstate__(self):  # workers rebuild the order table
        return {**self.__dict__, "_epoch": None, "_positions": None}


def epoch_rows(rows: np.ndarray, batch_size: int, *, seed: int, epoch: int,
               process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's example rows of each step of an epoch, ``(steps, batch_size / P)``.

    Args:
      rows: the split's row indices in the data array.
      batch_size: the global batch size (divisible by ``process_count``).
      seed, epoch: the permutation's seed, as in :func:`jvae.training.epoch.epoch_order`.
      process_index, process_count: this process among ``jax.process_count()``.
    """
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    order = epoch_order(len(rows), batch_size, seed=seed, epoch=epoch)
    per = batch_size // process_count
    return np.asarray(rows)[order[:, process_index * per:(process_index + 1) * per]]


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        return jax.process_index(), jax.process_count()
    return process_index, process_count


def _iterate(ds, *, workers: int, threads: int, prefetch: int, state: dict | None):
    import grain
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


def split_loader(split: dict[str, Any], *, batch_size: int, seed: int, start: int = 0,
                 stop: int | None = None, dynamic_binarize: bool = False, workers: int = 0,
                 threads: int = 2, prefetch: int = 4, process_index: int | None = None,
                 process_count: int | None = None, state: dict | None = None):
    """A grain iterator over training steps ``start, ..., stop - 1`` of a split.

    Steps count on across epochs (:class:`GatherSteps`), so one iterator,
    and one set of worker processes, serves a whole run, and the next
    epoch's first batches are read while the last one ends.

    Args:
      split: arrays or :class:`SplitView` s with a shared leading axis.
      batch_size: global batch size.
      seed: the run's seed (the order of every epoch, :func:`jvae.training.epoch.epoch_order`).
      start: the first step (with ``state``: the ``start`` of the loader it came from).
      stop: one past the last step (None: no end).
      dynamic_binarize: binarize ``"image"`` as :func:`jvae.data.batches` does.
      workers: grain worker processes (0: threads in this process).
      threads: reader threads per process.
      prefetch: batches read ahead.
      process_index, process_count: default ``jax.process_index()`` / ``process_count()``.
      state: an iterator state from ``get_state()`` of a loader built with
        the same arguments, to continue from.

    Returns:
      A grain ``DatasetIterator`` of host batches (this process's rows) with
      ``"mask"`` and ``"step"``.
    """
    import grain
    index, count = _processes(process_index, process_count)
    gather = GatherSteps(split, batch_size=batch_size, seed=seed,
                         dynamic_binarize=dynamic_binarize, process_index=index,
                         process_count=count)
    if gather.steps_per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {len(next(iter(split.values())))}"
                         " examples available; use a smaller --batch-size")
    # An unbounded run: a range far beyond any (grain's ranges are lazy).
    steps = grain.MapDataset.range(start, stop if stop is not None else start + 2 ** 40)
    return _iterate(steps.map(gather), workers=workers, threads=threads, prefetch=prefetch,
                    state=state)


def make_loader(data: Any, labels: np.ndarray, rows: np.ndarray, *, batch_size: int, seed: int,
                epoch: int, workers: int = 0, threads: int = 2, prefetch: int = 4,
                process_index: int | None = None, process_count: int | None = None,
                state: dict | None = None):
    """A grain iterator over one epoch's batches of the split ``rows`` of ``data``.

    :func:`split_loader` over that epoch's steps, for data not yet wrapped in
    a :class:`SplitView`.

    Args:
      data: a memmap from the cache (read by path in each worker), an
        :class:`ImageFiles`, or an in-memory array.
      labels: int32 labels of every row of ``data``.
      rows: the split's rows.
      batch_size: global batch size.
      seed, epoch: the epoch's permutation (:func:`epoch_rows`).
      workers, threads, prefetch, process_index, process_count, state: as for
        :func:`split_loader`.

    Returns:
      A grain ``DatasetIterator`` of host batches (``"image"`` as float32,
      ``"label"``, ``"mask"``, ``"step"``) with ``get_state``/``set_state``.
    """
    rows = np.asarray(rows)
    split = {"image": SplitView(data, rows, as_float=True),
             "label": np.asarray(labels, np.int32)[rows]}
    steps = len(rows) // batch_size
    return split_loader(split, batch_size=batch_size, seed=seed, start=epoch * steps,
                        stop=(epoch + 1) * steps, workers=workers, threads=threads,
                        prefetch=prefetch, process_index=process_index,
                        process_count=process_count, state=state)


class Feed:
    """Streams a training split to the train program and says where it stands.

    One grain iterator serves consecutive epochs (its workers start once);
    asking for another position than the next one starts a new iterator there.

    Args:
      split: the training split (``"image"`` usually a :class:`SplitView`).
      batch_size: global batch size.
      seed: the run's seed.
      dynamic_binarize: binarize each batch afresh (as :func:`jvae.data.batches`).
      workers: grain worker processes (0: reader threads in this process).
      prefetch: batches read ahead (per worker).
      threads: reader threads per process.
    """

    def __init__(self, split: dict[str, Any], *, batch_size: int, seed: int,
                 dynamic_binarize: bool = False, workers: int = 0, prefetch: int = 4,
                 threads: int = 2):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.dynamic_binarize, self.workers = dynamic_binarize, workers
        self.prefetch, self.threads = prefetch, threads
        self.steps_per_epoch = len(next(iter(split.values()))) // batch_size
        self.next_step, self._first, self._it = 0, 0, None

    def _open(self, first: int, state: dict | None) -> None:
        self.close()
        self._first = first
        self._it = split_loader(self.split, batch_size=self.batch_size, seed=self.seed,
                                start=first, dynamic_binarize=self.dynamic_binarize,
                                workers=self.workers, threads=self.threads,
                                prefetch=self.prefetch, state=state)

    def epoch_batches(self, epoch: int, start: int = 0, resume: dict | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
        """Host batches of steps ``start, ...`` of ``epoch`` (this process's rows).

        ``resume`` is a :meth:`position` saved with a checkpoint; its grain
        state is used when it was saved with the same worker count (another
        count starts a new iterator at the step: the order does not depend on
        workers). The first batch must be that step.

        Raises:
          ConfigError: the iterator's position is not the model's.
        """
        step = epoch * self.steps_per_epoch + start
        if resume is not None and resume.get("workers") == self.workers and resume.get("grain"):
            self._open(int(resume.get("first", 0)), resume["grain"])
        elif self._it is None or step != self.next_step:
            self._open(step, None)
        self.next_step = step
        for _ in range(start, self.steps_per_epoch):
            batch = next(self._it)
            got = int(batch.pop("step"))
            if got != self.next_step:
                e, b = divmod(got, self.steps_per_epoch)
                raise ConfigError(
                    f"the saved input iterator continues at batch {b} of epoch {e + 1}, the "
                    f"model at batch {start} of epoch {epoch + 1}; the checkpoint's iterator "
                    "state does not belong to it: resume from another checkpoint or a new "
                    "--workdir")
            self.next_step += 1
            start += 1
            yield batch

    def position(self) -> dict[str, Any]:
        """Where the stream is: ``epoch`` and next ``batch``, ``workers``, and grain's
        state (JSON) of the iterator that began at step ``first`` (counted across epochs)."""
        epoch, batch = divmod(self.next_step, self.steps_per_epoch)
        return {"epoch": epoch, "batch": batch, "workers": self.workers, "first": self._first,
                "grain": None if self._it is None else self._it.get_state()}

    def close(self) -> None:
        """Stops the iterator (and its worker processes)."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None
