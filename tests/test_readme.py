"""The README's research-code example runs as written."""

import re

from conftest import REPO


def test_readme_research_example_trains(monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README.md lost its python example"
    code = blocks[0]
    monkeypatch.chdir(REPO)  # the example reads ../shared/data/mnist
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    state, metrics = scope["state"], scope["metrics"]
    assert int(state.step) == 4096 // 128
    # From ~543 nats at initialization to well below after 32 steps.
    assert float(metrics["neg_elbo"]) < 300
