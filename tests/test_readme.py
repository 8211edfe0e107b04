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
    # At step 0 the KL warm-up weight and the ramp are 0: the losses are exactly these sums.
    expected = {"ssim": lambda v: v["recon"] + 0.5 * v["ssim"],
                "code_l2": lambda v: v["recon"] + v["kl"]}
    for code, term in zip(blocks[1:3], ("ssim", "code_l2")):
        exec(compile(code, "README.md", "exec"), scope)
        values, _ = scope["objective"].terms(params, batch, jax.random.key(0),
                                             scope["objective"].init())
        assert term in values and np.all(np.isfinite(values[term]))
        np.testing.assert_allclose(values["loss"], expected[term](values), rtol=1e-5)


def _resolve(dotted: str):
    """The module or attribute a dotted name names (the longest importable module prefix first)."""
    import importlib
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_module_name_and_path_in_the_readme_exists():
    """What the README names, ``jvae.x.y`` or ``jvae/x/``, is there to import or open."""
    text = (REPO / "README.md").read_text()
    names = sorted(set(re.findall(r"(?<![\w/.-])jvae(?:\.[A-Za-z_]\w*)+", text)))
    assert len(names) >= 20, names
    missing = []
    for dotted in names:
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            missing.append(dotted)
    assert not missing, f"the README names what does not exist: {missing}"
    paths = sorted(set(re.findall(r"(?<![\w.-])(?:jvae|tests|benchmarks)/[\w/.]*\w/?", text)))
    assert len(paths) >= 15, paths
    assert not [p for p in paths if not (REPO / p).exists()], paths
