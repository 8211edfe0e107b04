"""Test configuration: eight simulated CPU devices for every test.

Set before JAX initializes its backend, so data-parallel code paths run across
8 devices here exactly as they would on an 8-accelerator host; a test that
needs one device builds a one-device mesh.
"""

import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not MNIST_DIR.is_dir():
        pytest.fail(f"shared MNIST not found at {MNIST_DIR}: the repo must sit beside shared/")
    return MNIST_DIR


def pytest_configure(config):
    sys.path.insert(0, str(REPO))
