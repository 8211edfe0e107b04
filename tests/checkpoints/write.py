"""Writes ``tests/checkpoints/jax-X.Y/``: a tiny run checkpointed under the installed JAX.

``tests/test_checkpoint_compat.py`` restores every such folder under whichever JAX
runs the suite, so a checkpoint written by one supported release is read by the
other. Run it once with each end of the supported range (README, "Install")::

    python tests/checkpoints/write.py        # with jax 0.10 (Python 3.11), then 0.12

Each folder holds the run as ``jvae train`` leaves it after one epoch (its
``config.json`` and one checkpoint; the images and logs are left out), the
restored values to compare against, written with NumPy (``state.npz``, so
their truth does not depend on orbax), and ``written.json``: the versions that
wrote it and the test -ELBO of the same run trained two epochs without a stop.
"""

import json
import platform
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# The suite's compiler flags and 8 simulated devices, so the same JAX reads back equal bits.
import conftest  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jvae._compat import JAX_VERSION  # noqa: E402
from jvae.app.config import make_config  # noqa: E402
from jvae.app.runs import restore_run  # noqa: E402
from jvae.train import train_and_evaluate  # noqa: E402

SETTINGS = {"dataset": "digits", "batch_size": 64, "eval_batch_size": 64, "hidden": [16],
            "latent_dim": 2, "num_images": 8, "quality_images": 0, "keep_checkpoints": 1,
            "data_placement": "host", "dashboard": False, "tensorboard": False}
VERSIONS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def state_arrays(state) -> dict[str, np.ndarray]:
    """A train state's leaves by path, as NumPy arrays (typed keys as their data)."""
    def host(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(jax.device_get(x))
    return {jax.tree_util.keystr(path): host(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def main() -> None:
    out = HERE / f"jax-{JAX_VERSION[0]}.{JAX_VERSION[1]}"
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_and_evaluate(make_config(SETTINGS, {"epochs": 1}), tmp / "run", quiet=True)
        row = train_and_evaluate(make_config(SETTINGS, {"epochs": 2}), tmp / "full", quiet=True)
        (out / "run").mkdir(parents=True)
        shutil.copy(tmp / "run" / "config.json", out / "run" / "config.json")
        shutil.copytree(tmp / "run" / "checkpoints", out / "run" / "checkpoints")
    np.savez(out / "state.npz", **state_arrays(restore_run(out / "run").state))
    written = {"python": platform.python_version(),
               **{name: version(name) for name in VERSIONS},
               "neg_elbo_after_2_epochs": row["neg_elbo"]}
    (out / "written.json").write_text(json.dumps(written, indent=1) + "\n")
    shutil.rmtree(conftest.os.environ["JVAE_TEST_XLA_CACHE"], ignore_errors=True)
    shutil.rmtree(conftest.os.environ["JVAE_WEIGHTS_DIR"], ignore_errors=True)
    print(out, json.dumps(written))


if __name__ == "__main__":
    main()
