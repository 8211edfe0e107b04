"""PSNR, MS-SSIM and the high-frequency ratio against torchmetrics and by construction."""

import jax.numpy as jnp
import numpy as np
import pytest

from jvae.metrics.image import (
    MS_SSIM_WEIGHTS,
    high_frequency_energy,
    high_frequency_ratio,
    ms_ssim,
    ms_ssim_scales,
    psnr,
)


def _pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    x = rng.random(shape, np.float32)
    y = np.clip(x + rng.normal(0, noise, shape), 0, 1).astype(np.float32)
    return x, y


def test_ms_ssim_equals_pytorch_msssim_and_psnr_its_definition():
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("pytorch_msssim")
    # Five scales need 176+ pixels a side for the 11-tap window (11 at the coarsest).
    x, y = _pair((2, 192, 176, 3))
    assert ms_ssim_scales(192, 176) == 5 and ms_ssim_scales(175, 192) == 4
    nchw = [torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in (x, y)]
    want = reference.ms_ssim(nchw[1], nchw[0], data_range=1.0, size_average=False)
    np.testing.assert_allclose(ms_ssim(jnp.asarray(y), jnp.asarray(x)), want.numpy(), rtol=1e-5)
    mse = np.mean((x.astype(np.float64) - y) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(psnr(jnp.asarray(y), jnp.asarray(x)), 10 * np.log10(1 / mse), rtol=1e-5)
    # Fewer scales: the standard weights of those scales, renormalized.
    x, y = _pair((2, 48, 48, 1), seed=1)
    assert ms_ssim_scales(48, 48) == 3
    three = ms_ssim(jnp.asarray(y), jnp.asarray(x))
    assert np.all((0 < three) & (three < 1))
    assert sum(MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=2e-4)  # as published: 1.0001


def test_ms_ssim_is_one_for_equal_images_and_falls_with_noise():
    x, y = _pair((3, 64, 64, 3), noise=0.05)
    _, z = _pair((3, 64, 64, 3), noise=0.2)
    np.testing.assert_allclose(ms_ssim(jnp.asarray(x), jnp.asarray(x)), 1.0, rtol=1e-6)
    assert np.all(np.asarray(ms_ssim(jnp.asarray(y), jnp.asarray(x)))
                  > np.asarray(ms_ssim(jnp.asarray(z), jnp.asarray(x))))
    with pytest.raises(ValueError, match="at least 22 pixels"):
        ms_ssim_scales(16, 64)


def test_high_frequency_ratio_is_one_for_the_input_and_falls_when_blurred():
    x, _ = _pair((4, 32, 32, 3))
    assert float(high_frequency_ratio(jnp.asarray(x), jnp.asarray(x))) == pytest.approx(1.0)
    # A 2x2 box blur removes most power above half Nyquist.
    blurred = 0.25 * (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(np.roll(x, 1, 1), 1, 2))
    ratio = float(high_frequency_ratio(jnp.asarray(blurred), jnp.asarray(x)))
    assert 0.0 < ratio < 0.3
    # A pure tone is counted by its frequency: above the cutoff all of it, below none.
    t = np.arange(32)
    fast = np.broadcast_to(np.cos(2 * np.pi * 0.375 * t)[None, :, None, None], (1, 32, 32, 1))
    slow = np.broadcast_to(np.cos(2 * np.pi * 0.125 * t)[None, :, None, None], (1, 32, 32, 1))
    assert float(high_frequency_energy(jnp.asarray(slow))[0]) == pytest.approx(0.0, abs=1e-6)
    # Parseval: sum |F|^2 / (H W) is the image's energy, 1024 pixels x mean(cos^2) = 512.
    assert float(high_frequency_energy(jnp.asarray(fast))[0]) == pytest.approx(512.0, rel=1e-4)
