"""The parameter average: its recurrence, where runs use it, and the recipes that set it."""

import json

import jax
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.app.modes.evaluate import evaluate_run
from jvae.app.recipes import recipe, recipe_names
from jvae.app.runs import restore_run
from jvae.devices.parallel import data_mesh
from jvae.train import main, train_and_evaluate
from jvae.training.ema import averaged_params, ema_decay_at, find_ema, parameter_ema
from jvae.training.experiment import DataSpec, build, example_batch, init_state
from jvae.training.program import evaluate_split
from jvae.training.state import make_eval_step, make_train_step


def test_average_follows_the_warmed_up_recurrence():
    cfg = make_config({"hidden": (16,), "latent_dim": 2, "ema_decay": 0.9})
    exp = build(cfg, DataSpec((8, 8, 1)))
    state = init_state(exp, jax.random.key(0), example_batch(exp, 4))
    step = make_train_step(exp.objective, exp.optimizer, mesh=data_mesh(1), donate=False)
    x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
    batch = {"image": x, "mask": np.ones(4, np.float32)}
    want = jax.device_get(state.params)
    for t in range(4):
        state, _ = step(state, batch)
        d = float(ema_decay_at(0.9, np.int32(t)))
        want = jax.tree.map(lambda e, p: d * e + (1 - d) * p, want, jax.device_get(state.params))
    assert int(find_ema(state.opt_state).count) == 4
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(averaged_params(state))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The warm-up: the first update moves the average 9/10 of the way to the parameters.
    assert float(ema_decay_at(0.9, np.int32(0))) == pytest.approx(0.1)
    assert float(ema_decay_at(0.9, np.int32(10 ** 6))) == pytest.approx(0.9)
    # Without an average, the run's parameters are what is evaluated.
    plain = init_state(build(make_config({"hidden": (16,), "latent_dim": 2}), DataSpec((8, 8, 1))),
                       jax.random.key(0), example_batch(exp, 4))
    assert find_ema(plain.opt_state) is None and averaged_params(plain) is plain.params
    with pytest.raises(ValueError, match="params"):
        parameter_ema(0.5).update({"w": np.zeros(2)}, parameter_ema(0.5).init({"w": np.zeros(2)}))
    with pytest.raises(ConfigError, match="ema_decay"):
        make_config({"ema_decay": 1.0})


def test_a_run_with_an_average_evaluates_and_resumes_with_it(tiny_mnist_dir, tmp_path):
    cfg = make_config({"data_dir": str(tiny_mnist_dir), "batch_size": 64, "eval_batch_size": 128,
                       "hidden": (32,), "latent_dim": 4, "num_images": 16, "ema_decay": 0.99,
                       "epochs": 2})
    row = train_and_evaluate(cfg, tmp_path, quiet=True)
    run = restore_run(tmp_path)
    ema, raw = averaged_params(run.state), run.state.params
    assert not np.allclose(jax.tree.leaves(ema)[0], jax.tree.leaves(raw)[0])
    mesh = data_mesh()
    step = make_eval_step(run.experiment.objective, mesh=mesh)
    key = jax.random.split(jax.random.key(cfg.seed), 3)[1]
    on = {p: evaluate_split(step, params, run.test, 128, key, mesh, run.state.loss_state)
          for p, params in (("ema", ema), ("raw", raw))}
    # The epoch's row and `evaluate` score the average, not the raw parameters.
    assert row["neg_elbo"] == pytest.approx(on["ema"]["neg_elbo"], rel=1e-6)
    assert row["neg_elbo"] != pytest.approx(on["raw"]["neg_elbo"], rel=1e-4)
    report = evaluate_run(tmp_path, iw_samples=2, num_test_images=8, fid_images=0)
    eval_key = jax.random.split(jax.random.key(0))[0]
    ema_score = evaluate_split(step, ema, run.test, 128, eval_key, mesh, run.state.loss_state)
    assert report["neg_elbo"] == pytest.approx(ema_score["neg_elbo"], rel=1e-5)
    assert {"psnr", "ssim", "ms_ssim", "hf_ratio"} <= set(report)
    assert 5 < report["psnr"] < 40 and 0 < report["ms_ssim"] <= 1


def test_recipes_are_settings_that_flags_override(tmp_path, capsys):
    assert {"ldm", "ldm_no_lpips"} <= set(recipe_names())
    ldm = recipe("ldm")["settings"]
    assert ldm["adv_start"] == 50001 and ldm["beta"] == 1e-6 and ldm["lpips_weight"] == 1.0
    for name in recipe_names():  # every packaged recipe is a valid config
        make_config(recipe(name)["settings"])
    # A flag beats the recipe; the run saves the settings it used, not the recipe's name.
    code = main(["--dataset", "digits", "--workdir", str(tmp_path / "r"), "--recipe", "ldm_no_lpips",
                 "--adv-start", "5", "--adv-layers", "1", "--adv-channels", "4", "--epochs", "1",
                 "--hidden", "16", "--latent-dim", "2"])
    assert code == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    saved = saved.get("config", saved)
    assert saved["likelihood"] == "laplace" and saved["beta"] == 1e-6 and saved["adv_start"] == 5
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_adv", "train_adv_d_loss", "psnr"} <= set(rows[-1])
    capsys.readouterr()
    assert main(["--dataset", "digits", "--workdir", str(tmp_path / "x"), "--recipe", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'nope'" in err and "ldm" in err
