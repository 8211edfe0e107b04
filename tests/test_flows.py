"""Flow posteriors: change of variables and the Monte Carlo KL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.distributions.flows import flow_posterior
from jvae.distributions.posteriors import normal_posterior, sample_and_log_prob
from jvae.inference import make_reconstructor, make_sampler
from jvae.objectives import elbo

from helpers import random_images, tiny_vae


def _random_flow(coupling, latent=2, context=3, seed=0):
    flow = flow_posterior(num_layers=3, coupling=coupling, hidden=(16,), num_bins=4,
                          spline_range=3.0, context_dim=context)
    shared = jax.jit(flow.init_shared, static_argnums=1)(jax.random.key(seed), (latent,))
    # The output layers start at zero (identity flow); perturb them so the
    # test checks a genuinely non-linear map.
    rng = np.random.default_rng(seed)
    shared = jax.tree.map(lambda a: a + 0.2 * rng.standard_normal(a.shape, np.float32), shared)
    raw = {"loc": jnp.array([[0.3, -0.2], [0.0, 0.5]])[:, :latent],
           "scale": jnp.array([[0.2, -0.4], [0.1, 0.3]])[:, :latent],
           "context": jax.random.normal(jax.random.key(seed + 2), (2, context))}
    return flow, {**flow.constrain(raw), "shared": shared}


@pytest.mark.parametrize("coupling", ["spline", "affine"])
def test_flow_log_density_is_a_correct_change_of_variables(coupling):
    flow, params = _random_flow(coupling)
    key = jax.random.key(3)
    base = normal_posterior()
    one = {k: (v if k == "shared" else v[:1]) for k, v in params.items()}  # example 0

    def f(point):  # example 0's flow at one point
        return flow.mean({**one, "loc": point[None]})[0]

    @jax.jit
    def check(p):
        z, log_q = sample_and_log_prob(flow, key, p, 5)
        z0 = base.sample(key, p, 5)
        expected = base.log_prob(p, z0)[:, 0] - jnp.linalg.slogdet(
            jax.vmap(jax.jacfwd(f))(z0[:, 0]))[1]
        return z, log_q, flow.log_prob(p, z), jax.vmap(f)(z0[:, 0]), expected
    z, log_q, log_q_inverse, pushed, expected = check(params)
    # log q from inverting the flow equals log q from pushing samples forward...
    np.testing.assert_allclose(log_q_inverse, log_q, rtol=1e-4, atol=1e-4)
    # ...and both equal log N(z0) - log|det df/dz0| with the Jacobian from autodiff.
    np.testing.assert_allclose(pushed, z[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_q[:, 0], expected, rtol=1e-4, atol=1e-4)

    # The density integrates to the probability: over a box, the integral of
    # exp(log q) equals the share of q's samples that land in it.
    lo, hi, n = -6.0, 6.0, 481
    grid = jnp.linspace(lo, hi, n)
    zz = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)

    @jax.jit
    def mass(p):
        density = jnp.exp(flow.log_prob(p, jnp.broadcast_to(zz, (zz.shape[0], 2, 2))))
        samples = flow.sample(jax.random.key(9), p, 200_000)
        inside = jnp.all((samples > lo) & (samples < hi), axis=-1).mean(0)
        return density.sum(0) * (grid[1] - grid[0]) ** 2, inside
    integral, inside = mass(params)
    assert np.all(inside > 0.7)  # the box holds most of the mass
    np.testing.assert_allclose(integral, inside, atol=5e-3)


def test_flow_kl_is_the_monte_carlo_estimate():
    flow = flow_posterior(num_layers=2, hidden=(8,), context_dim=2)
    vae = tiny_vae(flow)
    x = random_images(4)
    params = jax.jit(vae.init)(jax.random.key(0), x)
    with pytest.raises(ValueError, match="no closed-form KL"):
        flow.kl(vae.encode(params, x))
    out, _ = jax.jit(elbo(vae, num_samples=3).terms)(params, {"image": x}, jax.random.key(1), ())
    post = jax.jit(vae.encode)(params, x)
    z, log_q = jax.jit(lambda p: sample_and_log_prob(flow, jax.random.key(1), p, 3))(post)
    mc = (log_q - flow.prior_log_prob(z, (4,))).mean(0)
    np.testing.assert_allclose(out["kl"], mc, rtol=1e-5)
    # At initialization the flow is the identity: log q equals the base Normal's.
    np.testing.assert_allclose(log_q, normal_posterior().log_prob(post, z), rtol=1e-5)
    # Prior samples and reconstructions go through the flow's shared parameters.
    samples = make_sampler(vae, 6)(params, jax.random.key(1))
    recon = make_reconstructor(vae)(params, x)
    assert samples.shape == (6, 8, 8, 1) and recon.shape == x.shape
    assert np.all(np.isfinite(samples)) and np.all(np.isfinite(recon))
