"""Streaming with grain: jvae's batch order, exact resume, per-process slices."""

import numpy as np

from jvae.data import batches
from jvae.datasets.stream import epoch_rows, make_loader


def _memmap(tmp_path, n=60):
    path = tmp_path / "data.npy"
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 2, 2, 1))
    a[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    a.flush()
    return np.load(path, mmap_mode="r")


def test_streamed_epoch_is_the_in_memory_epoch_and_resumes_exactly(tmp_path):
    data = _memmap(tmp_path)
    labels = np.arange(60, dtype=np.int32)
    rows = np.arange(5, 60)  # a split: rows 5..59
    kw = dict(batch_size=8, seed=3, epoch=2, process_index=0, process_count=1)
    streamed = list(make_loader(data, labels, rows, **kw))
    ref = list(batches({"image": data[rows].astype(np.float32) / 255, "label": labels[rows]}, 8,
                       seed=3, epoch=2))
    assert len(streamed) == len(ref) == 55 // 8
    for s, r in zip(streamed, ref):
        np.testing.assert_array_equal(s["label"], r["label"])
        np.testing.assert_array_equal(s["image"], r["image"])
    it = make_loader(data, labels, rows, **kw)
    for _ in range(3):
        next(it)
    state = it.get_state()
    rest = [b["label"] for b in make_loader(data, labels, rows, state=state, **kw)]
    assert len(rest) == len(streamed) - 3
    for a, b in zip(rest, streamed[3:]):
        np.testing.assert_array_equal(a, b["label"])


def test_processes_take_disjoint_slices_of_each_global_batch():
    rows = np.arange(100, 164)
    whole = epoch_rows(rows, 16, seed=0, epoch=0)
    parts = [epoch_rows(rows, 16, seed=0, epoch=0, process_index=p, process_count=4)
             for p in range(4)]
    assert parts[0].shape == (4, 4)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
