"""jvae's transposed convolution is Flax's, computed by polyphase decomposition.

Both formulations are checked on this (CPU) backend: the per-phase
convolutions used on GPU/TPU and the one-GEMM form used on CPU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import normal_posterior
from jvae.layers.upsample import ConvTranspose
from jvae.nets import make_nets

from helpers import assert_same_layer

_CASES = [
    ((3, 3), (2, 2), (2, 7, 7, 5)),     # the conv decoder's layer
    ((4, 4), (2, 2), (2, 7, 6, 3)),     # even kernel, non-square input
    ((2, 2), (3, 3), (1, 4, 5, 2)),     # kernel smaller than the stride: empty phases
    ((3, 2), (2, 3), (2, 5, 4, 3)),     # per-axis kernel and stride
    ((3,), (2,), (2, 6, 2)),            # 1-D
    ((3, 3, 3), (2, 2, 2), (1, 4, 3, 5, 2)),  # 3-D
]


@pytest.mark.parametrize("kernel,strides,shape,gemm", [
    *((*case, True) for case in _CASES), (*_CASES[0], False), (*_CASES[2], False)])
def test_matches_flax_conv_transpose(kernel, strides, shape, gemm, monkeypatch):
    monkeypatch.setattr("jvae.layers.upsample.use_gemm_convolutions", lambda: gemm)
    ref = nn.ConvTranspose(4, kernel, strides=strides, padding="SAME")
    ours = ConvTranspose(4, kernel, strides)
    assert_same_layer(ref, ours, jax.random.normal(jax.random.key(0), shape))


def test_conv_decoder_keeps_flax_parameter_names():
    post, lik = normal_posterior(), bernoulli()
    _, dec = make_nets("conv", posterior=post, likelihood=lik, latent_shape=(4,),
                       data_shape=(8, 8, 1), hidden=(16,), channels=(4, 8))
    params = jax.jit(dec.init)(jax.random.key(0), jnp.zeros((2, 4)))["params"]
    assert params["ConvTranspose_0"]["kernel"].shape == (3, 3, 8, 8)
    assert params["ConvTranspose_1"]["kernel"].shape == (3, 3, 8, 4)
    assert jax.eval_shape(dec.apply, {"params": params},
                          jnp.zeros((2, 4)))["logits"].shape == (2, 8, 8, 1)
