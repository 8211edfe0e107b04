"""Fitted samplers: EM against scikit-learn, the MAF against change of variables, fits of a
known distribution, the files kept beside a run's checkpoints, and ``jvae sample --sampler``."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from jvae.app.config import make_config
from jvae.app.modes.inference import load_run
from jvae.app.samplers import run_sampler, sampler_path, saved_sampler
from jvae.base import VAE, Objective
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import dirichlet_posterior
from jvae.train import train_and_evaluate
from jvae.training.samplers import (
    ALPHA_BOUND,
    SamplerError,
    fit_by_gradient,
    fit_sampler,
    init_maf,
    load_sampler,
    made_masks,
    maf_forward,
    maf_inverse,
    maf_log_prob,
    sampler_from_bytes,
    sampler_to_bytes,
)

from helpers import run_cli

# Its module-scoped fixture trains once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("samplers")

# test_guard's run: the suite compiles its programs once.
TINY = {"dataset": "digits", "epochs": 1, "batch_size": 64, "eval_batch_size": 64,
        "hidden": [16], "latent_dim": 2, "num_images": 8, "quality_images": 64,
        "data_placement": "host", "dashboard": False, "tensorboard": False}


def _blobs(seed=0):
    """Three Gaussian blobs in 3-D with full covariances, 1000 points."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 7.0, -3.0]])
    parts = []
    for mean, n in zip(means, (400, 300, 300)):
        a = rng.normal(size=(3, 3))
        parts.append(rng.multivariate_normal(mean, 0.3 * a @ a.T + 0.2 * np.eye(3), size=n))
    return np.concatenate(parts).astype(np.float32)


CORRELATED = (np.array([1.0, -2.0]), np.array([[1.0, 0.8], [0.8, 2.0]]))


def _correlated(n, seed):
    mean, cov = CORRELATED
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n).astype(np.float32)


# --- the Gaussian mixture --------------------------------------------------------------------

def test_em_raises_the_likelihood_every_step_and_matches_scikit_learn():
    x = _blobs()
    fitted = fit_sampler("gmm", x, jax.random.key(0), num_components=3)
    trace = np.asarray(fitted.state["trace"])
    trace = trace[~np.isnan(trace)]
    assert len(trace) >= 3
    # Monotone up to float32 rounding of a mean over 1000 points.
    assert np.all(np.diff(trace) > -1e-5), np.diff(trace)
    assert trace[-1] - trace[0] > 0.01
    ours = float(np.mean(fitted.log_prob(x)))
    ref = GaussianMixture(3, covariance_type="full", tol=1e-4, random_state=0).fit(x)
    assert ours == pytest.approx(ref.score(x), abs=2e-3)
    order = np.argsort(np.asarray(fitted.state["means"])[:, 0] * 10 +
                       np.asarray(fitted.state["means"])[:, 1])
    ref_order = np.argsort(ref.means_[:, 0] * 10 + ref.means_[:, 1])
    means = np.asarray(fitted.state["means"])[order] * np.asarray(fitted.state["scale"]) + \
        np.asarray(fitted.state["shift"])
    np.testing.assert_allclose(means, ref.means_[ref_order], atol=2e-2)
    np.testing.assert_allclose(np.exp(np.asarray(fitted.state["log_weights"]))[order],
                               ref.weights_[ref_order], atol=1e-3)


def test_one_component_is_the_sample_mean_and_covariance_and_draws_follow_it():
    x = _correlated(2000, seed=1)
    fitted = fit_sampler("gmm", x, jax.random.key(3), num_components=1)
    ref = multivariate_normal(x.mean(0), np.cov(x.T, bias=True))
    np.testing.assert_allclose(fitted.log_prob(x[:50]), ref.logpdf(x[:50]), rtol=1e-4, atol=1e-4)
    z = np.asarray(fitted.sample(jax.random.key(4), 40_000))
    np.testing.assert_allclose(z.mean(0), x.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), np.cov(x.T), atol=0.05)


def test_a_mixture_needs_as_many_codes_as_components():
    with pytest.raises(SamplerError, match="at least 10 codes"):
        fit_sampler("gmm", np.zeros((5, 2)), jax.random.key(0))
    with pytest.raises(SamplerError, match="unknown sampler"):
        fit_sampler("kde", np.zeros((5, 2)), jax.random.key(0))


# --- the masked autoregressive flow -------------------------------------------------------------

def _numpy_made(layer, x):
    """One MADE in NumPy with masks built here from the degrees, independently."""
    d = x.shape[1]
    ws = [np.asarray(w, np.float64) for w in layer["w"]]
    bs = [np.asarray(b, np.float64) for b in layer["b"]]
    prev = np.arange(1, d + 1)
    h = x
    for w, b in zip(ws[:-1], bs[:-1]):
        deg = np.array([1 + j % (d - 1) for j in range(w.shape[1])])
        h = np.maximum(h @ (w * (deg[None] >= prev[:, None])) + b, 0.0)
        prev = deg
    out = np.tile(np.arange(1, d + 1)[None] > prev[:, None], 2)
    h = h @ (ws[-1] * out) + bs[-1]
    return h[:, :d], ALPHA_BOUND * np.tanh(h[:, d:] / ALPHA_BOUND)


def _random_maf(dim=4, layers=3, hidden=(8, 8), seed=0):
    """A MAF whose output weights are far from the identity's."""
    maf = init_maf(jax.random.key(seed), dim, layers, hidden)
    for i, layer in enumerate(maf):
        layer["w"][-1] = 0.5 * jax.random.normal(jax.random.key(100 + i), layer["w"][-1].shape)
        layer["b"][-1] = 0.3 * jax.random.normal(jax.random.key(200 + i), layer["b"][-1].shape)
    return maf


def test_made_masks_let_output_i_see_only_earlier_inputs():
    masks = made_masks(5, (16, 7))
    reach = masks[0]
    for m in masks[1:]:
        reach = (reach @ m > 0).astype(np.float32)
    mu_reach = reach[:, :5]  # (input, output): output i sees input j only for j < i
    np.testing.assert_array_equal(mu_reach, np.triu(np.ones((5, 5)), k=1))


def test_maf_log_prob_is_the_change_of_variables_and_inverse_undoes_forward():
    maf = _random_maf()
    x = jax.random.normal(jax.random.key(1), (6, 4)) * 1.5
    # NumPy: the layers one by one, reversing the order between them.
    h, log_det = np.asarray(x, np.float64), np.zeros(6)
    for i, layer in enumerate(maf):
        h = h[:, ::-1] if i else h
        mu, alpha = _numpy_made(layer, h)
        h = (h - mu) * np.exp(-alpha)
        log_det -= alpha.sum(1)
    ref = -0.5 * (h ** 2).sum(1) - 2 * math.log(2 * math.pi) + log_det
    log_prob = jax.jit(maf_log_prob)(maf, x)
    np.testing.assert_allclose(log_prob, ref, rtol=1e-5, atol=1e-5)
    # Change of variables with the Jacobian by autodiff: log N(f(x)) + log |det df/dx|.
    forward = jax.jit(lambda m, v: maf_forward(m, v)[0])
    u, jac = forward(maf, x), jax.jit(jax.vmap(jax.jacfwd(
        lambda v: maf_forward(maf, v[None])[0][0])))(x)
    cov_ref = (multivariate_normal(np.zeros(4), np.eye(4)).logpdf(np.asarray(u))
               + np.linalg.slogdet(np.asarray(jac, np.float64))[1])
    np.testing.assert_allclose(log_prob, cov_ref, rtol=1e-4, atol=1e-4)
    # One layer's Jacobian is triangular: u_i depends on x_j for j <= i only.
    one = jax.jit(jax.jacfwd(lambda v: maf_forward(maf[:1], v[None])[0][0]))(x[0])
    np.testing.assert_array_equal(np.triu(np.asarray(one), k=1), 0.0)
    inverse = jax.jit(maf_inverse)
    np.testing.assert_allclose(inverse(maf, u), x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(forward(maf, inverse(maf, x)), x, rtol=1e-4, atol=1e-4)


# --- fits of a known distribution ------------------------------------------------------------

def test_early_stopping_returns_the_parameters_of_the_lowest_validation_loss():
    """Training rows at 0 pull m from 5 down past the validation rows at 2: the validation
    loss (m - 2)^2 falls, then rises; the parameters of its minimum come back."""
    objective = Objective(lambda: (), lambda p, batch, key, state: (
        {"loss": (batch["image"][:, 0] - p["m"]) ** 2}, state))
    params, history = jax.jit(lambda p: fit_by_gradient(
        objective, p, jnp.zeros((50, 1)), jax.random.key(0), steps=200, batch_size=8,
        learning_rate=0.1, valid=jnp.full((10, 1), 2.0), eval_every=10))({"m": jnp.asarray(5.0)})
    valid = np.asarray(history["valid_loss"])
    assert np.isnan(valid[:9]).all() and np.isfinite(valid[9::10]).all()
    best = int(history["best_step"])
    assert 10 <= best < 200 and valid[best - 1] == np.nanmin(valid)
    assert float((params["m"] - 2.0) ** 2) == pytest.approx(np.nanmin(valid), rel=1e-5)
    assert np.nanmin(valid) < 0.1 < valid[-1]  # the last parameters were worse

FITS = {"maf": {"num_layers": 2, "hidden": (16, 16), "steps": 600},
        "two-stage": {"hidden": (64, 64), "steps": 1200, "log_prob_samples": 64}}


@pytest.mark.parametrize("name", sorted(FITS))
def test_fitted_samplers_reproduce_a_correlated_gaussian(name):
    x = _correlated(4000, seed=2)
    fitted = fit_sampler(name, x, jax.random.key(0), **FITS[name])
    z = np.asarray(fitted.sample(jax.random.key(1), 20_000))
    np.testing.assert_allclose(z.mean(0), x.mean(0), atol=0.08)
    np.testing.assert_allclose(np.cov(z.T), np.cov(x.T), atol=0.15)
    # Held-out log-density near the true one (the two-stage VAE's is a lower bound).
    held = _correlated(500, seed=3)
    true = multivariate_normal(*CORRELATED).logpdf(held).mean()
    ours = float(np.mean(fitted.log_prob(held)))
    assert true - 0.08 < ours < true + 0.03, (ours, true)
    # The saved bytes give back the same sampler: the same draws, the same densities.
    again, meta = sampler_from_bytes(sampler_to_bytes(fitted, {"step": 7}))
    assert meta == {"step": 7} and again.sampler is fitted.sampler
    np.testing.assert_array_equal(again.sample(jax.random.key(1), 20_000), z)


def test_codes_on_the_simplex_or_a_codebook_are_refused():
    vae = VAE(None, None, None, dirichlet_posterior(), bernoulli(), (4,))
    with pytest.raises(SamplerError, match="simplex"):
        run_sampler(None, "gmm", step=0, vae=vae, params={}, images=np.zeros((20, 8, 8, 1)))


# --- a run's samplers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run of one epoch on the bundled digits."""
    workdir = tmp_path_factory.mktemp("samplers") / "run"
    train_and_evaluate(make_config(TINY), workdir, quiet=True)
    return workdir


def _fit(run_dir, **kw):
    loaded = load_run(run_dir)
    return loaded, run_sampler(run_dir, "gmm", step=loaded.step, vae=loaded.inference.vae,
                               params=loaded.params, images=loaded.train["image"], **kw)


def test_cli_sample_with_a_fitted_mixture_writes_a_grid(run, capsys):
    out = run.parent / "gmm.png"
    code, io = run_cli(["sample", "--workdir", str(run), "--sampler", "gmm", "--num", "16",
                        "--output", str(out), "--npy"], capsys)
    assert code == 0, io.err
    line = json.loads(io.out.strip().splitlines()[-1])
    assert line["sampler"] == "gmm" and line["refitted"] is True and line["count"] == 16
    assert line["fitted_on"] == len(load_run(run).train["image"])
    assert line["sampler_file"] == str(sampler_path(run, "gmm", line["step"]))
    with Image.open(out) as grid:  # 8 x 2 digits of 8 x 8 with 2 pixels between, enlarged 2x
        assert grid.size == (2 * (8 * 10 + 2), 2 * (2 * 10 + 2))
    z = np.load(out.with_name("gmm_z.npy"))
    assert z.shape == (16, 2) and np.all(np.isfinite(z))
    # The codes are the saved sampler's draws for --seed 0.
    saved, meta = load_sampler(line["sampler_file"])
    assert meta["step"] == line["step"] and meta["codes"] == line["fitted_on"]
    np.testing.assert_allclose(saved.sample(jax.random.key(0), 16), z, rtol=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "gmm", "--temperature", "0.5"], "--temperature scales the prior"),
    (["--sampler", "maf", "--components", "3"], "--components applies to --sampler gmm"),
    (["--components", "3"], "the prior is not fitted"),
    (["--sampler", "gmm", "--output", "{run}/samplers/x.png"], "lies in samplers/"),
])
def test_sample_refuses_flags_that_do_not_apply(run, capsys, argv, message):
    argv = [a.format(run=run) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(run.parent / "refused.png")]
    code, io = run_cli(["sample", "--workdir", str(run), *argv], capsys)
    lines = io.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], io.err
    assert not (run.parent / "refused.png").exists()


def test_the_saved_fit_is_reused_then_refitted_for_new_options_and_a_new_checkpoint(run):
    loaded, first = _fit(run)
    path = sampler_path(run, "gmm", loaded.step)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    _, again = _fit(run)
    assert again.refitted is False and path.stat().st_mtime_ns == stamp
    assert again.meta == first.meta
    forced = _fit(run, refit=True)[1]
    assert forced.refitted is True and path.stat().st_mtime_ns != stamp
    np.testing.assert_array_equal(forced.fitted.state["means"], first.fitted.state["means"])
    z = first.fitted.sample(jax.random.key(5), 8)
    np.testing.assert_array_equal(again.fitted.sample(jax.random.key(5), 8), z)
    # Other options, parameters or steps do not match the file (they are fitted anew).
    digest = first.meta["params"]
    assert saved_sampler(run, "gmm", loaded.step, digest, (2,)) is not None
    assert saved_sampler(run, "gmm", loaded.step, digest, (2,), {"num_components": 4}) is None
    assert saved_sampler(run, "gmm", loaded.step, "0" * 16, (2,)) is None
    assert saved_sampler(run, "gmm", loaded.step + 1, digest, (2,)) is None
    # One more epoch: a new checkpoint, a new fit; the old step's file goes.
    train_and_evaluate(make_config({**TINY, "epochs": 2}), run, quiet=True)
    newer, fresh = _fit(run)
    assert newer.step > loaded.step and fresh.refitted is True
    assert fresh.path == sampler_path(run, "gmm", newer.step) and fresh.path.is_file()
    assert not path.exists()
    assert not jnp.allclose(fresh.fitted.state["means"][0], first.fitted.state["means"][0])
