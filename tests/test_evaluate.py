"""IWAE bounds, chunked evaluation and the ``jvae evaluate`` CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import make_config
from jvae.app.modes.evaluate import main
from jvae.app.runs import restore_run
from jvae.data import load_mnist_idx, to_float
from jvae.devices.parallel import data_mesh
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import dirichlet_posterior, normal_posterior
from jvae.evaluation import active_units, iwae_log_likelihood
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import iwae
from jvae.terms import (
    compose,
    forward,
    iwae_bound,
    kl_divergence,
    log_mean_exp,
    neg_elbo_metric,
    reconstruction,
)
from jvae.train import train_and_evaluate
from jvae.train_state import create_train_state, make_optimizer, make_train_step


def _vae(posterior, data_shape=(28, 28, 1), hidden=(64,), latent=(6,)):
    lik = bernoulli()
    enc, dec = make_nets("mlp", posterior=posterior, likelihood=lik, latent_shape=latent,
                         data_shape=data_shape, hidden=hidden)
    return make_vae(enc, dec, posterior, lik, latent)


@pytest.mark.parametrize("posterior", [normal_posterior(), dirichlet_posterior()],
                         ids=["normal", "dirichlet"])
def test_iwae_with_one_sample_is_the_elbo(posterior):
    vae = _vae(posterior, data_shape=(6, 6, 1), hidden=(16,))
    x = jax.random.uniform(jax.random.key(0), (8, 6, 6, 1))
    params = jax.jit(vae.init)(jax.random.key(1), x)
    key, batch = jax.random.key(2), {"image": x}
    # As training objectives on the same draw: -IWAE_1 = recon + (log q - log p).
    objective = compose(vae, {"neg_iwae": (1.0, iwae_bound()), "recon": (0.0, reconstruction()),
                              "kl": (0.0, kl_divergence(analytic=False))},
                        num_samples=1, derived=neg_elbo_metric)
    out, _ = jax.jit(objective.terms)(params, batch, key, ())
    np.testing.assert_allclose(out["neg_iwae"], out["neg_elbo"], rtol=1e-6)
    # As the evaluator's bound: k = 1 gives log w itself, whose mean over many
    # independent draws is the ELBO with the closed-form KL.
    one = jax.jit(lambda p, k: iwae_log_likelihood(vae, p, x, k, 1))(params, key)
    np.testing.assert_allclose(one["log_likelihood"], one["elbo"], rtol=1e-6)
    draws = jax.jit(jax.vmap(lambda k: iwae_log_likelihood(vae, params, x, k, 1)["elbo"]))(
        jax.random.split(jax.random.key(3), 1000))
    analytic = jax.jit(lambda p: -compose(vae, {"recon": (1.0, reconstruction()),
                                                "kl": (1.0, kl_divergence())},
                                          num_samples=1000).terms(p, batch, key, ())[0]["loss"])(
        params)
    se = draws.std(0) / np.sqrt(1000)
    np.testing.assert_array_less(np.abs(draws.mean(0) - analytic), 5 * se + 1e-3)


def test_chunk_size_does_not_change_the_bound():
    vae = _vae(normal_posterior(), data_shape=(6, 6, 1), hidden=(16,))
    x = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
    params = jax.jit(vae.init)(jax.random.key(1), x)
    bounds = [jax.jit(lambda p, c=c: iwae_log_likelihood(vae, p, x, jax.random.key(5), 30,
                                                          chunk_size=c))(params)
              for c in (7, 30)]
    for b in bounds[1:]:
        np.testing.assert_allclose(b["log_likelihood"], bounds[0]["log_likelihood"], rtol=1e-5)
        np.testing.assert_allclose(b["elbo"], bounds[0]["elbo"], rtol=1e-5)
    assert np.all(bounds[0]["log_likelihood"] >= bounds[0]["elbo"])  # Jensen, per example


def test_bound_increases_with_k_on_a_trained_model(mnist_dir):
    raw = load_mnist_idx(mnist_dir, "train")
    images = to_float(raw["image"][:2048])
    vae = _vae(normal_posterior(), hidden=(128,), latent=(8,))
    objective = iwae(vae, num_samples=1)
    opt = make_optimizer(3e-3)
    state = create_train_state(vae, objective, opt, jax.random.key(0), {"image": images[:128]})
    step = make_train_step(objective, opt, mesh=data_mesh(1))
    rng = np.random.default_rng(0)
    # 150 steps: the bound already rises with k (here by about 4.8 nats from k = 1
    # to 500, 0.5 from k = 50 to 500).
    for _ in range(150):
        state, _ = step(state, {"image": images[rng.choice(2048, 128, replace=False)]})
    test = {"image": jnp.asarray(to_float(load_mnist_idx(mnist_dir, "test")["image"][:100]))}
    # log w_s for 500 draws per image; the k-sample bound uses the first k.
    @jax.jit
    def log_weights(p):
        fwd = forward(vae, p, test, jax.random.key(7), num_samples=500)
        return fwd.log_px + fwd.log_pz - fwd.log_q
    log_w = log_weights(state.params)
    ks = (1, 5, 50, 500)
    means = [float(log_mean_exp(log_w[:k]).mean()) for k in ks]
    assert all(a < b for a, b in zip(means, means[1:])), dict(zip(ks, means))
    assert means[-1] - means[0] > 1.0  # nats: a loose posterior leaves a real gap


def test_active_units_counts_varying_dimensions():
    codes = np.zeros((100, 4))
    codes[:, 1] = np.linspace(-1, 1, 100)          # variance 0.34: active
    codes[:, 3] = 0.05 * np.linspace(-1, 1, 100)   # variance 0.0009: inactive
    assert active_units(codes) == 1


def test_evaluate_cli_cvae_and_ae(tiny_mnist_dir, tmp_path, capsys):
    common = {"data_dir": str(tiny_mnist_dir), "epochs": 1, "batch_size": 64,
              "eval_batch_size": 128, "hidden": [32], "latent_dim": 4, "num_images": 16}
    cvae_dir = tmp_path / "cvae"
    train_and_evaluate(make_config(common, {"model": "cvae"}), cvae_dir, quiet=True)
    # Samples: one row of 8 per class (10 classes), 28-pixel tiles, 2-pixel padding, x2.
    with Image.open(cvae_dir / "images" / "samples_epoch001.png") as grid:
        grid.load()
    assert grid.size == (2 * (8 * 30 + 2), 2 * (10 * 30 + 2))
    assert main(["--workdir", str(cvae_dir), "--iw-samples", "16", "--num-test-images", "40",
                 "--chunk-size", "5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == json.loads((cvae_dir / "eval_k16.json").read_text())
    assert report["conditional"] and report["model"] == "cvae"
    # Judged by a classifier of the 512 training images, on 100 samples per class.
    assert report["classifier_test_accuracy"] > 0.5
    assert report["conditional_accuracy"] in {i / 1000 for i in range(1001)}
    assert (report["n_test_images"], report["n_eval_images"], report["iw_samples"]) == (40, 256, 16)
    assert report["nll_bound"] < report["neg_elbo_subset"]
    np.testing.assert_allclose(report["neg_elbo"], report["recon"] + report["kl"], rtol=1e-5)
    # Active units recomputed from the restored run's posterior means.
    run = restore_run(cvae_dir)
    post = run.experiment.vae.encode(run.state.params, run.test["image"], run.test["cond"])
    means = np.asarray(run.experiment.vae.posterior.mean(post))
    assert report["latent_size"] == 4
    assert report["active_units"] == int(np.sum(means.var(axis=0) > 0.01))

    ae_dir = tmp_path / "ae"
    row = train_and_evaluate(make_config(common, {"model": "ae"}), ae_dir, quiet=True)
    assert row["neg_elbo"] is None and row["kl"] is None and row["recon"] > 0
    assert main(["--workdir", str(ae_dir), "--iw-samples", "4"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "nll_bound" not in report and "neg_elbo" not in report and report["recon"] > 0


def test_evaluate_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["--workdir", str(tmp_path), "--iw-samples", "0"]) == 2
    assert "--iw-samples must be positive" in capsys.readouterr().err
