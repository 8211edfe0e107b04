"""IDX reading on the real shared MNIST, tfds under mock data, the batch iterator."""

import gzip

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jvae.data import (
    DataError,
    batches,
    load_dataset,
    load_mnist_idx,
    read_idx,
    static_binarize,
    to_float,
    write_idx,
)
from jvae.devices.parallel import data_mesh


def test_idx_reader_on_shared_mnist(mnist_dir):
    train = load_mnist_idx(mnist_dir, "train")
    test = load_mnist_idx(mnist_dir, "test")
    assert train["image"].shape == (20_000, 28, 28, 1)
    assert test["image"].shape == (10_000, 28, 28, 1)
    for split in (train, test):
        assert split["image"].dtype == np.uint8 and split["image"].max() == 255
        assert set(np.unique(split["label"])) == set(range(10))
    # The official first training labels and the first test label.
    assert list(train["label"][:8]) == [5, 0, 4, 1, 9, 2, 1, 3]
    assert test["label"][0] == 7


def test_raw_and_gzip_idx_round_trip(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte", x)
    write_idx(tmp_path / "a-idx3-ubyte.gz", x)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), x)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), x)
    f = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.idx", f)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), f)


def test_corrupt_and_missing_files_raise_clear_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    x = np.zeros((4, 2, 2), np.uint8)
    write_idx(tmp_path / "t", x)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t")
    with gzip.open(tmp_path / "t.gz", "wb") as f:
        f.write(b"\x00")
    with pytest.raises(DataError):
        read_idx(tmp_path / "t.gz")
    with pytest.raises(DataError, match="no MNIST train IDX files"):
        load_mnist_idx(tmp_path, "train")
    with pytest.raises(DataError, match="does not exist"):
        load_mnist_idx(tmp_path / "nope", "train")


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        data = load_dataset("mnist", "train")
    assert data["image"].shape == (24, 28, 28, 1) and data["image"].dtype == np.uint8
    assert data["label"].shape == (24,) and data["label"].min() >= 0 and data["label"].max() <= 9


def test_tfds_unprepared_offline_names_both_fixes(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "train", tfds_data_dir=str(tmp_path))
    assert "--data-dir" in str(e.value) and "tfds" in str(e.value)


def _toy(n=10):
    return {"image": np.arange(n, dtype=np.float32)[:, None] / n, "label": np.arange(n)}


def test_batches_are_seeded_permutations_dropping_remainder():
    data = _toy(10)
    epoch0 = [b["label"] for b in batches(data, 4, seed=1, epoch=0)]
    assert len(epoch0) == 2 and all(len(b) == 4 for b in epoch0)
    assert len(set(np.concatenate(epoch0))) == 8
    again = [b["label"] for b in batches(data, 4, seed=1, epoch=0)]
    np.testing.assert_array_equal(np.concatenate(epoch0), np.concatenate(again))
    other = np.concatenate([b["label"] for b in batches(data, 4, seed=1, epoch=1)])
    assert not np.array_equal(np.concatenate(epoch0), other)


def test_eval_batches_pad_and_mask_every_example_once():
    data = _toy(10)
    out = list(batches(data, 4, shuffle=False, drop_remainder=False))
    assert len(out) == 3
    masks = np.concatenate([b["mask"] for b in out])
    labels = np.concatenate([b["label"] for b in out])
    assert masks.sum() == 10 and list(labels[masks == 1]) == list(range(10))
    assert out[-1]["image"].shape == (4, 1)


def test_batches_are_sharded_over_the_mesh():
    mesh = data_mesh()
    b = next(batches(_toy(16), 8, mesh=mesh))
    assert isinstance(b["image"], jax.Array)
    assert len(b["image"].sharding.device_set) == 8
    with pytest.raises(ValueError, match="divisible"):
        next(batches(_toy(16), 6, mesh=mesh))


def test_binarization():
    x = to_float(np.full((2000, 2), 64, np.uint8))
    b = static_binarize(x, seed=0)
    assert set(np.unique(b)) <= {0.0, 1.0}
    np.testing.assert_allclose(b.mean(), 64 / 255, atol=0.02)
    np.testing.assert_array_equal(b, static_binarize(x, seed=0))
    dyn = [next(batches({"image": x}, 2000, shuffle=False, epoch=e, dynamic_binarize=True))
           ["image"] for e in (0, 1)]
    assert set(np.unique(dyn[0])) <= {0.0, 1.0} and not np.array_equal(dyn[0], dyn[1])
