"""jvae's transposed convolution is Flax's, computed by polyphase decomposition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.layers.upsample import ConvTranspose
from jvae.likelihoods import bernoulli
from jvae.nets import make_nets
from jvae.posteriors import normal_posterior


@pytest.mark.parametrize("kernel,strides,shape", [
    ((3, 3), (2, 2), (2, 7, 7, 5)),     # the conv decoder's layer
    ((4, 4), (2, 2), (2, 7, 6, 3)),     # even kernel, non-square input
    ((2, 2), (3, 3), (1, 4, 5, 2)),     # kernel smaller than the stride: empty phases
    ((3, 2), (2, 3), (2, 5, 4, 3)),     # per-axis kernel and stride
    ((3,), (2,), (2, 6, 2)),            # 1-D
    ((3, 3, 3), (2, 2, 2), (1, 4, 3, 5, 2)),  # 3-D
])
def test_matches_flax_conv_transpose(kernel, strides, shape):
    ref = nn.ConvTranspose(4, kernel, strides=strides, padding="SAME")
    ours = ConvTranspose(4, kernel, strides)
    x = jax.random.normal(jax.random.key(0), shape)
    params = ref.init(jax.random.key(1), x)
    mine = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(mine)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mine)):
        np.testing.assert_array_equal(a, b)  # same initializers, same values
    np.testing.assert_allclose(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x),
                               atol=1e-5)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))  # noqa: E731
    g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_decoder_keeps_flax_parameter_names():
    post, lik = normal_posterior(), bernoulli()
    _, dec = make_nets("conv", posterior=post, likelihood=lik, latent_shape=(4,),
                       data_shape=(8, 8, 1), hidden=(16,), channels=(4, 8))
    params = jax.jit(dec.init)(jax.random.key(0), jnp.zeros((2, 4)))["params"]
    assert params["ConvTranspose_0"]["kernel"].shape == (3, 3, 8, 8)
    assert params["ConvTranspose_1"]["kernel"].shape == (3, 3, 8, 4)
    assert jax.eval_shape(dec.apply, {"params": params},
                          jnp.zeros((2, 4)))["logits"].shape == (2, 8, 8, 1)
