"""Differentiable SSIM."""

import jax
import jax.numpy as jnp
import numpy as np

from jvae.terms.similarity import ssim

from helpers import random_images


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    x = random_images(3, (28, 28, 3))
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-5)
    noisy = jnp.clip(x + 0.2 * jax.random.normal(jax.random.key(1), x.shape), 0, 1)
    s = ssim(x, noisy)
    assert s.shape == (3,) and np.all(s < 0.9)
    np.testing.assert_allclose(s, ssim(noisy, x), rtol=1e-5)
    more = jnp.clip(x + 0.5 * jax.random.normal(jax.random.key(1), x.shape), 0, 1)
    assert np.all(ssim(x, more) < s)
