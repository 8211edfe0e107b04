"""Two processes on 127.0.0.1 with 4 simulated CPU devices each, against one with 8."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jvae.app.config import make_config
from jvae.app.runs import restore_run
from jvae.devices import distributed
from jvae.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"epochs": 2, "batch_size": 64, "eval_batch_size": 128, "hidden": (32,),
            "latent_dim": 4, "num_images": 16, "checkpoint_every": "2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(data_dir, workdir):
    """Starts both processes of a two-process ``python -m jvae.train`` run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           # conftest's flags (the same compiler settings as the one-process run), 4 devices each.
           "XLA_FLAGS": os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4")}
    flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
             for k, v in SETTINGS.items()]
    base = [sys.executable, "-m", "jvae.train", "--data-dir", str(data_dir), "--workdir",
            str(workdir), *flags, "--coordinator-address", f"127.0.0.1:{_free_port()}",
            "--num-processes", "2",
            # No live page or TensorBoard logs, as for the tests' in-process runs (conftest).
            "--no-dashboard", "--no-tensorboard"]
    return [subprocess.Popen(base + ["--process-id", str(i)], env=env, cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i in range(2)]


@pytest.fixture
def launched():
    """The processes a test starts: any still running at its end (a failed or timed-out
    wait) are killed and their pipes closed, so none outlives the test."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()  # SIGKILL: a process hung in a collective outlives SIGTERM
        if not p.stdout.closed:  # not yet read to its end by the test
            p.communicate()


def test_two_processes_killed_and_resumed_equal_one_process_with_eight(tiny_mnist_dir,
                                                                      tmp_path, launched):
    work = tmp_path / "two"
    procs = _launch(tiny_mnist_dir, work)
    launched += procs
    deadline = time.monotonic() + 300
    while not any(p.name.isdigit() for p in (work / "checkpoints").glob("*")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.communicate()[0][-2000:] for p in procs]
        time.sleep(0.02)
    for p in procs:  # a crash of the whole job right after its first checkpoint
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    killed_at = max(int(p.name) for p in (work / "checkpoints").glob("*") if p.name.isdigit())
    assert killed_at < 16

    procs = _launch(tiny_mnist_dir, work)
    launched += procs
    out = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in out]
    assert f"(step {killed_at})" in out[0] and "resumed" not in out[1]  # process 0 speaks

    # One process with 8 devices (this one, see conftest), uninterrupted.
    cfg = make_config({"data_dir": str(tiny_mnist_dir), **SETTINGS})
    train_and_evaluate(cfg, tmp_path / "one", quiet=True)
    rows = [[json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (work, tmp_path / "one")]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [8, 16]
    a, b = restore_run(work).state, restore_run(tmp_path / "one").state
    assert int(a.step) == int(b.step) == 16
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    assert rows[0][-1]["neg_elbo"] == pytest.approx(rows[1][-1]["neg_elbo"], rel=1e-5)


def test_initialize_refuses_half_given_settings(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", *distributed._CLUSTER_SIZES):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # one process: nothing to join
    with pytest.raises(distributed.DistributedError, match="--num-processes and --process-id"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(distributed.DistributedError, match="HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(distributed.DistributedError, match=r"process_id=2 must be in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.cluster_detected()
