"""RAE: the gradient penalty against jax.jacobian and finite differences, the loss's
weights, and a run whose evaluation reports no likelihood bound."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.app.modes.evaluate import evaluate_run
from jvae.distributions.posteriors import dirichlet_posterior, point_posterior
from jvae.model import decode_samples
from jvae.objectives import rae
from jvae.terms.regularized import decoder_jacobian_sq_norm, decoder_jacobian_sq_norm_estimate

from helpers import random_images, run_cli, tiny_vae


def _decoder_mean(vae, params):
    return lambda z: vae.likelihood.mean(vae.decode(params, z))


def test_gradient_penalty_is_the_decoders_jacobian_norm():
    vae = tiny_vae(point_posterior(), latent_shape=(3,))
    params = vae.init(jax.random.key(0), random_images(4))
    mean = _decoder_mean(vae, params)
    z = jax.random.normal(jax.random.key(1), (4, 3))
    got = np.asarray(jax.jit(lambda z: decoder_jacobian_sq_norm(mean, z, 1))(z))
    # Reference: each code's full Jacobian (8x8x1 outputs by 3 inputs), squared and summed.
    jac = jax.jit(jax.vmap(jax.jacobian(lambda zi: mean(zi[None])[0])))(z)
    assert jac.shape == (4, 8, 8, 1, 3)
    np.testing.assert_allclose(got, np.sum(np.square(jac), axis=(1, 2, 3, 4)), rtol=1e-5)
    # Central differences in float64 NumPy around the float32 decoder, per latent dimension.
    zz, eps = np.asarray(z, np.float64), 1e-3
    fd = np.zeros(4)
    for k in range(3):
        step = np.zeros(3)
        step[k] = eps
        hi = np.asarray(mean(jnp.asarray(zz + step, jnp.float32)), np.float64)
        lo = np.asarray(mean(jnp.asarray(zz - step, jnp.float32)), np.float64)
        fd += np.sum(((hi - lo) / (2 * eps)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got, fd, rtol=2e-3)
    # Sample axes in front of the batch and several columns per chunk give the same norms.
    def samples_mean(z):
        return vae.likelihood.mean(decode_samples(vae, params, z))

    both = np.asarray(decoder_jacobian_sq_norm(samples_mean, jnp.stack([z, 2 * z]), 1))
    np.testing.assert_allclose(both[0], got, rtol=1e-5)
    np.testing.assert_allclose(both[1], np.asarray(decoder_jacobian_sq_norm(mean, 2 * z, 1)),
                               rtol=1e-5)


def test_gradient_penalty_works_through_custom_gradients():
    """The audio and conv nets' im2col convolutions have custom VJPs (no forward mode)."""
    from jvae.layers.audio import conv1d
    kernel = jax.random.normal(jax.random.key(0), (3, 2, 4))

    def fn(z):  # codes (..., 6) -> (..., 3, 4) through a GEMM convolution
        return conv1d(jnp.tanh(z).reshape(-1, 3, 2), kernel).reshape(*z.shape[:-1], 3, 4)

    z = jax.random.normal(jax.random.key(1), (5, 6))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(fn, (z,), (z,))
    got = jax.jit(lambda z: decoder_jacobian_sq_norm(fn, z, 1))(z)
    jac = jax.vmap(jax.jacrev(lambda zi: fn(zi[None])[0]))(z)
    np.testing.assert_allclose(got, np.sum(np.square(jac), axis=(1, 2, 3)), rtol=1e-5)


def test_hutchinson_estimate_is_unbiased_with_the_rademacher_variance():
    vae = tiny_vae(point_posterior(), latent_shape=(3,))
    params = vae.init(jax.random.key(0), random_images(4))
    mean = _decoder_mean(vae, params)
    z = jax.random.normal(jax.random.key(1), (4, 3))
    exact = np.asarray(decoder_jacobian_sq_norm(mean, z, 1), np.float64)
    jac = np.asarray(jax.vmap(jax.jacobian(lambda zi: mean(zi[None])[0]))(z), np.float64)
    gram = np.einsum("bxyck,bxycl->bkl", jac, jac)
    # One Rademacher probe: Var ||J v||^2 = 2 sum_{k != l} (J^T J)_kl^2.
    var = 2 * (np.sum(gram ** 2, axis=(1, 2)) - np.sum(np.diagonal(gram, axis1=1, axis2=2) ** 2,
                                                       axis=1))
    probes = 4096
    est = np.asarray(jax.jit(lambda z, k: decoder_jacobian_sq_norm_estimate(
        mean, z, 1, k, probes))(z, jax.random.key(3)), np.float64)
    assert np.all(np.abs(est - exact) < 5 * np.sqrt(var / probes) + 1e-6)
    # The same probes one at a time: the spread of single-probe estimates is the formula's.
    singles = np.asarray(jax.jit(jax.vmap(lambda k: decoder_jacobian_sq_norm_estimate(
        mean, z, 1, k)))(jax.random.split(jax.random.key(4), 400)), np.float64)
    np.testing.assert_allclose(singles.var(axis=0), var, rtol=0.35)
    assert np.all(singles.std(axis=0) > 0)  # a random estimate, not the exact norm
    with pytest.raises(ValueError, match="probes"):
        decoder_jacobian_sq_norm_estimate(mean, z, 1, jax.random.key(0), 0)


@pytest.mark.parametrize("regularizer", ["l2", "gp"])
def test_rae_loss_is_recon_plus_code_norm_plus_decoder_regularizer(regularizer):
    vae = tiny_vae(point_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    objective = rae(vae, beta=0.7, lam=0.01, regularizer=regularizer, gp_probes=0, alpha=1.0)
    out, _ = jax.jit(objective.terms)(params, {"image": x}, jax.random.key(2), ())
    code = np.asarray(vae.encode(params, x)["loc"], np.float64)
    np.testing.assert_allclose(out["latent_norm"], 0.5 * np.sum(code ** 2, axis=1), rtol=1e-5)
    if regularizer == "l2":  # the decoder's kernels, not its biases
        want = sum(float(np.sum(np.asarray(w, np.float64) ** 2))
                   for w in jax.tree.leaves(params["decoder"]) if np.ndim(w) >= 2)
        np.testing.assert_allclose(out["decoder_reg"], np.full(8, want), rtol=1e-5)
    else:
        want = decoder_jacobian_sq_norm(_decoder_mean(vae, params), jnp.asarray(code, jnp.float32),
                                        1)
        np.testing.assert_allclose(out["decoder_reg"], want, rtol=1e-5)
    np.testing.assert_allclose(out["loss"], out["recon"] + 0.7 * out["latent_norm"]
                               + 0.01 * out["decoder_reg"], rtol=1e-5)
    # The penalty trains: its gradient reaches the decoder (second order through the jvps).
    grads = jax.jit(jax.grad(lambda p: jnp.mean(objective.terms(p, {"image": x},
                                                                jax.random.key(2), ())[0]["loss"])))(
        params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    if regularizer == "gp":  # the default: one probe, a key-dependent estimate of the same norm
        estimated = rae(vae, beta=0.7, lam=0.01, regularizer="gp", alpha=1.0)
        draws = np.asarray(jax.jit(jax.vmap(lambda k: estimated.terms(
            params, {"image": x}, k, ())[0]["decoder_reg"]))(jax.random.split(jax.random.key(5),
                                                                            64)))
        assert np.all(draws.std(axis=0) > 0)
        np.testing.assert_allclose(draws.mean(axis=0), out["decoder_reg"], rtol=0.5)


def test_rae_refuses_a_posterior_distribution(capsys):
    with pytest.raises(ValueError, match="point posterior"):
        rae(tiny_vae(dirichlet_posterior(), latent_shape=(3,)))
    with pytest.raises(ConfigError, match="deterministic code"):
        make_config({"model": "rae", "flow_layers": 2})
    code, out = run_cli(["train", "--model", "rae", "--rae-regularizer", "l1"], capsys)
    assert code == 2 and "rae_regularizer" in out.err


def test_an_rae_run_evaluates_without_a_likelihood_bound(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, out = run_cli(["train", "--dataset", "digits", "--model", "rae", "--rae-regularizer",
                         "gp", "--epochs", "1", "--batch-size", "64", "--eval-batch-size", "128",
                         "--hidden", "16", "--latent-dim", "2", "--num-images", "4",
                         "--quality-images", "0", "--data-placement", "host",
                         "--workdir", str(workdir)], capsys)
    assert code == 0, out.err[-2000:]
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["neg_elbo"] is None and row["decoder_reg"] > 0 and row["latent_norm"] > 0
    report = evaluate_run(workdir, iw_samples=2, fid_images=0)
    assert "nll_bound" not in report and "neg_elbo" not in report
    assert math.isfinite(report["recon"]) and math.isfinite(report["decoder_reg"])
