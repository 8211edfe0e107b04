"""The Bernoulli likelihood: values against float64, derivatives against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from jvae.distributions.likelihoods import bernoulli

LOGITS = np.array([-60.0, -17.0, -3.0, -0.25, 0.0, 1e-4, 2.5, 16.0, 80.0], np.float32)


def _reference(logits, x):
    """``x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))`` in float64."""
    z = np.asarray(logits, np.float64)
    log_sig = -np.logaddexp(0.0, -z)
    return x * log_sig + (1.0 - x) * (log_sig - z)


def test_values_match_the_float64_cross_entropy_for_binary_and_grey_data():
    lik = bernoulli()
    for x in (np.ones_like(LOGITS), np.zeros_like(LOGITS), np.full_like(LOGITS, 0.3)):
        got = np.asarray(lik.log_prob_elements({"logits": LOGITS[None]}, x[None]))[0]
        # x l - softplus(l) cancels for large |l|: float32 keeps it to an ulp of l.
        tol = np.spacing(np.maximum(1.0, np.abs(LOGITS)))
        assert np.all(np.abs(got - _reference(LOGITS, x)) <= tol)


def test_derivatives_are_the_closed_forms_and_match_finite_differences():
    lik = bernoulli()
    x = np.array([1, 0, 1, 0, 1, 0, 0.3, 1, 0.7], np.float32)

    def f(logits, data):
        return lik.log_prob({"logits": logits[None]}, data[None])[0]

    g_logits, g_x = jax.grad(f, argnums=(0, 1))(jnp.asarray(LOGITS), jnp.asarray(x))
    sig = 1.0 / (1.0 + np.exp(-LOGITS.astype(np.float64)))
    # x - sigmoid(l) holds to an ulp of 1 (it is a difference of numbers near 1).
    ulp = np.spacing(np.float32(1))
    np.testing.assert_allclose(g_logits, x - sig, rtol=1e-6, atol=ulp)
    np.testing.assert_allclose(g_x, LOGITS)  # d/dx (x l - softplus(l)) = l
    # Central differences in float64 of the reference, per logit.
    h, l64 = 1e-4, LOGITS.astype(np.float64)
    fd = (_reference(l64 + h, x) - _reference(l64 - h, x)) / (2 * h)
    np.testing.assert_allclose(g_logits, fd, rtol=1e-5, atol=ulp)
    # The second derivative, -sigmoid (1 - sigmoid).
    hess = jax.vmap(jax.grad(jax.grad(lambda z, v: f(z[None], v[None]))))(
        jnp.asarray(LOGITS), jnp.asarray(x))
    np.testing.assert_allclose(hess, -sig * (1 - sig), rtol=1e-5, atol=ulp)


def test_importance_samples_broadcast_against_one_batch():
    lik = bernoulli()
    kl, kx = jax.random.split(jax.random.key(0))
    logits = 4.0 * jax.random.normal(kl, (3, 5, 2, 2, 1))  # 3 samples of a batch of 5
    x = (jax.random.uniform(kx, (5, 2, 2, 1)) < 0.5).astype(jnp.float32)
    got = lik.log_prob({"logits": logits}, x)
    assert got.shape == (3, 5)
    for i in range(3):  # each sample scored against the one batch
        want = _reference(np.asarray(logits[i]), np.asarray(x)).reshape(5, -1).sum(-1)
        np.testing.assert_allclose(got[i], want, rtol=1e-5)
