"""MIWAE, PIWAE and CIWAE (Rainforth et al., 2018): NumPy references on the same draws, PIWAE's
split gradient, the settings they refuse, and one tiny CLI run of each."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.base import Objective
from jvae.distributions.posteriors import normal_posterior
from jvae.objectives import ciwae, iwae, miwae, piwae
from jvae.terms import group_log_weights, split_gradient

from helpers import run_cli, tiny_vae

BATCH = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, 6, 6, 1)), jnp.float32)}
KEY = jax.random.key(3)


def _setup():
    vae = tiny_vae(normal_posterior(), latent_shape=(3,), data_shape=(6, 6, 1),
                   hidden=(8,))
    return vae, vae.init(jax.random.key(0), BATCH["image"])


def _terms(objective, params):
    out, _ = jax.jit(objective.terms)(params, BATCH, KEY, objective.init())
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _numpy_log_weights(vae, params, num_samples):
    """``(S, B)`` log-weights, recon and analytic KL computed in NumPy (float64) from the
    encoder's Normal parameters, the posterior's draws for ``KEY`` and the decoder's logits."""
    post = vae.encode(params, BATCH["image"])
    z = vae.posterior.sample(KEY, post, num_samples)  # the draws forward() takes for KEY
    logits = np.asarray(jax.vmap(lambda zs: vae.decode(params, zs)["logits"])(z), np.float64)
    z, loc, scale = (np.asarray(a, np.float64) for a in (z, post["loc"], post["scale"]))
    x = np.asarray(BATCH["image"], np.float64)
    log_px = (x * logits - np.logaddexp(0.0, logits)).reshape(num_samples, len(x), -1).sum(-1)
    log_q = (-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_pz = (-0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1)
    kl = (0.5 * (loc ** 2 + scale ** 2 - 1.0) - np.log(scale)).sum(-1)
    return log_px + log_pz - log_q, -log_px.mean(0), kl


def _log_mean_exp(a, axis):
    m = a.max(axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis))


def test_miwae_matches_numpy_and_reduces_to_iwae_and_the_elbo():
    vae, params = _setup()
    m, k = 3, 4
    log_w, recon, kl = _numpy_log_weights(vae, params, m * k)
    out = _terms(miwae(vae, num_samples=k, groups=m), params)
    # Draw s = m * K + k belongs to group m.
    want = -np.mean(_log_mean_exp(log_w.reshape(m, k, -1), 1), 0)
    np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
    np.testing.assert_allclose(out["neg_miwae"], want, rtol=1e-5)
    np.testing.assert_allclose(out["neg_iwae"], -_log_mean_exp(log_w, 0), rtol=1e-5)
    np.testing.assert_allclose(out["neg_elbo"], recon + kl, rtol=1e-5)
    # Tighter than the M K-sample mean log-weight, looser than the M K-sample IWAE bound.
    assert np.all(out["neg_iwae"] <= out["neg_miwae"]) and np.all(out["neg_miwae"]
                                                                  <= -log_w.mean(0))
    # M = 1 is IWAE(K) on the same draws; K = 1 is the M-sample Monte Carlo ELBO.
    np.testing.assert_allclose(_terms(miwae(vae, num_samples=k, groups=1), params)["loss"],
                               _terms(iwae(vae, num_samples=k), params)["loss"], rtol=1e-6)
    np.testing.assert_allclose(_terms(miwae(vae, num_samples=1, groups=m), params)["loss"],
                               -_numpy_log_weights(vae, params, m)[0].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(group_log_weights(jnp.arange(6.0)[:, None], 2)[1, :, 0],
                                  [3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        group_log_weights(jnp.zeros((6, 1)), 4)


def test_ciwae_interpolates_between_the_elbo_and_iwae():
    vae, params = _setup()
    k = 5
    log_w, recon, kl = _numpy_log_weights(vae, params, k)
    neg_iwae = -_log_mean_exp(log_w, 0)
    for beta in (0.0, 0.3, 1.0):
        out = _terms(ciwae(vae, num_samples=k, beta=beta), params)
        want = beta * (recon + kl) + (1 - beta) * neg_iwae
        np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
        np.testing.assert_allclose(out["neg_ciwae"], want, rtol=1e-5)
        np.testing.assert_allclose(out["neg_elbo"], recon + kl, rtol=1e-5)
        np.testing.assert_allclose(out["neg_iwae"], neg_iwae, rtol=1e-5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ciwae(vae, num_samples=k, beta=1.5)


def _grad(objective, params, key="loss"):
    def mean_loss(p):
        return objective.terms(p, BATCH, KEY, objective.init())[0][key].mean()
    return jax.jit(jax.grad(mean_loss))(params)


def test_piwae_splits_the_gradient_between_the_networks():
    """Decoder: IWAE(M K)'s gradient; encoder: MIWAE(M, K)'s; the same draws for both."""
    vae, params = _setup()
    m, k = 2, 3
    objective = piwae(vae, num_samples=k, groups=m)
    out = _terms(objective, params)
    np.testing.assert_allclose(out["loss"], out["neg_iwae"], rtol=1e-6)
    g = _grad(objective, params)
    g_iwae = _grad(iwae(vae, num_samples=m * k), params)
    g_miwae = _grad(miwae(vae, num_samples=k, groups=m), params)
    for part, want, other in (("encoder", g_miwae, g_iwae), ("decoder", g_iwae, g_miwae)):
        for a, b in zip(jax.tree.leaves(g[part]), jax.tree.leaves(want[part])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        # The two bounds' gradients do differ: the split picks one, not a mix.
        assert any(not np.allclose(b, c, rtol=1e-3) for b, c in
                   zip(jax.tree.leaves(want[part]), jax.tree.leaves(other[part])))


def test_split_gradient_routes_every_parameter_subtree():
    """A posterior family's shared parameters (a flow) are the inference network's; a learned
    prior's are the generative network's; the value and state are the one objective's."""
    params = {name: jnp.float32(v) for name, v in
              (("encoder", 1.0), ("posterior", 2.0), ("decoder", 3.0), ("prior", 4.0))}

    def sq(weight, p):
        return sum(weight * p[n] ** 2 for n in p) * jnp.ones(2)

    def terms(p, batch, key, state):
        # The generative loss weighs every p^2 by 1, the inference loss by 10.
        return {"loss": sq(1.0, p), "inf": sq(10.0, p), "metric": sq(1.0, p) + 1.0}, state + 1

    split = split_gradient(Objective(lambda: jnp.int32(0), terms), lambda out: out["inf"])
    out, state = split.terms(params, None, KEY, split.init())
    np.testing.assert_allclose(out["loss"], 30.0)  # generative's value: 1 + 4 + 9 + 16
    assert int(state) == 1
    g = jax.grad(lambda p: split.terms(p, None, KEY, 0)[0]["loss"].mean())(params)
    # d/dp of w p^2 is 2 w p: inference subtrees with w = 10, the others with w = 1.
    assert {k: float(v) for k, v in g.items()} == {"encoder": 20.0, "posterior": 40.0,
                                                   "decoder": 6.0, "prior": 8.0}


def test_settings_belong_to_their_families():
    cfg = make_config({"model": "miwae", "num_samples": 4, "iw_groups": 2})
    assert (cfg.iw_groups, cfg.num_samples, cfg.ciwae_beta) == (2, 4, 0.5)
    for bad, message in (({"iw_groups": 2}, "iw_groups configures --model miwae and piwae"),
                         ({"model": "ciwae", "iw_groups": 2}, "iw_groups configures"),
                         ({"model": "miwae", "ciwae_beta": 0.2}, "ciwae_beta configures"),
                         ({"model": "ciwae", "ciwae_beta": 1.5}, r"in \[0, 1\]"),
                         ({"model": "piwae", "beta": 2.0}, "importance-weighted bounds"),
                         ({"model": "ciwae", "alpha": 0.5}, "--ciwae-beta")):
        with pytest.raises(ConfigError, match=message):
            make_config(bad)
    assert make_config({"model": "ciwae", "posterior_scale": "logvar"}).model == "ciwae"


TINY = ["--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--eval-batch-size", "64",
        "--hidden", "16", "--latent-dim", "2", "--num-images", "8", "--quality-images", "64",
        "--data-placement", "host", "--no-dashboard", "--no-tensorboard"]


@pytest.mark.parametrize("model,flags", [
    ("miwae", ["--num-samples", "3", "--iw-groups", "2"]),
    ("piwae", ["--num-samples", "3", "--iw-groups", "2"]),
    ("ciwae", ["--num-samples", "4", "--ciwae-beta", "0.25"]),
])
def test_cli_trains_and_evaluates(model, flags, tmp_path, capsys):
    workdir = tmp_path / model
    code, out = run_cli(["train", *TINY, "--model", model, *flags, "--workdir", str(workdir)],
                        capsys)
    assert code == 0, out.err[-2000:]
    code, out = run_cli(["evaluate", "--workdir", str(workdir), "--iw-samples", "8",
                         "--num-test-images", "32", "--fid-images", "0"], capsys)
    assert code == 0, out.err[-2000:]
    report = json.loads(out.out.strip().splitlines()[-1])
    bound = {"miwae": "neg_miwae", "piwae": "neg_iwae", "ciwae": "neg_ciwae"}[model]
    assert report["model"] == model and np.isfinite(report[bound])
    np.testing.assert_allclose(report["neg_elbo"], report["recon"] + report["kl"], rtol=1e-5)
    assert report["nll_bound"] <= report["neg_elbo_subset"]
