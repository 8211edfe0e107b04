"""Built-in digits, verified downloads from a loopback server, tfds names and resizing."""

import functools
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jvae.data import DataError, load_dataset, load_mnist_idx, load_splits
from jvae.datasets.digits import NUM_TEST, load_digits
from jvae.datasets.download import REMOTES, fetch_idx


def test_digits_fixed_split_with_labels():
    train, test = load_digits("train"), load_digits("test")
    assert train["image"].shape == (1797 - NUM_TEST, 8, 8, 1) and len(test["image"]) == NUM_TEST
    assert train["image"].dtype == np.uint8 and train["image"].max() == 255
    assert set(np.unique(test["label"])) == set(range(10))
    # Disjoint: no test image is also a training image (digits has few exact duplicates).
    train_rows = {r.tobytes() for r in train["image"]}
    shared = sum(r.tobytes() in train_rows for r in test["image"])
    assert shared <= 2
    np.testing.assert_array_equal(load_digits("test")["image"], test["image"])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror(mnist_dir):
    """An HTTP server on 127.0.0.1 (a free port) serving the shared IDX files."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(mnist_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_checks_official_digests_for_real(mirror, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path))
    # The shared test files are the published ones: the official digests pass.
    folder = fetch_idx("mnist", "test", mirror=mirror)
    assert folder == tmp_path / "mnist"
    assert _sha256(folder / "t10k-images-idx3-ubyte.gz") == \
        REMOTES["mnist"].sha256["t10k-images-idx3-ubyte.gz"]
    # The shared training files are a 20k subset: the official digest fails,
    # clearly, and nothing of them stays in the cache.
    with pytest.raises(DataError, match="not the published one and was deleted"):
        fetch_idx("mnist", "train", mirror=mirror)
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz",
                                                         "t10k-labels-idx1-ubyte.gz"]
    # With the served files' own digests the rest of the path runs: the
    # environment's mirror, the digest check, then the IDX reader.
    monkeypatch.setenv("JVAE_MNIST_MIRROR", mirror)
    own = {n: _sha256(mnist_dir / n) for n in ("train-images-idx3-ubyte.gz",
                                               "train-labels-idx1-ubyte.gz")}
    data = load_mnist_idx(fetch_idx("mnist", "train", sha256=own), "train")
    assert data["image"].shape == (20_000, 28, 28, 1) and list(data["label"][:3]) == [5, 0, 4]


def test_offline_download_names_the_three_ways_out(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JVAE_MNIST_MIRROR", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", "test", tfds_data_dir=str(tmp_path / "no_tfds"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "--data-dir" in msg and str(tmp_path / "fashion_mnist") in msg and "--dataset digits" in msg


def test_unknown_tfds_name_suggests_close_matches():
    with pytest.raises(DataError, match="did you mean cifar10"):
        load_dataset("cifar1O", "train")


def test_tfds_dataset_resized_and_converted_with_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        train, test, info = load_splits("cifar10", image_size=16, channels=1)
    assert train["image"].shape == (6, 16, 16, 1) and train["image"].dtype == np.uint8
    assert test["image"].shape == (6, 16, 16, 1) and info["modality"] == "image"
    with tfds.testing.mock_data(num_examples=4):
        train, _, _ = load_splits("mnist", channels=3)
    assert train["image"].shape == (4, 28, 28, 3)
    np.testing.assert_array_equal(train["image"][..., 0], train["image"][..., 2])
