"""Vector quantization: straight-through gradients and the codebook update."""

import jax
import jax.numpy as jnp
import numpy as np

from jvae.devices.parallel import data_mesh
from jvae.distributions.posteriors import sample_prior
from jvae.distributions.vq import quantize, vq_posterior
from jvae.inference import make_sampler
from jvae.objectives import vq_vae
from jvae.train_state import create_train_state, make_optimizer, make_train_step

from helpers import random_images, tiny_vae


def test_vq_straight_through_gradient_and_codebook_update():
    codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    z_e = jnp.array([[[0.1, 0.2], [0.9, 1.3]], [[-0.8, 1.7], [0.2, -0.1]]])  # (B=2, n=2, d=2)
    z_q, idx = quantize(z_e, codebook)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 0]])
    np.testing.assert_allclose(z_q, codebook[idx])
    weights = jnp.arange(8.0).reshape(2, 2, 2)
    g = jax.grad(lambda z: jnp.sum(weights * quantize(z, codebook)[0] ** 2))(z_e)
    # Straight through: the gradient w.r.t. z_e has z_e's shape and equals the
    # gradient w.r.t. z_q (2 * w * z_q), as if quantization were the identity.
    assert g.shape == z_e.shape
    np.testing.assert_allclose(g, 2 * weights * z_q, rtol=1e-6)

    # One optimizer step: chosen codes move towards their inputs, unused ones stay.
    post = vq_posterior(num_codes=16)
    vae = tiny_vae(post, latent_shape=(2, 2))
    x = random_images(32)
    objective = vq_vae(vae, num_codes=16)
    opt = make_optimizer(1e-2)
    state = create_train_state(vae, objective, opt, jax.random.key(0), {"image": x})
    before = state.params["posterior"]["codebook"]
    p_before = vae.encode(state.params, x)
    z_e0 = np.asarray(p_before["z_e"]).reshape(-1, 2)
    used = np.asarray(jax.jit(lambda z, c: quantize(z, c)[1])(p_before["z_e"], before)).ravel()
    step = make_train_step(objective, opt, mesh=data_mesh(1), donate=False)
    new_state, metrics = step(state, {"image": x})
    after = np.asarray(new_state.params["posterior"]["codebook"])
    for k in range(16):
        if k in used:
            target = z_e0[used == k].mean(0)
            assert np.linalg.norm(after[k] - target) < np.linalg.norm(before[k] - target)
        else:
            np.testing.assert_array_equal(after[k], before[k])
    assert 1.0 <= float(metrics["vq_perplexity"]) <= 16.0
    assert new_state.loss_state["vq_codebook"]["usage"].shape == (16,)
    np.testing.assert_allclose(metrics["kl"], 2 * np.log(16), rtol=1e-6)
    # A prior sample is a uniform pick of codebook rows, decoded.
    z = sample_prior(post, jax.random.key(1), (2, 2), 6, new_state.params)
    assert all(any(np.allclose(v, r) for r in after) for v in np.asarray(z).reshape(-1, 2))
    assert make_sampler(vae, 6)(new_state.params, jax.random.key(1)).shape == (6, 8, 8, 1)
