"""Max batch size from the compiler's memory plan."""

import json

import pytest

from jvae.app.config import make_config
from jvae.app.modes.memory import MemoryFit, fit_memory, main, train_program_planner
from jvae.training.experiment import DataSpec

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("memory")

SHAPE, EXAMPLES = (8, 8, 1), 4096


@pytest.fixture(scope="module")
def planned():
    cfg = make_config({"hidden": "32", "latent_dim": 4, "num_devices": 1})
    fn, devices = train_program_planner(cfg, DataSpec(SHAPE), EXAMPLES)
    assert devices == 1
    cache = {}
    return lambda b: cache.setdefault(b, fn(b))


@pytest.mark.slow
def test_linear_model_predicts_a_third_compiled_size(planned):
    fit = fit_memory(planned, (512, 1024), budget=10**12, refine=0)
    assert fit.slope > 4 * 64  # at least the batch's own float32 pixels per example
    assert fit.intercept > 4 * EXAMPLES * 64  # the resident training set
    assert abs(fit.predict(2048) - planned(2048)) < 0.02 * planned(2048)


@pytest.mark.slow
def test_max_batch_size_fits_the_budget_and_is_nearly_the_largest(planned):
    budget = (planned(1024) + planned(2048)) // 2
    fit = fit_memory(planned, (512, 1024), budget)
    assert isinstance(fit, MemoryFit) and 1024 < fit.max_batch_size < 2048
    assert planned(fit.max_batch_size) <= budget
    assert planned(int(fit.max_batch_size * 1.05)) > budget
    capped = fit_memory(planned, (512, 1024), 10**12, limit=EXAMPLES, refine=0)
    assert capped.max_batch_size == EXAMPLES  # a batch cannot exceed the data


def test_cli_prints_the_estimate(capsys):
    code = main(["--hidden", "32", "--latent-dim", "4", "--num-devices", "1",
                 "--data-shape", "8,8,1", "--num-examples", str(EXAMPLES), "--budget-mb", "3",
                 "--sizes", "512,1024"])
    assert code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["limited_by"] == "memory" and 0 < row["max_batch_size"] < EXAMPLES
    assert main(["--net", "bogus"]) == 2
