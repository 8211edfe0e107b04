"""Layer-spec tokens for 1-D signals: shapes, errors, and what C1d computes."""

import jax
import numpy as np
import pytest

from jvae.layers.spec import SpecError
from jvae.layers.spec_blocks import build
from jvae.layers.spec_shapes import infer_shapes, output_shape


def test_1d_tokens_shapes_and_errors():
    spec = ["C1d_2_8_4_2_1", "VAERB1d_8_16", "GN_4_16", "SiLU", "MaxP1d_2", "UpS1d_4",
            "C1d_16_1_3_1_1"]
    # 64 -> conv stride 2 -> 32 -> pool -> 16 -> up 4 -> 64.
    assert [s[0] for s in infer_shapes(spec, (64, 2))] == [32, 32, 32, 32, 16, 64, 64]
    assert output_shape(spec, (64, 2)) == (64, 1, 1)
    net = build(spec, (64, 2))
    x = np.zeros((3, 64, 2), np.float32)
    out = jax.eval_shape(lambda: net.apply(net.init(jax.random.key(0), x), x))
    assert out.shape == (3, 64, 1)
    with pytest.raises(SpecError, match="in=3 does not match the 2 channels"):
        infer_shapes(["C1d_3_8_3_1_1"], (64, 2))
    with pytest.raises(SpecError, match="longer than the length"):
        infer_shapes(["MaxP1d_80"], (64, 2))


def test_c1d_is_a_strided_padded_1d_correlation():
    net = build(["C1d_1_1_3_2_1"], (8, 1))
    x = np.arange(8, dtype=np.float32)[None, :, None]
    params = net.init(jax.random.key(0), x)
    kernel = np.asarray(params["params"]["layers_0"]["kernel"]).reshape(3)
    bias = float(np.asarray(params["params"]["layers_0"]["bias"])[0])
    padded = np.pad(x[0, :, 0], 1)
    expected = [padded[i:i + 3] @ kernel + bias for i in range(0, 7, 2)]
    np.testing.assert_allclose(np.asarray(net.apply(params, x))[0, :, 0], expected, rtol=1e-5)
