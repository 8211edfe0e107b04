"""Damaged checkpoints and metrics, the workdir lock: the library functions."""

import errno
import json
import os
import signal
import socket
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app import trainer as train_module
from jvae.app.checkpoint import Checkpointer, CheckpointError, read_metrics, truncate_metrics
from jvae.app.config import make_config
from jvae.app.lock import LockError, WorkdirLock
from jvae.app.run_guard import CheckpointSchedule, SaveFailed, parse_interval
from jvae.train import Stopped, main, train_and_evaluate
from jvae.train_state import TrainState


def _state(step, width=8):
    return TrainState(step=jnp.int32(step), params={"w": jnp.full((width,), float(step))},
                      opt_state=(), key=jax.random.key(step))


def _save(directory, steps, keep=5):
    with Checkpointer(directory, keep=keep) as ckpt:
        for s in steps:
            ckpt.save(s, _state(s), {"epoch": s})


def _truncate_data(step_dir: Path):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        with p.open("r+b") as f:
            f.truncate(p.stat().st_size // 2)


def test_restore_falls_back_past_damaged_checkpoints(tmp_path, capsys):
    ckpts = tmp_path / "checkpoints"
    _save(ckpts, [1, 2, 3, 4])
    _truncate_data(ckpts / "4")                                  # a partial copy
    (ckpts / "3" / "state" / "_METADATA").unlink()              # a lost file
    (ckpts / "2" / "meta" / "metadata").write_text('{"epo')     # a torn write
    with Checkpointer(ckpts) as ckpt:
        state, meta = ckpt.restore_newest_valid(_state(0))
        assert ckpt.all_steps() == [1]
    assert meta == {"epoch": 1} and int(state.step) == 1
    np.testing.assert_array_equal(state.params["w"], np.ones(8))
    warnings = capsys.readouterr().err.strip().splitlines()
    assert [w.split(":")[0:2] for w in warnings] == [["warning", " skipping checkpoint 4"],
                                                      ["warning", " skipping checkpoint 3"],
                                                      ["warning", " skipping checkpoint 2"]]
    # Kept on disk, renamed aside, never deleted.
    assert sorted(os.listdir(tmp_path / "checkpoints.unreadable")) == ["2", "3", "4"]


def test_restore_rejects_non_finite_and_invalid_states(tmp_path, capsys):
    ckpts = tmp_path / "checkpoints"
    with Checkpointer(ckpts) as ckpt:
        ckpt.save(1, _state(1), {"epoch": 1})
        ckpt.save(2, _state(2).replace(params={"w": jnp.full((8,), jnp.nan)}), {"epoch": 2})
        ckpt.save(3, _state(3), {"epoch": 3, "bad": True})
    with Checkpointer(ckpts) as ckpt:
        _, meta = ckpt.restore_newest_valid(
            _state(0), validate=lambda m: "it is marked bad" if m.get("bad") else None)
    assert meta["epoch"] == 1
    err = capsys.readouterr().err
    assert "checkpoint 3: it is marked bad" in err and "checkpoint 2: its state is not finite" in err


def test_no_usable_checkpoint_names_the_directory_and_the_choices(tmp_path, capsys):
    ckpts = tmp_path / "checkpoints"
    _save(ckpts, [5])
    _truncate_data(ckpts / "5")
    with Checkpointer(ckpts) as ckpt, pytest.raises(CheckpointError) as info:
        ckpt.restore_newest_valid(_state(0))
    message = str(info.value)
    assert str(ckpts) in message and "new --workdir" in message and "move" in message
    assert "\n" not in message
    # Nothing moved: a rerun sees the same workdir, not a fresh one.
    assert (ckpts / "5").is_dir() and not (tmp_path / "checkpoints.unreadable").exists()
    assert capsys.readouterr().err == ""
    with Checkpointer(tmp_path / "empty") as ckpt:
        assert ckpt.restore_newest_valid(_state(0)) is None


def test_a_different_model_is_not_mistaken_for_damage(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _save(ckpts, [1])
    with Checkpointer(ckpts) as ckpt, pytest.raises(CheckpointError, match="another structure"):
        ckpt.restore_newest_valid(_state(0, width=4))
    assert (ckpts / "1").is_dir() and not (tmp_path / "checkpoints.unreadable").exists()


def test_metrics_with_torn_and_stray_lines(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    rows = [{"epoch": 1, "x": 1.0}, {"epoch": 2, "x": 2.0}, {"epoch": 3, "x": 3.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "[1, 2]\n\n"
                    + json.dumps(rows[2]) + "\n" + '{"epoch": 4, "x"')
    assert read_metrics(path) == rows
    assert capsys.readouterr().err.count("warning:") == 2
    truncate_metrics(path, 2)
    assert read_metrics(path) == rows[:2]
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows[:2])


def test_one_writer_per_workdir(tmp_path, capsys):
    work = tmp_path / "run"
    with WorkdirLock(work):
        holder = json.loads((work / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(LockError) as info:
            WorkdirLock(work).acquire()  # flock: a second open file conflicts, same process too
        assert f"PID {os.getpid()} on host {socket.gethostname()}" in str(info.value)
    assert (work / ".lock").read_text() == ""  # a clean exit leaves no holder behind
    with WorkdirLock(work):
        pass
    assert capsys.readouterr().err == ""


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    work = tmp_path / "run"
    work.mkdir()
    (work / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": 0}))
    with WorkdirLock(work):
        assert json.loads((work / ".lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PID 999999 on host gone" in err


def test_unwritable_workdir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")  # a path through a file: unwritable, even for root
    with pytest.raises(LockError, match="cannot write to workdir .* choose a writable") as info:
        WorkdirLock(tmp_path / "file" / "run").acquire()
    assert "\n" not in str(info.value)


def test_checkpoint_interval_and_schedule():
    assert parse_interval("500") == (500, None) and parse_interval("10m") == (None, 600.0)
    assert parse_interval("1.5h") == (None, 5400.0) and parse_interval("epoch") == (None, None)
    for bad in ("0", "10x", "-5", "1.5", "m", ""):
        with pytest.raises(ValueError, match="not a step count"):
            parse_interval(bad)
    now = [0.0]
    by_time = CheckpointSchedule("90s", clock=lambda: now[0])
    now[0] = 89.0
    assert not by_time.due(10)
    now[0] = 90.0
    assert by_time.due(11)
    by_time.saved(11)
    assert not by_time.due(12)
    by_steps = CheckpointSchedule("3")
    assert [by_steps.due(s) for s in (2, 3)] == [False, True]
    by_steps.saved(3)
    assert not by_steps.due(5) and by_steps.due(6)
    assert not CheckpointSchedule("epoch").due(10 ** 6)


# The loop: tiny MNIST (512 training images: 8 steps of 64 per epoch).
TINY = {"batch_size": 64, "eval_batch_size": 128, "hidden": (32,), "latent_dim": 4,
        "num_images": 16, "epochs": 2}
COMPARED = ("epoch", "step", "neg_elbo", "recon", "kl", "train_loss", "skipped_steps")


def _rows(workdir):
    return [{k: r[k] for k in COMPARED} for r in read_metrics(workdir / "metrics.jsonl")]


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


class _SignalAt:
    """A hook that sends this process ``sig`` after global step ``step``."""

    def __init__(self, step, sig=signal.SIGTERM):
        self.step, self.sig = step, sig

    def on_chunk(self, step, metrics):
        if step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("placement", ["host", "device"])
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(tiny_mnist_dir, tmp_path, placement):
    cfg = make_config({"data_dir": str(tiny_mnist_dir), **TINY, "data_placement": placement,
                       "checkpoint_every": "3"})
    train_and_evaluate(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(Stopped, match="stopped by SIGTERM at step 11 .epoch 2, batch 3") as info:
        train_and_evaluate(cfg, tmp_path / "cut", quiet=True, hooks=[_SignalAt(11)])
    assert info.value.exit_code == 143
    # Every 3 steps, at the epoch's end (8), and the signal's own save at step 11.
    assert _steps(tmp_path / "cut") == [6, 8, 11]
    assert len(_rows(tmp_path / "cut")) == 1
    train_and_evaluate(cfg, tmp_path / "cut", quiet=True)
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    assert _rows(tmp_path / "full")[-1]["step"] == 16


def _main_one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return code, err[0]


def test_failed_save_divergence_and_a_held_lock_keep_the_last_good_checkpoint(
        tiny_mnist_dir, tmp_path, capsys, monkeypatch):
    work = tmp_path / "run"
    argv = ["--data-dir", str(tiny_mnist_dir), "--workdir", str(work), "--epochs", "1",
            "--batch-size", "64", "--eval-batch-size", "128", "--hidden", "32",
            "--latent-dim", "4", "--num-images", "16"]
    assert main(argv) == 0
    capsys.readouterr()
    assert _steps(work) == [8]
    argv[argv.index("--epochs") + 1] = "2"

    # A full disk at the next checkpoint: exit 3, one line, step 8 kept.
    real_save = Checkpointer.save

    def full_disk(self, step, state, meta=None):
        if step > 8:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, step, state, meta)
    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", full_disk)
        code, err = _main_one_line(capsys, argv)
    assert code == 3 and "No space left on device" in err
    assert f"last good checkpoint is step 8 in {work / 'checkpoints'}" in err
    assert _steps(work) == [8] and len(_rows(work)) == 1

    # Every training image NaN: each step skipped, the limit reached: exit 3.
    real_load = train_module.load_data_with_info

    def nan_data(cfg):
        tr, te, info = real_load(cfg)
        return {**tr, "image": np.full_like(tr["image"], np.nan)}, te, info
    with monkeypatch.context() as m:
        m.setattr(train_module, "load_data_with_info", nan_data)
        code, err = _main_one_line(capsys, argv + ["--max-consecutive-skips", "3"])
    assert code == 3 and "diverged: 3 steps in a row" in err and "lower --lr" in err
    assert "last good checkpoint is step 8" in err
    assert _steps(work) == [8] and len(_rows(work)) == 1

    # Another run holds the workdir: exit 2 naming it, nothing touched.
    with WorkdirLock(work):
        code, err = _main_one_line(capsys, argv)
    assert code == 2 and f"in use by PID {os.getpid()} on host {socket.gethostname()}" in err
    assert _steps(work) == [8]


class _LostFirstSave:
    """Checkpointer.save whose first write is lost the way an asynchronous write to a full
    disk is: accepted at once, its OSError(ENOSPC) reported by the next save or wait."""

    def __init__(self):
        self.pending, self.real_wait = [], Checkpointer.wait

    def _report(self):
        if self.pending:
            self.pending.clear()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save(self, ckpt, step, state, meta=None):
        self._report()
        self.pending.append(step)  # nothing reaches the disk

    def wait(self, ckpt):
        self._report()
        self.real_wait(ckpt)


def _lose_first_save(monkeypatch, cfg, workdir, hooks=()):
    """Runs ``cfg`` with the first checkpoint lost: exit 3 after epoch 1's row, no checkpoint."""
    lost = _LostFirstSave()
    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", lambda self, *a, **k: lost.save(self, *a, **k))
        m.setattr(Checkpointer, "wait", lambda self: lost.wait(self))
        with pytest.raises(SaveFailed, match="No space left on device"):
            train_and_evaluate(cfg, workdir, quiet=True, hooks=hooks)
    assert _steps(workdir) == [] and [r["epoch"] for r in _rows(workdir)] == [1]


def test_a_rerun_after_a_lost_first_checkpoint_repeats_no_epoch(tiny_mnist_dir, tmp_path,
                                                                monkeypatch, capfd):
    from jvae.app.tensorboard import EMBEDDING_TAG, TensorBoardLogger
    cfg = make_config({"data_dir": str(tiny_mnist_dir), **TINY, "checkpoint_every": "epoch"})
    work, tb = tmp_path / "run", tmp_path / "tb"
    _lose_first_save(monkeypatch, cfg, work, hooks=[TensorBoardLogger(tb)])
    capfd.readouterr()
    # The rerun (a bigger disk) starts over and trains epoch 1 again: its row and its
    # projector embedding are replaced, not repeated, and tensorboardX says nothing.
    train_and_evaluate(cfg, work, quiet=True, hooks=[TensorBoardLogger(tb)])
    assert [(r["epoch"], r["step"]) for r in _rows(work)] == [(1, 8), (2, 16)]
    out = capfd.readouterr()
    assert "Embedding dir exists" not in out.out + out.err
    names = [ln for ln in (tb / "projector_config.pbtxt").read_text().splitlines()
             if ln.startswith("tensor_name:")]
    assert names == [f'tensor_name: "{EMBEDDING_TAG}:0000{e}"' for e in (1, 2)]
