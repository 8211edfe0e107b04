"""Two processes on 127.0.0.1 with 4 simulated CPU devices each, against one with 8."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import distributed_worker as worker
from jvae import distributed
from jvae.parallel import data_mesh

WORKER = Path(worker.__file__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(workdir, phase):
    """Runs both processes of one phase; returns their exit codes."""
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), port, str(workdir), phase],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    out = [p.communicate(timeout=240)[0] for p in procs]
    return [p.returncode for p in procs], out


def test_two_processes_equal_one_with_eight_devices_across_a_kill(tmp_path):
    codes, out = _job(tmp_path, "first")
    assert codes == [-signal.SIGKILL] * 2, out
    codes, out = _job(tmp_path, "resume")
    assert codes == [0, 0], out
    mesh = data_mesh(8)  # this process: one process, 8 devices (conftest)
    state, step = worker.setup(mesh)
    for phase in ("first", "resume"):
        state = worker.train(state, step, mesh, int(state.step), int(state.step) + worker.STEPS)
        saved = np.load(tmp_path / f"{phase}.npz")
        ours = jax.tree.leaves(distributed.to_host(state.params))
        assert len(saved.files) == len(ours)
        for i, leaf in enumerate(ours):
            np.testing.assert_allclose(saved[f"arr_{i}"], leaf, atol=1e-5, rtol=0)
    # The run moved: equality is not that of two untrained models.
    fresh, _ = worker.setup(mesh)
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
               for a, b in zip(jax.tree.leaves(fresh.params), jax.tree.leaves(state.params)))


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
