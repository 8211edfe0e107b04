"""Checkpoints, resume, and the command line on real (tiny) MNIST."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jvae.app.checkpoint import Checkpointer
from jvae.app.config import ConfigError, make_config
from jvae.devices.parallel import data_mesh, replicate, shard_batch
from jvae.train import main, train_and_evaluate
from jvae.train_state import create_train_state, make_optimizer, make_train_step
from jvae.training.experiment import DataSpec, build

# The model other tests train on tiny MNIST too (test_epoch, test_reliability): the
# session's compilation cache then holds its programs.
TINY = dict(batch_size=64, eval_batch_size=128, hidden=(32,), latent_dim=4, num_images=16)


def _cfg(data_dir, **kw):
    return make_config({"data_dir": str(data_dir), **TINY, **kw})


def test_checkpoint_round_trip_continues_the_same_trajectory(tmp_path):
    cfg = make_config({"hidden": (32,), "latent_dim": 4})
    exp = build(cfg, DataSpec((28, 28, 1)))
    vae, objective, opt = exp.vae, exp.objective, exp.optimizer
    mesh = data_mesh()
    x = np.random.default_rng(0).random((3, 16, 28, 28, 1), dtype=np.float32)
    batches = [shard_batch({"image": xi, "mask": np.ones(16, np.float32)}, mesh) for xi in x]
    state = replicate(create_train_state(vae, objective, opt, jax.random.key(0),
                                         {"image": x[0]}), mesh)
    template = jax.tree.map(lambda a: a, state)
    step = make_train_step(objective, opt, mesh=mesh, donate=False)
    state, _ = step(state, batches[0])
    with Checkpointer(tmp_path / "ckpt", keep=2) as ckpt:
        ckpt.save(1, state, {"epoch": 1, "note": "x"})
        ckpt.wait()
        restored, meta = ckpt.restore(template, mesh=mesh)
    assert meta == {"epoch": 1, "note": "x"}
    assert jax.random.key_data(restored.key).tolist() == jax.random.key_data(state.key).tolist()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(a) if a.dtype == state.key.dtype
                                                 else a),
                                      np.asarray(jax.random.key_data(b) if b.dtype == state.key.dtype
                                                 else b))
    a, _ = step(state, batches[1])
    b, _ = step(restored, batches[1])
    for la, lb in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(la, lb)


def test_checkpointer_keeps_the_last_n(tmp_path):
    cfg = make_config({"hidden": (8,), "latent_dim": 2})
    exp = build(cfg, DataSpec((28, 28, 1)))
    state = create_train_state(exp.vae, exp.objective, make_optimizer(), jax.random.key(0),
                               {"image": np.zeros((2, 28, 28, 1), np.float32)})
    with Checkpointer(tmp_path, keep=3) as ckpt:
        for s in range(1, 6):
            ckpt.save(s, state)
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4, 5]


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted(tiny_mnist_dir, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train_and_evaluate(_cfg(tiny_mnist_dir, epochs=3), full, quiet=True)
    train_and_evaluate(_cfg(tiny_mnist_dir, epochs=1), split, quiet=True)
    # A crash after writing metrics but before the checkpoint left a stray row.
    with (split / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 2, "neg_elbo": -1.0}) + "\n")
    train_and_evaluate(_cfg(tiny_mnist_dir, epochs=3), split, quiet=True)
    a, b = _rows(full), _rows(split)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("step", "neg_elbo", "recon", "kl", "train_loss"):
            assert ra[key] == rb[key], (key, ra[key], rb[key])
    assert a[-1]["neg_elbo"] < a[0]["neg_elbo"]
    # Nothing more to do once --epochs is reached; the metrics are untouched.
    train_and_evaluate(_cfg(tiny_mnist_dir, epochs=3), split, quiet=True)
    assert len(_rows(split)) == 3


def test_resume_refuses_different_settings(tiny_mnist_dir, tmp_path, capsys):
    train_and_evaluate(_cfg(tiny_mnist_dir, epochs=1), tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="latent_dim"):
        train_and_evaluate(_cfg(tiny_mnist_dir, epochs=2, latent_dim=8), tmp_path, quiet=True)
    # From the command line the run's saved settings are the base: the workdir
    # alone (and the flags it names) continues it; a changed model is refused.
    _one_line_error(capsys, ["--workdir", str(tmp_path), "--latent-dim", "9"], "latent_dim")
    assert main(["--workdir", str(tmp_path), "--epochs", "2"]) == 0
    assert [r["epoch"] for r in _rows(tmp_path)] == [1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["hidden"] == list(TINY["hidden"])


def _cli(*args, cwd=None):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "jvae.train", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_cli_one_epoch_writes_metrics_images_and_checkpoint(tiny_mnist_dir, tmp_path, capsys):
    # In-process: the flags, the config file and the run are what is tested; the
    # process boundary is tested by test_unknown_flag_exits_2_without_traceback.
    work = tmp_path / "run"
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text('batch_size = 64\neval_batch_size = 128\nhidden = [64]\nlatent_dim = 3\n')
    code = main(["--dataset=mnist", "--data-dir", str(tiny_mnist_dir), "--workdir", str(work),
                 "--epochs", "1", "--config", str(cfg_file), "--latent-dim", "8",
                 "--num-images", "16", "--posterior", "dirichlet", "--no-dashboard",
                 "--no-tensorboard"])
    assert code == 0, capsys.readouterr().err
    rows = _rows(work)
    assert len(rows) == 1
    row = rows[0]
    for key in ("epoch", "step", "split", "neg_elbo", "recon", "kl", "images_per_sec", "wall_s"):
        assert key in row
    assert row["epoch"] == 1 and row["step"] == 512 // 64 and row["split"] == "test"
    assert row["neg_elbo"] == pytest.approx(row["recon"] + row["kl"], rel=1e-6)
    assert json.loads((work / "config.json").read_text())["latent_dim"] == 8  # flag beats file
    for name in ("samples_epoch001.png", "reconstructions_epoch001.png"):
        with Image.open(work / "images" / name) as img:
            assert img.size[0] > 28 and img.size[1] > 28
    assert (work / "checkpoints" / str(512 // 64)).is_dir()  # named by the global step


def _one_line_error(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert match in err, err


@pytest.mark.parametrize("argv,match", [
    (["--batch-size", "abc"], "batch_size='abc'"),
    (["--posterior", "gamma"], "posterior='gamma' is not one of normal, dirichlet"),
    (["--epochs", "-1"], "epochs must be >= 0"),
    (["--data-dir", "/nonexistent/mnist"], "does not exist"),
    (["--batch-size", "60"], "not divisible by the 8 devices"),
])
def test_bad_input_exits_2_with_one_line(capsys, tiny_mnist_dir, tmp_path, argv, match):
    base = ["--data-dir", str(tiny_mnist_dir), "--workdir", str(tmp_path / "w")]
    _one_line_error(capsys, base + argv, match)
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_bad_config_files_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(capsys, ["--config", str(bad)], "malformed")
    unknown = tmp_path / "u.toml"
    unknown.write_text("batchsize = 3\n")
    _one_line_error(capsys, ["--config", str(unknown)], "unknown setting 'batchsize'")
    _one_line_error(capsys, ["--config", str(tmp_path / "missing.toml")], "does not exist")


def test_unknown_flag_exits_2_without_traceback():
    r = _cli("--no-such-flag", "3")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unrecognized arguments" in r.stderr


def test_kld_weight_is_an_alias_of_beta(tmp_path):
    from jvae.app.flags import config_from_args, make_parser
    from jvae.train import MODE

    def parse(argv):
        return config_from_args(make_parser(MODE, "jvae train").parse_args(argv))[0]
    assert parse(["--kld-weight", "0.5"]).beta == 0.5
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text('{"kld_weight": 2}')
    assert parse(["--config", str(cfg_file)]).beta == 2.0
