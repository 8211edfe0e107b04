"""The PQMF filter bank: near-perfect reconstruction, band selectivity, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.layers.pqmf import PQMF, design_prototype, pqmf_filters, reconstruction_error_db
from jvae.layers.spec import SpecError
from jvae.layers.spec_blocks import build
from jvae.layers.spec_shapes import infer_shapes


@pytest.mark.parametrize("bands", [2, 4, 8, 16])
def test_analysis_then_synthesis_gives_the_signal_back(bands):
    # Near-perfect reconstruction: the residual is over 40 dB below the signal.
    assert reconstruction_error_db(bands) < -40


def test_the_prototype_meets_the_power_complementary_condition():
    p = design_prototype(8)
    w = np.linspace(0, np.pi / 8, 50)
    n = np.arange(len(p))
    power = lambda w: np.abs(np.exp(-1j * np.outer(w, n)) @ p) ** 2  # noqa: E731
    np.testing.assert_allclose(power(w) + power(np.pi / 8 - w), 1.0, atol=0.02)
    assert np.abs(p.sum() - 1) < 1e-12 and power(np.array([np.pi / 4]))[0] < 1e-6


def test_a_tone_lands_in_its_band():
    rate, bands = 8000, 8
    t = np.arange(4096) / rate
    q = PQMF(bands)
    for freq in (300.0, 1700.0, 3300.0):
        x = jnp.asarray(np.sin(2 * np.pi * freq * t, dtype=np.float32)[None, :, None])
        energy = np.asarray(jnp.sum(q.analysis(x)[0, 64:-64] ** 2, axis=0))
        assert int(np.argmax(energy)) == int(freq // (rate / 2 / bands))
        assert energy.max() > 0.95 * energy.sum()


def test_both_directions_equal_numpy_filtering_and_are_linear_maps():
    bands = 4
    h, g = pqmf_filters(bands)
    half = (h.shape[1] - 1) // 2
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    q = PQMF(bands)
    sub = np.asarray(q.analysis(jnp.asarray(x)[None, :, None]))[0]
    expected = np.stack([np.correlate(np.pad(x, half), f, "valid")[::bands] for f in h], 1)
    np.testing.assert_allclose(sub, expected, atol=1e-5)
    up = np.zeros((bands, len(x)))
    up[:, ::bands] = expected.T * bands
    back = sum(np.correlate(np.pad(u, half), f, "valid") for u, f in zip(up, g))
    np.testing.assert_allclose(np.asarray(q.synthesis(jnp.asarray(sub)[None]))[0, :, 0], back,
                               atol=1e-4)
    # Synthesis is the adjoint-shaped linear map: its VJP is exact and finite.
    _, vjp = jax.vjp(q.synthesis, jnp.asarray(sub)[None])
    assert np.isfinite(np.asarray(vjp(jnp.ones((1, len(x), 1)))[0])).all()


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="divisible by 8"):
        PQMF(8).analysis(jnp.zeros((1, 100, 1)))


def test_spec_tokens_split_and_rejoin_the_bands():
    spec = ["PQMF_4", "IPQMF_4"]
    assert infer_shapes(spec, (64, 1)) == [(16, 1, 4), (64, 1, 1)]
    net = build(spec, (64, 1))
    x = jax.random.normal(jax.random.key(0), (1, 64, 1))
    params = net.init(jax.random.key(1), x)
    assert not jax.tree.leaves(params)  # a fixed filter bank: no parameters
    q = PQMF(4)
    np.testing.assert_allclose(net.apply(params, x), q.synthesis(q.analysis(x)), atol=1e-6)
    with pytest.raises(SpecError, match="not a multiple of the 4 bands"):
        infer_shapes(spec, (62, 1))
    with pytest.raises(SpecError, match="does not match the 2 channels"):
        infer_shapes(spec, (64, 2))
