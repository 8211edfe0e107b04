"""Checkpoints cross the supported JAX range: a run checkpointed under one JAX is
restored, value for value, under the other and resumes training to the writer's
uninterrupted result, in both directions (``tests/cross_jax.py``).

The other end of the range is another interpreter: ``JVAE_OTHER_PYTHON`` names it
(CI's second half, on jax 0.12, points it at the first half's jax 0.10 venv).
"""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import REPO

WRITE = REPO / "tests" / "cross_jax.py"
OTHER = os.environ.get("JVAE_OTHER_PYTHON")


def _run(python: str, command: str, folder) -> str:
    # The child makes (and removes) its own compilation cache and weights folder, and its
    # conftest sets the XLA flags its own jaxlib accepts (0.12 aborts on one 0.10 needs).
    env = {k: v for k, v in os.environ.items() if k not in ("JVAE_TEST_XLA_CACHE",
                                                             "JAX_COMPILATION_CACHE_DIR",
                                                             "XLA_FLAGS")}
    done = subprocess.run([python, str(WRITE), command, str(folder)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _jax_of(python: str) -> str:
    return subprocess.run([python, "-c", "import jax; print(jax.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_checkpoint_restores_exactly_and_resumes_under_this_jax_and_the_other(tmp_path):
    """Written here once; read back here and, when ``JVAE_OTHER_PYTHON`` is set, there."""
    _run(sys.executable, "write", tmp_path / "here")
    if OTHER:  # a check trains the run on, so the other end reads an untouched copy
        shutil.copytree(tmp_path / "here", tmp_path / "there")
    assert json.loads(_run(sys.executable, "check", tmp_path / "here")) == {
        "written_by": version("jax"), "read_by": version("jax")}
    if OTHER:
        _check_other_release()
        crossed = json.loads(_run(OTHER, "check", tmp_path / "there"))
        assert crossed == {"written_by": version("jax"), "read_by": _jax_of(OTHER)}


@pytest.mark.skipif(not OTHER, reason="JVAE_OTHER_PYTHON names no interpreter with the "
                                      "other end's JAX (CI's second half sets it)")
def test_a_checkpoint_written_by_the_other_end_of_the_range_restores_here(tmp_path):
    _check_other_release()
    _run(OTHER, "write", tmp_path)
    assert json.loads(_run(sys.executable, "check", tmp_path)) == {
        "written_by": _jax_of(OTHER), "read_by": version("jax")}


def _check_other_release() -> None:
    other = _jax_of(OTHER)
    assert other.split(".")[:2] != version("jax").split(".")[:2], (
        f"JVAE_OTHER_PYTHON runs jax {other}, the same release as this one")
