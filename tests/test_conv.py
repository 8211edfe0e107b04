"""jvae's im2col convolution is Flax's: same parameters, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.layers.conv import MIN_GEMM_FEATURES, Conv


@pytest.mark.parametrize("kernel,strides,padding,shape", [
    ((3, 3), (2, 2), "SAME", (2, 7, 7, 3)),               # the conv encoder's layer, odd size
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (2, 6, 5, 4)),     # the SD-style nets' conv
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 8, 8, 2)),     # SD-style downsampling
    ((1, 1), (1, 1), ((0, 0), (0, 0)), (2, 3, 3, 5)),     # 1x1: a plain matmul
    ((2, 3), (1, 2), "VALID", (2, 6, 7, 2)),              # per-axis kernel and stride
    ((3,), (1,), "SAME", (2, 9, 3)),                      # 1-D
])
@pytest.mark.parametrize("features", [MIN_GEMM_FEATURES, 1], ids=["gemm", "narrow"])
def test_matches_flax_conv(kernel, strides, padding, shape, features):
    ref = nn.Conv(features, kernel, strides=strides, padding=padding)
    ours = Conv(features, kernel, strides=strides, padding=padding)
    x = jax.random.normal(jax.random.key(0), shape)
    params = ref.init(jax.random.key(1), x)
    mine = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(mine)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mine)):
        np.testing.assert_array_equal(a, b)  # same initializers, same values
    np.testing.assert_allclose(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x),
                               rtol=1e-5, atol=1e-5)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))  # noqa: E731
    g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_traces_to_no_convolution_on_cpu():
    """On CPU the layer is slices and a GEMM, so it runs fast inside lax.scan too."""
    from jvae.epoch import has_convolutions
    x = jnp.zeros((1, 5, 5, 2))
    layer = Conv(MIN_GEMM_FEATURES, (3, 3), (2, 2))
    params = layer.init(jax.random.key(0), x)
    assert not has_convolutions(layer.apply, params, x)
    assert has_convolutions(nn.Conv(MIN_GEMM_FEATURES, (3, 3), (2, 2)).apply, params, x)
