"""Test configuration: eight simulated CPU devices for every test.

Set before JAX initializes its backend, so data-parallel code paths run across
8 devices here exactly as they would on an 8-accelerator host; a test that
needs one device builds a one-device mesh.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

# Tests are dominated by compiling many small programs, not by running them:
# XLA's backend at -O0 compiles them in about 60% of the time, and every
# property asserted (gradients, equalities between runs) holds at any level.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same program again (a resumed run, the CLI in a
# subprocess, one model per mode): one compilation cache per test session,
# shared by the xdist workers and subprocesses (they inherit the environment),
# new for every session so each program is still compiled once by the suite.
if "JVAE_TEST_XLA_CACHE" not in os.environ:
    os.environ["JVAE_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jvae-xla-cache-")
    _OWNS_CACHE = True
else:
    _OWNS_CACHE = False
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JVAE_TEST_XLA_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The shared data sit beside the checkout; JVAE_MNIST_DIR points elsewhere (e.g. a worktree).
MNIST_DIR = Path(os.environ.get("JVAE_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not MNIST_DIR.is_dir():
        pytest.fail(f"shared MNIST not found at {MNIST_DIR}: the repo must sit beside shared/")
    return MNIST_DIR


def pytest_configure(config):
    sys.path.insert(0, str(REPO))


def pytest_unconfigure(config):
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["JVAE_TEST_XLA_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_watchers_from_the_cli(request, monkeypatch):
    """``jvae train`` serves a live page and writes TensorBoard logs by default;
    in tests it does neither, unless the test asks for ``cli_watchers``."""
    if "cli_watchers" not in request.fixturenames:
        import jvae.app.modes.train
        monkeypatch.setattr(jvae.app.modes.train, "watch_hooks", lambda cfg: [])


@pytest.fixture
def cli_watchers():
    """Lets ``jvae train`` attach its live page and TensorBoard logger in this test."""


@pytest.fixture(scope="session")
def tiny_mnist_dir(mnist_dir, tmp_path_factory) -> Path:
    """Raw (uncompressed) IDX files holding the first 512 train and 256 test images."""
    from jvae.data import load_mnist_idx, write_idx
    out = tmp_path_factory.mktemp("tiny_mnist")
    for split, stem, n in (("train", "train", 512), ("test", "t10k", 256)):
        d = load_mnist_idx(mnist_dir, split)
        write_idx(out / f"{stem}-images-idx3-ubyte", d["image"][:n, :, :, 0])
        write_idx(out / f"{stem}-labels-idx1-ubyte", d["label"][:n].astype(np.uint8))
    return out
