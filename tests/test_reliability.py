"""Damaged checkpoints and metrics, the workdir lock: the library functions."""

import json
import os
import socket
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.checkpoint import Checkpointer, CheckpointError, read_metrics, truncate_metrics
from jvae.lock import LockError, WorkdirLock
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
