"""Posterior families: analytic KLs against Monte Carlo, reparameterized gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.distributions.posteriors import dirichlet_posterior, normal_posterior

N_MC = 50_000


def _mc_kl(post, params, latent_shape, key):
    z = post.sample(key, params, N_MC)
    log_ratio = post.log_prob(params, z) - post.prior_log_prob(z, latent_shape)
    return log_ratio.mean(0), log_ratio.std(0) / np.sqrt(N_MC)


def test_normal_kl_matches_monte_carlo():
    post = normal_posterior()
    key = jax.random.key(0)
    params = post.constrain({"loc": jnp.array([[0.0, 1.5, -2.0], [0.3, -0.7, 0.1]]),
                             "scale": jnp.array([[0.0, -1.0, 1.0], [2.0, -2.0, 0.5]])})
    kl = post.kl(params)
    mc, se = _mc_kl(post, params, (3,), key)
    np.testing.assert_array_less(np.abs(kl - mc), 5 * se + 1e-3)
    # Closed form by hand: sum 0.5 (mu^2 + s^2 - 1) - log s.
    mu, s = params["loc"], params["scale"]
    np.testing.assert_allclose(kl, jnp.sum(0.5 * (mu**2 + s**2 - 1) - jnp.log(s), -1), rtol=1e-5)


def test_dirichlet_kl_matches_monte_carlo():
    post = dirichlet_posterior(prior_concentration=0.98)
    params = post.constrain({"concentration": jnp.array([[0.5, 1.0, 2.0, 4.0],
                                                         [3.0, -1.0, 0.2, 1.5]])})
    kl = post.kl(params)
    mc, se = _mc_kl(post, params, (4,), jax.random.key(1))
    assert np.all(kl > 0)
    np.testing.assert_array_less(np.abs(kl - mc), 5 * se + 1e-3)


def test_dirichlet_kl_is_zero_at_the_prior():
    post = dirichlet_posterior(prior_concentration=0.98)
    raw = jnp.full((1, 5), float(np.log(np.expm1(0.98 - 1e-3))))  # softplus^-1
    np.testing.assert_allclose(post.kl(post.constrain({"concentration": raw})), 0.0, atol=1e-4)


def test_dirichlet_sample_gradient_matches_analytic():
    """d/d alpha of E[z_0] and E[z_0^2] through reparameterized samples.

    E[z_0] = a_0 / A and E[z_0^2] = a_0 (a_0 + 1) / (A (A + 1)) with A = sum a.
    """
    post = dirichlet_posterior()
    alpha = jnp.array([1.5, 0.7, 3.0])
    key = jax.random.key(2)

    def mc(a):  # both moments from one set of draws, sampled once
        z0 = post.sample(key, {"concentration": a[None]}, N_MC)[:, 0, 0]
        return jnp.stack([jnp.mean(z0), jnp.mean(z0**2)])

    def exact(a):
        s = a.sum()
        return jnp.stack([a[0] / s, a[0] * (a[0] + 1) / (s * (s + 1))])

    for g_mc, g_exact in zip(jax.jacrev(mc)(alpha), jax.jacrev(exact)(alpha)):
        np.testing.assert_allclose(g_mc, g_exact, atol=0.05 * np.abs(g_exact).max())


def test_normal_reparameterized_gradient_matches_finite_differences():
    post = normal_posterior()
    key = jax.random.key(3)

    def f(loc_scale):
        params = {"loc": loc_scale[:1][None], "scale": loc_scale[1:][None]}
        return jnp.mean(jnp.sin(post.sample(key, params, 1000)))

    x = jnp.array([0.3, 0.8])
    g = jax.grad(f)(x)
    eps = 1e-3
    fd = [(f(x.at[i].add(eps)) - f(x.at[i].add(-eps))) / (2 * eps) for i in range(2)]
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("post,latent_shape", [(normal_posterior(), (4, 4, 2)),
                                               (dirichlet_posterior(), (3, 5))])
def test_shapes_sum_over_latent_dims(post, latent_shape):
    raw = {k: jnp.zeros((2, *s)) for k, s in post.param_shapes(latent_shape).items()}
    params = post.constrain(raw)
    z = post.sample(jax.random.key(0), params, 7)
    assert z.shape == (7, 2, *latent_shape)
    assert post.log_prob(params, z).shape == (7, 2)
    assert post.kl(params).shape == (2,)
    assert post.prior_sample(jax.random.key(1), latent_shape, 5).shape == (5, *latent_shape)
    assert post.prior_log_prob(z, latent_shape).shape == (7, 2)


def test_dirichlet_rejects_bad_settings():
    with pytest.raises(ValueError, match="positive"):
        dirichlet_posterior(prior_concentration=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        dirichlet_posterior().param_shapes((1,))
