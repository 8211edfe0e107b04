"""The discretized logistic mixture likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.distributions.likelihoods import discretized_logistic_mixture


@pytest.mark.parametrize("components", [1, 4])
def test_discretized_logistic_probabilities_over_256_bins_sum_to_one(components):
    lik = discretized_logistic_mixture(num_components=components)
    shapes = lik.param_shapes((1,))  # one sub-pixel per example
    keys = jax.random.split(jax.random.key(components), 3)
    # Six parameter sets: ordinary, very sharp and very wide components,
    # centred inside, on and beyond the edges of [-1, 1].
    raw = {name: 3.0 * jax.random.normal(k, (6, *shapes[name])) for k, name in zip(keys, shapes)}
    raw["log_scale"] = raw["log_scale"].at[1].set(-9.0).at[2].set(4.0).at[5].set(-9.0)
    raw["loc"] = raw["loc"].at[3].set(-1.0).at[4].set(1.3).at[5].set(0.5 / 255)
    params = lik.constrain(raw)
    levels = jnp.arange(256, dtype=jnp.float32) / 255.0
    logp = jax.vmap(lambda v: lik.log_prob(params, jnp.full((6, 1), v)))(levels)  # (256, 6)
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(jnp.exp(logp).sum(0), 1.0, rtol=1e-5)
    mean = lik.mean(params)
    assert mean.shape == (6, 1) and np.all((mean >= 0) & (mean <= 1))
    # Log-probabilities of images sum over their dimensions.
    img_lik = lik.param_shapes((2, 2, 3))
    assert img_lik["loc"] == (2, 2, 3 * components)
