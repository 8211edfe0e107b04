"""The LPIPS term and latent diffusion's recipe, end to end with LPIPS on a random backbone."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import make_config
from jvae.app.modes.evaluate import evaluate_run
from jvae.app.runs import restore_run
from jvae.metrics.lpips import lpips_distance
from jvae.metrics.weights import WeightStoreError, load
from jvae.terms.composition import forward
from jvae.train import main
from jvae.training.experiment import DataSpec, build, example_batch, init_state

pytestmark = pytest.mark.xdist_group("lpips")


def test_lpips_term_is_the_distance_counted_per_pixel(lpips_store):
    cfg = make_config({"net": "conv", "hidden": (16,), "latent_dim": 2, "likelihood": "laplace",
                       "lpips_weight": 0.25})
    exp = build(cfg, DataSpec((28, 28, 1)))
    state = init_state(exp, jax.random.key(0), example_batch(exp, 4))
    x = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1), np.float32))
    terms, _ = jax.jit(exp.objective.terms)(state.params, {"image": x}, jax.random.key(1), ())
    fwd = forward(exp.vae, state.params, {"image": x}, jax.random.key(1))
    recon = exp.vae.likelihood.mean(fwd.lik)[0]
    rgb = (lambda a: jnp.repeat(a, 3, axis=-1))
    want = 28 * 28 * lpips_distance(load("lpips"), rgb(recon), rgb(x), normalize=True)
    np.testing.assert_allclose(terms["lpips"], want, rtol=1e-4)
    np.testing.assert_allclose(terms["loss"], terms["recon"] + terms["kl"] + 0.25 * want, rtol=1e-4)


def test_lpips_without_its_weights_names_the_file_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("JVAE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightStoreError) as info:
        build(make_config({"net": "conv", "lpips_weight": 1.0}), DataSpec((28, 28, 1)))
    message = str(info.value)
    assert str(tmp_path) in message and "jvae weights fetch lpips" in message


def _crops(mnist_dir, folder):
    """32 training and 16 test crops of real digits, 24x24 (LPIPS's VGG needs 16+ pixels)."""
    from PIL import Image

    from jvae.data import load_mnist_idx
    images = load_mnist_idx(mnist_dir, "test")["image"][:48, 2:26, 2:26, 0]
    for i, a in enumerate(images):
        split = folder / ("train" if i < 32 else "test")
        split.mkdir(parents=True, exist_ok=True)
        Image.fromarray((a * 255).astype(np.uint8)).save(split / f"{i}.png")
    return folder


def _argv(folder, run, recipe):
    return ["--data-source", str(folder), "--workdir", str(run), "--recipe", recipe, "--net", "conv",
            "--hidden", "16", "--latent-dim", "2", "--batch-size", "16", "--eval-batch-size", "16",
            "--adv-start", "1", "--adv-layers", "1", "--adv-channels", "4", "--ema-decay", "0.9",
            "--no-cache", "--num-images", "4"]


def _rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_ldm_recipe_trains_with_lpips_and_reports_it(lpips_store, mnist_dir, tmp_path):
    run = tmp_path / "run"
    assert main(_argv(_crops(mnist_dir, tmp_path / "crops"), run, "ldm") + ["--epochs", "1"]) == 0
    row = _rows(run)[-1]
    assert row["train_lpips"] > 0 and row["train_adv_weight"] > 0
    assert 0 < row["lpips"] < 2 and row["psnr"] > 0 and 0 < row["ms_ssim"] <= 1


def test_an_adversarial_run_resumes_exactly(mnist_dir, tmp_path):
    folder = _crops(mnist_dir, tmp_path / "crops")
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(_argv(folder, full, "ldm_no_lpips") + ["--epochs", "2"]) == 0
    assert main(_argv(folder, split, "ldm_no_lpips") + ["--epochs", "1"]) == 0
    assert main(["--workdir", str(split), "--epochs", "2"]) == 0
    compared = ("step", "neg_elbo", "recon", "psnr", "train_loss", "train_adv", "train_adv_d_loss",
                "train_adv_weight")
    a, b = _rows(full), _rows(split)
    assert [[r[k] for k in compared] for r in a] == [[r[k] for k in compared] for r in b]
    assert a[-1]["train_adv_weight"] > 0
    finals = [restore_run(d).state for d in (full, split)]
    for x, y in zip(jax.tree.leaves(finals[0].loss_state), jax.tree.leaves(finals[1].loss_state)):
        np.testing.assert_array_equal(x, y)
    assert "psnr" in evaluate_run(split, iw_samples=2, num_test_images=4, fid_images=0)
