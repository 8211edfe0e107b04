"""The von Mises-Fisher posterior (S-VAE): Bessel ratios and KL against SciPy, the density,
Wood's sampler against the exact law of w, gradients, and the svae family from the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
from scipy import integrate, stats

from jvae.app.config import ConfigError, make_config
from jvae.distributions.bessel import log_bessel_ive_and_ratio
from jvae.distributions.vmf import (
    log_sphere_area,
    mean_resultant_length,
    vmf_kl_uniform,
    vmf_posterior,
    vmf_sample,
)
from jvae.inference import scales_prior
from jvae.training.experiment import DataSpec, build, example_batch

from helpers import run_cli

KAPPAS = np.array([0.01, 0.5, 1.0, 10.0, 1e3, 1e5])


def _ratio(d, kappa):
    return sp.ive(d / 2, kappa) / sp.ive(d / 2 - 1, kappa)


def _kl_reference(d, kappa):
    """Davidson et al.'s closed form in float64 from scipy.special.ive."""
    v = d / 2 - 1
    log_c = v * np.log(kappa) - d / 2 * np.log(2 * np.pi) - (np.log(sp.ive(v, kappa)) + kappa)
    log_area = np.log(2) + d / 2 * np.log(np.pi) - sp.gammaln(d / 2)
    return kappa * _ratio(d, kappa) + log_c + log_area


@pytest.mark.parametrize("d", [2, 3, 10, 64])
def test_bessel_ratio_and_kl_match_scipy(d):
    kappa = jnp.asarray(KAPPAS, jnp.float32)
    ratio, kl = jax.jit(lambda k: (mean_resultant_length(k, d), vmf_kl_uniform(k, d)))(kappa)
    np.testing.assert_allclose(ratio, _ratio(d, KAPPAS), rtol=2e-6)
    kl = np.asarray(kl)
    np.testing.assert_allclose(kl, _kl_reference(d, KAPPAS), rtol=5e-4, atol=3e-4)
    assert np.all(np.diff(kl) > 0) and kl[0] < 1e-3  # grows from 0 (the uniform) with kappa
    if d == 3:  # and equals log-area minus SciPy's vMF entropy
        h = [stats.vonmises_fisher([0, 0, 1.0], k).entropy() for k in KAPPAS[1:4]]
        np.testing.assert_allclose(kl[1:4], np.log(4 * np.pi) - np.array(h), rtol=1e-5)
    # dKL/dkappa = kappa A'(kappa), A' = 1 - A^2 - (d - 1) A / kappa, from 1e-3 to 1e5: the
    # closed form where it is exact in float32, Hankel's series where its terms cancel.
    kappas = np.geomspace(1e-3, 1e5, 200)
    a = _ratio(d, kappas)
    want = kappas * (1 - a ** 2) - (d - 1) * a
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(lambda c: vmf_kl_uniform(c, d))))(
        jnp.asarray(kappas, jnp.float32)))
    np.testing.assert_allclose(grad, want, rtol=1e-3)


@pytest.mark.parametrize("d", [2, 3, 10, 64, 256])
def test_loop_free_bessel_functions_match_scipy(d):
    v = d / 2 - 1
    x = np.geomspace(1e-3, 1e5, 300)
    fn = jax.jit(lambda x: log_bessel_ive_and_ratio(v, x))
    # The point of the module: nothing in the compiled program loops.
    assert "while" not in fn.lower(jnp.asarray(x, jnp.float32)).compile().as_text()
    log_ive, ratio = (np.asarray(a, np.float64) for a in fn(jnp.asarray(x, jnp.float32)))
    with np.errstate(divide="ignore", invalid="ignore"):  # SciPy underflows at high order
        want_log, want_ratio = np.log(sp.ive(v, x)), sp.ive(v + 1, x) / sp.ive(v, x)
    ok = np.isfinite(want_log) & np.isfinite(want_ratio) & (want_ratio > 0)
    assert ok.sum() > 200
    np.testing.assert_allclose(ratio[ok], want_ratio[ok], rtol=2e-6)
    assert np.all(np.abs(log_ive - want_log)[ok] <= 1e-5 * np.maximum(1.0, np.abs(want_log[ok])))


def test_log_prob_is_the_vmf_density():
    post = vmf_posterior()
    log_prob, kl_fn = jax.jit(post.log_prob), jax.jit(post.kl)
    rng = np.random.default_rng(0)
    for shape in ((3,), (2, 5)):  # one sphere, and two independent ones per example
        mu = rng.normal(size=(4, *shape))
        mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
        kappa = rng.uniform(0.5, 30.0, size=(4, *shape[:-1], 1))
        z = rng.normal(size=(6, 4, *shape))
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        params = {"loc": jnp.asarray(mu, jnp.float32), "concentration": jnp.asarray(kappa,
                                                                                   jnp.float32)}
        got = np.asarray(log_prob(params, jnp.asarray(z, jnp.float32)))
        want = np.zeros((6, 4))
        for idx in np.ndindex(*shape[:-1]):
            for b in range(4):
                ref = stats.vonmises_fisher(mu[(b, *idx)], kappa[(b, *idx, 0)])
                want[:, b] += ref.logpdf(z[(slice(None), b, *idx)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        kl = np.asarray(kl_fn(params))
        np.testing.assert_allclose(kl, _kl_reference(shape[-1], kappa[..., 0]).reshape(4, -1)
                                   .sum(-1), rtol=1e-4)
    # On S^2 the density is kappa e^{kappa mu.z} / (4 pi sinh kappa); it integrates to 1.
    mu, kappa = jnp.array([[0.0, 0.6, 0.8]]), jnp.array([[4.0]])
    z = post.prior_sample(jax.random.key(1), (3,), 200_000)[:, None]
    q = np.exp(np.asarray(log_prob({"loc": mu, "concentration": kappa}, z), np.float64))[:, 0]
    np.testing.assert_allclose(q, 4.0 / (4 * np.pi * np.sinh(4.0)) * np.exp(
        4.0 * np.asarray(z[..., 0, :] @ mu[0], np.float64)), rtol=2e-5)
    assert abs(q.mean() * 4 * np.pi - 1.0) < 0.015  # E_uniform[q] * area, 4 standard errors


def test_prior_is_uniform_on_the_sphere():
    post = vmf_posterior()
    z = np.asarray(post.prior_sample(jax.random.key(0), (4, 3), 5000))
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-6)
    assert np.abs(z.mean(0)).max() < 4 / np.sqrt(3 * 5000)  # E[z] = 0, Var(z_i) = 1/3
    np.testing.assert_allclose(post.prior_log_prob(jnp.asarray(z), (4, 3)),
                               -4 * np.log(4 * np.pi), rtol=1e-6)
    assert log_sphere_area(2) == pytest.approx(np.log(2 * np.pi))
    with pytest.raises(ValueError, match="d >= 2"):
        post.param_shapes((1,))


def _w_cdf(d, kappa):
    """The exact CDF of w = mu.z under vMF on S^{d-1}, whose angle theta = arccos w has density
    ~ e^{kappa cos theta} sin^{d-2} theta on [0, pi]: tabulated by Simpson's rule, interpolated."""
    theta = np.linspace(0.0, np.pi, 20001)
    density = np.exp(kappa * (np.cos(theta) - 1)) * np.sin(theta) ** (d - 2)
    tail = integrate.cumulative_simpson(density[::-1], x=theta, initial=0.0)  # from theta = pi
    cdf_w = (tail / tail[-1])[::-1]  # P(w <= cos theta) = P(Theta >= theta)
    return lambda w: np.interp(np.arccos(np.clip(w, -1, 1)), theta, cdf_w)


@pytest.mark.parametrize("d", [2, 3, 5, 20])
def test_samples_follow_the_vmf(d):
    """E[mu.z] = A_d(kappa), E[z] = A_d(kappa) mu, unit norm, and w's whole law (KS test),
    for mu on either side of e_1 (the two branches of the reflection)."""
    kappa = np.array([0.5, 5.0, 50.0, 5.0])
    rng = np.random.default_rng(d)
    mu = rng.normal(size=(4, d))
    mu[:, 0] = np.abs(mu[:, 0]) * np.array([1, -1, 1, 0])  # mu_1 > 0, < 0, > 0, = 0
    mu[2] = np.eye(d)[0] * -1.0  # exactly -e_1
    mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
    n = 4000
    z = np.asarray(jax.jit(vmf_sample, static_argnums=3)(
        jax.random.key(d), jnp.asarray(mu, jnp.float32),
        jnp.asarray(kappa[:, None], jnp.float32), n), np.float64)
    assert z.shape == (n, 4, d)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    w = np.einsum("nbd,bd->nb", z, mu)
    a = _ratio(d, kappa)
    se = w.std(0) / np.sqrt(n)
    assert np.all(np.abs(w.mean(0) - a) < 4 * se + 1e-6), (w.mean(0), a)
    resultant = z.mean(0) - a[:, None] * mu  # the component off mu averages out
    assert np.all(np.linalg.norm(resultant, axis=-1) < 5 * np.sqrt(1.0 / n)), resultant
    for b in (0, 1):
        assert stats.kstest(w[:, b], _w_cdf(d, kappa[b])).pvalue > 1e-3


def test_reparameterized_gradients():
    def mean_w_grads(kappas, d, n=10000):
        """dE[mu.z]/dkappa for each of ``kappas``, from one batch of reparameterized draws."""
        mu = jnp.zeros((len(kappas), d)).at[:, 0].set(1.0)

        def total(k):  # each distribution's mean depends on its own kappa only
            return vmf_sample(jax.random.key(4), mu, k[:, None], n)[..., 0].mean(0).sum()
        return np.asarray(jax.jit(jax.grad(total))(jnp.asarray(kappas, jnp.float32)))

    def a_prime(d, k):
        a = _ratio(d, k)
        return 1 - a ** 2 - (d - 1) * a / k

    # S^2: the inverse-CDF draw is an exact reparameterization.
    kappas = np.array([0.5, 3.0])
    np.testing.assert_allclose(mean_w_grads(kappas, 3), a_prime(3, kappas), rtol=0.05)
    # Wood's sampler with the rejection's correction term left out: within the documented bias.
    kappas = np.array([1.0, 10.0])
    np.testing.assert_allclose(mean_w_grads(kappas, 10), a_prime(10, kappas), rtol=0.1)
    # Finite everywhere: tiny and huge kappa, mu at +-e_1 and between.
    kappa = jnp.repeat(jnp.array([1e-3, 1.0, 1e5]), 3)[:, None]
    for d in (2, 5):
        mu = jnp.tile(jnp.stack([jnp.eye(d)[0], -jnp.eye(d)[0], jnp.ones(d) / np.sqrt(d)]),
                      (3, 1))
        g = jax.jit(jax.grad(lambda m, c: jnp.sum(jnp.sin(3 * vmf_sample(
            jax.random.key(0), m, c, 8))), argnums=(0, 1)))(mu, kappa)
        assert all(np.all(np.isfinite(x)) for x in g), d
    # The posterior's own head: a raw direction of exactly 0 stays finite too (mu = e_1).
    post = vmf_posterior()
    raw = {"loc": jnp.zeros((2, 4)).at[1].set(1.0), "concentration": jnp.zeros((2, 4))}
    np.testing.assert_array_equal(post.constrain(raw)["loc"][0], [1, 0, 0, 0])
    g = jax.jit(jax.grad(lambda r: post.kl(post.constrain(r)).sum() + post.sample(
        jax.random.key(0), post.constrain(r), 2).sum()))(raw)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))


def test_kl_is_the_monte_carlo_kl():
    post = vmf_posterior()
    params = post.constrain({"loc": jnp.array([[0.3, -1.0, 0.2, 0.5, 0.1]]),
                             "concentration": jnp.full((1, 5), 2.0)})

    @jax.jit
    def log_ratio(params):
        z = post.sample(jax.random.key(2), params, 20000)
        return post.log_prob(params, z) - post.prior_log_prob(z, (5,))
    mc = np.asarray(log_ratio(params))
    assert abs(mc.mean() - float(post.kl(params)[0])) < 4 * mc.std() / np.sqrt(len(mc))
    np.testing.assert_allclose(np.linalg.norm(post.mean(params), axis=-1), 1.0, rtol=1e-6)
    assert float(params["concentration"][0, 0]) > 1.0  # the floor of kappa


@pytest.mark.parametrize("net,shape,flags", [
    ("spec", (28, 28, 1), {"encoder_spec": "sd_vae_mnist"}),  # a spatial 7x7x4 latent
    ("audio", (1024, 1), {}),  # a per-frame latent
])
def test_svae_builds_with_nets_of_any_latent_layout(net, shape, flags):
    experiment = build(make_config({"model": "svae", "net": net, "latent_dim": 4, **flags}),
                       DataSpec(shape))
    assert experiment.vae.posterior.name == "vmf" and experiment.vae.latent_shape[-1] == 4
    batch = example_batch(experiment, 2)
    params = jax.eval_shape(experiment.vae.init, jax.random.key(0), batch["image"])
    out, _ = jax.eval_shape(experiment.objective.terms, params, batch, jax.random.key(1),
                            experiment.objective.init())
    assert out["kl"].shape == out["neg_elbo"].shape == (2,)


def test_svae_settings():
    for bad, message in (({"model": "svae", "posterior": "dirichlet"}, "own von Mises-Fisher"),
                         ({"model": "svae", "flow_layers": 2}, "flow acts on R"),
                         ({"model": "svae", "latent_dim": 1}, "latent_dim >= 2"),
                         ({"model": "svae", "posterior_scale": "logvar"}, "posterior_scale")):
        with pytest.raises(ConfigError, match=message):
            make_config(bad)
    cfg = make_config({"model": "svae", "beta": 2.0, "kl_warmup_steps": 10})
    # No temperature for a uniform prior on the sphere: its codes have unit norm.
    assert not scales_prior(build(cfg, DataSpec((8, 8, 1))).vae)


def test_svae_trains_evaluates_and_samples(tmp_path, capsys):
    workdir = tmp_path / "svae"
    code, out = run_cli(["train", "--dataset", "digits", "--model", "svae", "--latent-dim", "3",
                         "--epochs", "1", "--batch-size", "64", "--eval-batch-size", "64",
                         "--hidden", "16", "--num-images", "8", "--quality-images", "64",
                         "--data-placement", "host", "--no-dashboard", "--no-tensorboard",
                         "--workdir", str(workdir)], capsys)
    assert code == 0, out.err[-2000:]
    code, out = run_cli(["evaluate", "--workdir", str(workdir), "--iw-samples", "16",
                         "--num-test-images", "32", "--fid-images", "0"], capsys)
    assert code == 0, out.err[-2000:]
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["posterior"] == "vmf" and report["model"] == "svae"
    assert 0 < report["kl"] and np.isfinite(report["nll_bound"])
    assert report["nll_bound"] <= report["neg_elbo_subset"]
    code, out = run_cli(["sample", "--workdir", str(workdir), "--num", "8", "--npy",
                         "--output", str(tmp_path / "s.png")], capsys)
    assert code == 0, out.err[-2000:]
    z = np.load(tmp_path / "s_z.npy")
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)  # prior draws
