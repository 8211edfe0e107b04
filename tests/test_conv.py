"""jvae's im2col convolution is Flax's: same parameters, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jvae.layers.convolution import MIN_GEMM_FEATURES, Conv

from helpers import assert_same_layer

G = MIN_GEMM_FEATURES  # the im2col + GEMM path; fewer output channels keep XLA's convolution


@pytest.mark.parametrize("kernel,strides,padding,shape,features", [
    ((3, 3), (2, 2), "SAME", (2, 7, 7, 3), G),               # the conv encoder's layer, odd size
    ((3, 3), (2, 2), "SAME", (2, 7, 7, 3), 1),               # narrow: XLA's convolution
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (2, 6, 5, 4), G),     # the SD-style nets' conv
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 8, 8, 2), G),     # SD-style downsampling
    ((3, 3), (2, 2), ((0, 1), (0, 1)), (1, 8, 8, 2), G),     # diffusers' Downsample2D padding
    ((3, 3), (1, 1), ((0, 4), (2, 0)), (1, 5, 6, 3), G),     # padding wider than the kernel
    ((1, 1), (1, 1), ((0, 0), (0, 0)), (2, 3, 3, 5), 4),     # 1x1: a plain matmul at any width
    ((2, 3), (1, 2), "VALID", (2, 6, 7, 2), G),              # per-axis kernel and stride
    ((3,), (1,), "SAME", (2, 9, 3), G),                      # 1-D
])
def test_matches_flax_conv(kernel, strides, padding, shape, features):
    ref = nn.Conv(features, kernel, strides=strides, padding=padding)
    ours = Conv(features, kernel, strides=strides, padding=padding)
    assert_same_layer(ref, ours, jax.random.normal(jax.random.key(0), shape))


def test_traces_to_no_convolution_on_cpu():
    """On CPU the layer is slices and one GEMM: no convolution left for XLA:CPU to run."""
    from jvae.training.epoch import has_convolutions
    x = jnp.zeros((1, 5, 5, 2))
    layer = Conv(MIN_GEMM_FEATURES, (3, 3), (2, 2))
    params = layer.init(jax.random.key(0), x)
    assert not has_convolutions(layer.apply, params, x)
    assert has_convolutions(nn.Conv(MIN_GEMM_FEATURES, (3, 3), (2, 2)).apply, params, x)
