"""Test configuration: eight simulated CPU devices for every test.

Set before JAX initializes its backend, so data-parallel code paths run across
8 devices here exactly as they would on an 8-accelerator host; a test that
needs one device builds a one-device mesh.
"""

import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path


def _jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's (major, minor), read without starting XLA."""
    from importlib.metadata import version
    return tuple(int(p) for p in version("jaxlib").split(".")[:2])


# Tests are dominated by compiling many small programs, not by running them:
# XLA's backend at -O0 compiles them in about 60% of the time, and every
# property asserted (gradients, equalities between runs) holds at any level.
_FAST_COMPILE = " --xla_backend_optimization_level=0"
if platform.machine().lower() in ("x86_64", "amd64"):
    # XLA:CPU's MLIR fusion emitters take most of a compile at -O0; its classic
    # emitters compile the suite's programs in under half the time. They leave LLVM
    # free to contract a*b+c into an FMA wherever it lands in one fused kernel, so
    # where a program puts its fusion boundaries (a step inside the epoch's loop, or
    # alone) would change the last bit of a result; capped at AVX (no FMA), every
    # multiply and add rounds on its own and equal math gives equal bits.
    _FAST_COMPILE += " --xla_cpu_max_isa=AVX"
    # jaxlib 0.12's XLA has only the fusion emitters, and aborts on the flag.
    if _jaxlib_version() < (0, 12):
        _FAST_COMPILE += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8" + _FAST_COMPILE).strip()
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
# Pretrained weights a developer installed (jvae weights fetch) must not change what a
# test computes: the suite's store starts empty; tests that need weights put their own.
os.environ["JVAE_WEIGHTS_DIR"] = tempfile.mkdtemp(prefix="jvae-test-weights-")
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keeps ``--dist loadgroup`` grouping on pytest 9.

    pytest-xdist (3.8) groups a test by appending ``@group`` to ``item._nodeid``;
    pytest 9 reads the id from ``item._id``, so the suffix is lost, every test is its
    own unit, and each group's module fixtures (a trained run, a compiled program) are
    built once per worker. Here the suffix is put where pytest 9 reads it; where xdist
    managed (pytest 8) the id already ends in it and nothing changes.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


def pytest_unconfigure(config):
    shutil.rmtree(os.environ["JVAE_WEIGHTS_DIR"], ignore_errors=True)
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["JVAE_TEST_XLA_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def _random_lpips_store(tmp_path_factory) -> Path:
    """A weight store holding LPIPS with lpips' own heads and a random VGG16 backbone
    (the lpips wheel ships its heads; the ImageNet backbone is a download)."""
    import warnings

    lpips_ref = pytest.importorskip("lpips")
    import torch

    from jvae.metrics.lpips import params_from_state_dicts
    from jvae.metrics.weights import WEIGHTS_DIR_ENV, save_params, weights_path
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips_ref.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("lpips_store")
    old = os.environ[WEIGHTS_DIR_ENV]
    os.environ[WEIGHTS_DIR_ENV] = str(folder)
    try:
        save_params(params_from_state_dicts(sd, sd), weights_path("lpips"))
    finally:
        os.environ[WEIGHTS_DIR_ENV] = old
    return folder


@pytest.fixture
def lpips_store(_random_lpips_store, monkeypatch) -> Path:
    """The store of random-backbone LPIPS weights, as this test's weight store."""
    monkeypatch.setenv("JVAE_WEIGHTS_DIR", str(_random_lpips_store))
    return _random_lpips_store


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
