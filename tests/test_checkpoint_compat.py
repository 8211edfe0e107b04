"""Checkpoints cross the supported JAX range: one written under jax 0.10 and one under
jax 0.12 (``tests/checkpoints/``, written by ``tests/checkpoints/write.py``) are both
restored, value for value, by whichever JAX runs the suite, and resume training."""

import json
import shutil

import numpy as np
import pytest
from checkpoints.write import SETTINGS, state_arrays
from conftest import REPO

from jvae.app.config import make_config
from jvae.app.runs import restore_run
from jvae.train import train_and_evaluate

WRITTEN = sorted((REPO / "tests" / "checkpoints").glob("jax-*"))


def test_each_end_of_the_supported_range_wrote_a_checkpoint():
    assert [w.name for w in WRITTEN] == ["jax-0.10", "jax-0.12"]
    for w in WRITTEN:
        assert json.loads((w / "written.json").read_text())["jax"].startswith(w.name[4:] + ".")


@pytest.mark.parametrize("written", WRITTEN, ids=lambda w: w.name)
def test_a_checkpoint_from_either_jax_restores_exactly_and_resumes(written, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(written / "run", run)
    restored = state_arrays(restore_run(run).state)
    expected = np.load(written / "state.npz")
    assert sorted(restored) == sorted(expected.files)
    for name, value in restored.items():
        assert value.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # The second epoch, trained here from the other release's state, ends where the
    # writer's uninterrupted two-epoch run did.
    row = train_and_evaluate(make_config(SETTINGS, {"epochs": 2}), run, quiet=True)
    meta = json.loads((written / "written.json").read_text())
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2]  # resumed: the first epoch was not trained again
    assert row["epoch"] == 2
    assert row["neg_elbo"] == pytest.approx(meta["neg_elbo_after_2_epochs"], rel=1e-5)
