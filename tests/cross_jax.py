"""Writes, or checks, a tiny run checkpointed under the installed JAX.

``tests/test_checkpoint_compat.py`` runs it under two interpreters, one with each
end of the supported range, so a checkpoint written by one release is read by the
other::

    python tests/cross_jax.py write DIR   # under one JAX
    python tests/cross_jax.py check DIR   # under the other

``write`` leaves in ``DIR`` the run as ``jvae train`` leaves it after one epoch,
the restored values to compare against, written with NumPy (``state.npz``, so
their truth does not depend on orbax), and ``written.json``: the versions that
wrote it and the test -ELBO of the same run trained two epochs without a stop.
``check`` restores the run value for value and trains its second epoch to that
-ELBO.
"""

import json
import platform
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The suite's compiler flags and 8 simulated devices, so the same JAX reads back equal bits.
import conftest  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

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


def write(out: Path) -> None:
    """Trains the tiny run one epoch into ``out/run``, with the expected values beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        row = train_and_evaluate(make_config(SETTINGS, {"epochs": 2}), Path(tmp) / "full",
                                 quiet=True)
    train_and_evaluate(make_config(SETTINGS, {"epochs": 1}), out / "run", quiet=True)
    np.savez(out / "state.npz", **state_arrays(restore_run(out / "run").state))
    written = {"python": platform.python_version(),
               **{name: version(name) for name in VERSIONS},
               "neg_elbo_after_2_epochs": row["neg_elbo"]}
    (out / "written.json").write_text(json.dumps(written, indent=1) + "\n")


def check(out: Path) -> dict:
    """Restores ``out/run`` value for value and trains its second epoch; raises on a mismatch.

    Returns:
      The versions that wrote it and those that read it.
    """
    restored = state_arrays(restore_run(out / "run").state)
    expected = np.load(out / "state.npz")
    assert sorted(restored) == sorted(expected.files), (sorted(restored), expected.files)
    for name, value in restored.items():
        assert value.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # The second epoch, trained here from the writer's state, ends where the writer's
    # uninterrupted two-epoch run did.
    row = train_and_evaluate(make_config(SETTINGS, {"epochs": 2}), out / "run", quiet=True)
    meta = json.loads((out / "written.json").read_text())
    rows = [json.loads(r) for r in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], rows  # resumed: epoch 1 was not trained again
    np.testing.assert_allclose(row["neg_elbo"], meta["neg_elbo_after_2_epochs"], rtol=1e-5)
    return {"written_by": meta["jax"], "read_by": version("jax")}


def main() -> None:
    command, out = sys.argv[1], Path(sys.argv[2])
    try:
        if command == "write":
            write(out)
        elif command == "check":
            print(json.dumps(check(out)))
        else:
            raise SystemExit(f"unknown command {command!r}; use write or check")
    finally:  # the folders conftest made for this process (the caller passes none in)
        shutil.rmtree(conftest.os.environ["JVAE_TEST_XLA_CACHE"], ignore_errors=True)
        shutil.rmtree(conftest.os.environ["JVAE_WEIGHTS_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
