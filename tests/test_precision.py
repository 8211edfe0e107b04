"""bfloat16 inference of a Stable-Diffusion-layout autoencoder, and float16's upcast.

A random narrow model with the SD layout (4 levels, GroupNorm, mid-block
attention) decodes the same codes in float32, bfloat16 and float16. Measured
here: bfloat16 is within 0.043 (max) and 0.0044 (mean) of float32 on jvae's
[0, 1] image scale (tolerances 0.08 and 0.01), float16 within 0.006. With one
decoder activation at 1e5 (beyond float16's 65504, as SDXL's decoder reaches),
float16 gives NaN images, bfloat16 stays within 0.016 of float32 (tolerance
0.05), and ``force_upcast`` runs float16 requests in float32, as diffusers does.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import make_config
from jvae.layers.diffusers import SD_CONFIG, diffusers_layout
from jvae.model import inference_dtype, mixed_precision
from jvae.training.experiment import DataSpec, build


@pytest.fixture(scope="module")
def sd_model():
    layout = diffusers_layout({**SD_CONFIG, "block_out_channels": [16, 32, 32, 32],
                               "layers_per_block": 1, "norm_num_groups": 8})
    cfg = make_config({"net": "spec", "encoder_spec": json.dumps(layout.architecture),
                       "posterior_scale": "logvar", "likelihood": "gaussian"})
    vae = build(cfg, DataSpec((64, 64, 3))).vae
    # Random weights of the init's shapes, drawn directly (no compiled init): kernels
    # LeCun-normal (1 / sqrt(fan-in)), norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2),
    # so every parameter matters.
    shapes = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    rng = np.random.default_rng(1)

    def draw(path, a):
        noise = rng.standard_normal(a.shape)
        if a.ndim > 1:
            return (noise / np.sqrt(np.prod(a.shape[:-1]))).astype(np.float32)
        return (0.1 * noise + (path[-1].key == "scale")).astype(np.float32)

    params = jax.tree.map_with_path(draw, shapes)
    z = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
    return vae, params, z


def _decode(vae, params, z, dtype):
    out = jax.jit(mixed_precision(vae, dtype).decode)(params, z)["loc"]
    assert out.dtype == jnp.float32  # distribution parameters come back in float32
    return np.asarray(out)


def test_bfloat16_stays_finite_and_close_to_float32(sd_model):
    vae, params, z = sd_model
    ref = _decode(vae, params, z, "float32")
    bf16 = _decode(vae, params, z, "bfloat16")
    assert np.isfinite(bf16).all()
    err = np.abs(bf16 - ref)
    assert err.max() < 0.08 and err.mean() < 0.01, (err.max(), err.mean())
    assert err.max() > 0  # it did compute in bfloat16


def test_an_activation_beyond_float16_breaks_float16_not_bfloat16_or_the_upcast(sd_model):
    vae, params, z = sd_model
    big = jax.tree.map(lambda a: a, params)
    conv_in = big["decoder"]["net"]["layers_1"]  # post_quant_conv, then conv_in
    conv_in["bias"] = np.array(conv_in["bias"])
    conv_in["bias"][0] = 1e5
    ref = _decode(vae, big, z, "float32")
    assert not np.isfinite(_decode(vae, big, z, "float16")).all()
    bf16 = _decode(vae, big, z, "bfloat16")
    assert np.isfinite(bf16).all() and np.abs(bf16 - ref).max() < 0.05
    upcast = inference_dtype("float16", force_upcast=True)
    assert upcast == "float32"
    np.testing.assert_array_equal(_decode(vae, big, z, upcast), ref)
    assert inference_dtype("bfloat16", force_upcast=True) == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        inference_dtype("int8")

