"""Training with --data-placement stream: the host run's numbers, exact resume, auto's choice."""

import os
import signal

import jax
import numpy as np
import pytest
from PIL import Image

import jvae.app.trainer
import jvae.training.program
from jvae.app.config import make_config
from jvae.base import ConfigError
from jvae.datasets.stream import Feed, MemmapArray, SplitView
from jvae.train import Stopped, train_and_evaluate

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("stream_train")

pytest.importorskip("grain")

# 64 images of 8x8, about a quarter held out, batches of 8: 5 steps (and chunks) an epoch.
SETTINGS = dict(batch_size=8, eval_batch_size=16, hidden=(16,), latent_dim=2, num_images=8,
                epochs=1, image_size="8", test_fraction=0.25, binarize="dynamic",
                checkpoint_every="epoch", num_devices=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "pictures"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(32):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                root / cls / f"{i}.png")
    return root


class _Params:
    """Keeps the parameters and row of the last epoch; sends a signal after a given step."""

    def __init__(self, signal_at=None):
        self.signal_at, self.params, self.row = signal_at, None, None

    def on_chunk(self, step, metrics):
        if step == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch(self, row, params):
        self.row, self.params = row, params


def _train(folder, work, placement, hook, **extra):
    cfg = make_config({**SETTINGS, "data_source": str(folder), "data_placement": placement,
                       **extra})
    return train_and_evaluate(cfg, work, quiet=True, hooks=[hook])


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    """A host run, and an auto run made to stream by a tiny budget, with a spy on the program."""
    tmp = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("JVAE_DATA_DIR", str(tmp / "home"))
        host = _Params()
        _train(folder, tmp / "host", "host", host)
        programs = []

        def spy(*args, **kwargs):
            programs.append(jvae.training.program.compile_program(*args, **kwargs))
            return programs[-1]

        def never(*args, **kwargs):
            raise AssertionError("the training split was read into memory")

        m.setattr(jvae.training.program, "data_budget", lambda: 1024)
        m.setattr(jvae.app.trainer, "compile_program", spy)
        m.setattr(SplitView, "read", never)
        m.setattr(SplitView, "__array__", never)
        stream = _Params()
        _train(folder, tmp / "stream", "auto", stream)
    return {"host": host, "stream": stream, "program": programs[0], "tmp": tmp}


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_streamed_run_equals_the_host_run(runs):
    host, stream = runs["host"], runs["stream"]
    assert (host.row["data_placement"], stream.row["data_placement"]) == ("host", "stream")
    assert stream.row["step"] == host.row["step"] == 5
    assert stream.row["neg_elbo"] == pytest.approx(host.row["neg_elbo"], rel=1e-6)
    _assert_same(stream.params, host.params)


def test_auto_streams_a_split_over_budget_without_reading_it_in(runs):
    program = runs["program"]
    assert program.placement == "stream"
    # The training images stay in the memmap cache: rows of it, not an array.
    image = program.data["image"]
    assert isinstance(image, SplitView) and isinstance(image.source, MemmapArray)
    assert image.shape == (45, 8, 8, 3) and image.dtype == np.float32
    assert program.steps_per_epoch == 5


def test_streamed_run_stopped_mid_epoch_resumes_exactly(runs, folder, monkeypatch):
    tmp = runs["tmp"]
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp / "home"))
    work = tmp / "cut"
    with pytest.raises(Stopped, match=r"step 3 \(epoch 1, batch 3\)"):
        _train(folder, work, "stream", _Params(signal_at=3))
    from jvae.app.checkpoint import Checkpointer
    with Checkpointer(work / "checkpoints") as ckpt:
        position = ckpt.read_meta(3)["stream"]
    assert {k: position[k] for k in ("epoch", "batch", "step", "workers")} == {
        "epoch": 0, "batch": 3, "step": 3, "workers": 0}
    assert position["grain"] is not None
    resumed = _Params()
    _train(folder, work, "stream", resumed, loader_prefetch=2)
    assert resumed.row["step"] == 5
    assert resumed.row["neg_elbo"] == pytest.approx(runs["stream"].row["neg_elbo"], rel=1e-6)
    _assert_same(resumed.params, runs["stream"].params)


def test_an_iterator_state_from_elsewhere_is_refused():
    split = {"image": np.arange(40, dtype=np.float32).reshape(40, 1)}
    feed = Feed(split, batch_size=4, seed=0)
    stream = feed.epoch_batches(0)
    first = [next(stream)["image"] for _ in range(3)]
    position = feed.position()
    assert position["batch"] == 3
    # The saved state continues at batch 3: right for a model at batch 3 ...
    again = Feed(split, batch_size=4, seed=0).epoch_batches(0, 3, position)
    rest = list(again)
    assert len(rest) == 7 and not any(np.array_equal(rest[0]["image"], f) for f in first)
    # ... refused for a model at batch 5.
    with pytest.raises(ConfigError, match="continues at batch 3 of epoch 1, the model at batch 5"):
        next(Feed(split, batch_size=4, seed=0).epoch_batches(0, 5, position))
    with pytest.raises(ConfigError, match=r"iterator at step 3 \(epoch 1, batch 3\) but the "
                       r"model at step 4 \(epoch 1, batch 3\)"):
        jvae.app.trainer._stream_position({"stream": {**position, "step": 3}}, 0, 3, 4, "w")


def test_a_lazy_folder_without_a_cache_keeps_files_and_skips_the_same(tmp_path):
    from jvae.datasets.folders import load_folder
    from jvae.datasets.images import DataWarning
    from jvae.datasets.stream import ImageFiles
    root = tmp_path / "pics"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(
                root / split / f"{i}.png")
    (root / "train" / "bad.png").write_bytes((root / "train" / "0.png").read_bytes()[:40])
    loaded = []
    for cache in (True, False):
        with pytest.warns(DataWarning, match="skipped 1 of 9 image files"):
            loaded.append(load_folder(root, image_size=8, cache=cache, cache_dir=tmp_path / "c",
                                      lazy=True))
    cached, files = loaded
    assert isinstance(files.data, ImageFiles) and isinstance(cached.data, np.memmap)
    np.testing.assert_array_equal(files.train, cached.train)
    a, b = cached.split("train", lazy=True)["image"], files.split("train", lazy=True)["image"]
    assert isinstance(b, SplitView) and len(b) == 6
    np.testing.assert_array_equal(a[[4, 0, 2]], b[[4, 0, 2]])
    np.testing.assert_array_equal(cached.split("test")["image"], files.split("test")["image"])
