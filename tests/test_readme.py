"""The README's Python examples run as written, in order, in one namespace."""

import re

import jax
import numpy as np
from conftest import REPO


def test_readme_python_examples_run(monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3, "README.md lost its python examples"
    monkeypatch.chdir(REPO)  # the first example reads ../shared/data/mnist
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    state, metrics = scope["state"], scope["metrics"]
    assert int(state.step) == 4096 // 128
    # From ~543 nats at initialization to well below after 32 steps.
    assert float(metrics["neg_elbo"]) < 300
    batch = {"image": scope["data"]["image"][:8]}
    params = jax.device_get(state.params)
    for code, term in zip(blocks[1:3], ("ssim", "code_l2")):
        exec(compile(code, "README.md", "exec"), scope)
        values, _ = scope["objective"].terms(params, batch, jax.random.key(0),
                                             scope["objective"].init())
        assert term in values and np.all(np.isfinite(values[term]))
        # The composed loss is the weighted sum of the pieces it reports.
        assert np.all(values["loss"] >= values["recon"] + values["kl"] - 1e-3)
