"""The DirVAE approximate reparameterization beside the exact Dirichlet sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.distributions.posteriors import dirichlet_posterior
from jvae.training.experiment import DataSpec, build

APPROX, EXACT = dirichlet_posterior(reparam="approx"), dirichlet_posterior()


def test_samples_lie_on_the_simplex():
    alpha = jnp.array([[1e-3, 0.05, 0.5, 3.0], [40.0, 200.0, 1.0, 1e-2]])
    z = APPROX.sample(jax.random.key(0), {"concentration": alpha}, 500)
    assert z.shape == (500, 2, 4)
    assert bool(jnp.all(z > 0)) and bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)
    # Spatial latents: independent simplices on the last axis.
    z = APPROX.sample(jax.random.key(1), {"concentration": jnp.full((3, 2, 5), 0.7)}, 2)
    assert z.shape == (2, 3, 2, 5)
    np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)


def _mean_error(scale):
    alpha = scale * jnp.array([[1.0, 2.0, 3.0]])
    z = APPROX.sample(jax.random.key(2), {"concentration": alpha}, 20_000)
    return float(jnp.abs(z.mean((0, 1)) - alpha[0] / alpha.sum()).max())


def test_mean_approaches_the_dirichlet_mean_for_large_concentrations():
    # The inverse-CDF approximation is biased at moderate alpha; the bias vanishes
    # as alpha grows (x ~ Gamma(a+1)^(1/a) u^(1/a) -> a/e, proportional to a).
    small, large = _mean_error(3.0), _mean_error(1000.0)
    assert large < 0.003
    assert large < small / 3


def test_sparse_regime_matches_exact_sampler_moments():
    alpha = {"concentration": jnp.array([[0.1, 0.3, 0.5, 0.9]])}
    za = APPROX.sample(jax.random.key(3), alpha, 40_000)
    ze = EXACT.sample(jax.random.key(4), alpha, 40_000)
    np.testing.assert_allclose(za.mean((0, 1)), ze.mean((0, 1)), atol=0.01)


def test_gradients_are_finite_down_to_the_concentration_floor():
    def f(alpha):
        z = APPROX.sample(jax.random.key(5), {"concentration": alpha}, 8)
        return jnp.sum(z * jnp.arange(alpha.shape[-1])) + APPROX.kl({"concentration": alpha}).sum()
    for value in (1e-3, 0.1, 1.0, 30.0):
        g = jax.grad(f)(jnp.full((4, 5), value).at[:, 0].mul(2.0))
        assert bool(jnp.all(jnp.isfinite(g))), value
        assert float(jnp.abs(g).max()) > 0


def test_gamma_kl_bounds_the_dirichlet_kl_and_vanishes_at_the_prior():
    alpha = jax.random.uniform(jax.random.key(6), (64, 6), minval=0.05, maxval=20.0)
    kl_gamma = APPROX.kl({"concentration": alpha})
    kl_dir = EXACT.kl({"concentration": alpha})
    # Normalizing both Gamma vectors maps them to the two Dirichlets, and a map
    # cannot increase a KL: the Gamma KL is an upper bound.
    assert bool(jnp.all(kl_gamma >= kl_dir - 1e-4))
    assert float(jnp.max(kl_gamma - kl_dir)) > 1.0
    prior = {"concentration": jnp.full((2, 6), 0.98)}
    np.testing.assert_allclose(APPROX.kl(prior), 0.0, atol=1e-5)


def test_config_selects_the_reparameterization():
    cfg = make_config({"posterior": "dirichlet", "dirichlet_reparam": "approx", "latent_dim": 3})
    vae = build(cfg, DataSpec((4, 4, 1))).vae
    alpha = {"concentration": jnp.array([[0.5, 0.5, 0.5]])}
    z = vae.posterior.sample(jax.random.key(0), alpha, 3)
    np.testing.assert_allclose(z, APPROX.sample(jax.random.key(0), alpha, 3))
    with pytest.raises(ConfigError, match="dirichlet only"):
        make_config({"dirichlet_reparam": "approx"})
    with pytest.raises(ConfigError, match="dirichlet_reparam"):
        make_config({"posterior": "dirichlet", "dirichlet_reparam": "fast"})
    with pytest.raises(ValueError, match="reparam"):
        dirichlet_posterior(reparam="fast")
