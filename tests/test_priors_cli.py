"""The learned-prior families from the command line: train one tiny epoch, sample, evaluate."""

import json

import numpy as np
from PIL import Image

from helpers import run_cli

TINY = ["--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--eval-batch-size",
        "512", "--hidden", "16", "--latent-dim", "2", "--num-images", "8", "--quality-images",
        "32", "--data-placement", "host", "--no-dashboard", "--no-tensorboard"]


def _train_sample_evaluate(tmp_path, capsys, flags):
    run = tmp_path / "run"
    code, out = run_cli(["train", "--workdir", str(run), *TINY, *flags], capsys)
    assert code == 0, out.err[-2000:]
    assert (run / "images" / "reconstructions_epoch001.png").is_file()
    code, out = run_cli(["sample", "--workdir", str(run), "--output", str(tmp_path / "s.png"),
                         "--num", "8", "--npy"], capsys)
    assert code == 0, out.err[-2000:]
    z = np.load(tmp_path / "s_z.npy")
    assert z.shape == (8, 2) and np.all(np.isfinite(z))
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size[0] > 0
    code, out = run_cli(["evaluate", "--workdir", str(run), "--iw-samples", "16",
                         "--num-test-images", "32", "--fid-images", "0",
                         "--output", str(tmp_path / "eval.json")], capsys)
    assert code == 0, out.err[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    # The k-sample bound is finite and, on average, no looser than the ELBO on the same images.
    assert np.isfinite(report["nll_bound"])
    assert report["nll_bound"] <= report["neg_elbo_subset"] + 0.5
    return run, report


def test_vamp_trains_samples_and_evaluates(tmp_path, capsys):
    run, report = _train_sample_evaluate(
        tmp_path, capsys, ["--model", "vamp", "--vamp-components", "16", "--vamp-init", "data"])
    assert report["model"] == "vamp" and report["kl"] > 0
    code, out = run_cli(["sample", "--workdir", str(run), "--output",
                         str(tmp_path / "t.png"), "--temperature", "0.5"], capsys)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "learned vamp prior" in lines[0], out.err


def test_two_stochastic_layers_train_sample_and_evaluate(tmp_path, capsys):
    _, report = _train_sample_evaluate(
        tmp_path, capsys, ["--model", "iwae", "--num-samples", "3", "--stochastic-layers", "2",
                           "--top-latent-dim", "2", "--top-hidden", "8", "--activation", "tanh"])
    assert report["model"] == "iwae" and np.isfinite(report["neg_elbo"])
