"""Spectral loss terms and audio metrics: auraloss's values, padding invariance, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.base import VAE, Forward, Likelihood
from jvae.terms.spectral import (
    MelScale,
    audio_metrics,
    log_spectral_distance,
    mel_filterbank,
    mel_stft,
    multi_resolution_stft,
    multi_resolution_stft_distance,
    snr_db,
    stft_distance,
    stft_magnitude,
)

# Small resolutions, one with an odd FFT and a window shorter than the FFT.
SMALL = ((64, 16, 64), (31, 8, 20), (128, 32, 100))


def _signals(batch, length, silent_edge=0, seed=0):
    """Random clips in [-1, 1] and noisy reconstructions, silent over ``silent_edge``
    samples at both ends (where reflect and zero padding agree)."""
    kx, kn = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (batch, length), minval=-1.0, maxval=1.0)
    x_hat = x + 0.3 * jax.random.normal(kn, x.shape)
    if silent_edge:
        keep = np.zeros(length, np.float32)
        keep[silent_edge:length - silent_edge] = 1.0
        x, x_hat = x * keep, x_hat * keep
    return x, x_hat


def _forward(x, recon, valid=None):
    """A Forward whose likelihood mean is ``recon`` ``(S, B, T, C)``."""
    lik = Likelihood("mean", None, None, None, lambda p: p["mean"])
    vae = VAE(None, None, None, None, lik, (1,))
    return Forward(vae=vae, params=None, x=x, cond=None, mask=None, post={}, z=None, log_q=None, log_pz=None,
                   lik={"mean": recon}, log_px=None, valid=valid)


def _term_value(term, fwd):
    value, _, _ = term.apply(fwd, term.init(fwd.vae))
    return value


def _torch_pair(x, x_hat, b):
    torch = pytest.importorskip("torch")
    # auraloss's (input, target): target is the reference that normalizes SC.
    return torch.tensor(np.asarray(x_hat[b:b + 1, None])), torch.tensor(np.asarray(x[b:b + 1, None]))


def test_stft_distance_equals_auraloss_stft_loss():
    torch = pytest.importorskip("torch")
    freq = pytest.importorskip("auraloss.freq")
    n_fft, hop, win = 256, 64, 200
    x, x_hat = _signals(3, 1024, silent_edge=n_fft // 2 + 1)
    both = jax.jit(lambda x, r: [stft_distance(x, r, n_fft=n_fft, hop_length=hop, win_length=win, w_sc=w)
                                 for w in (1.0, 0.0)])
    ours, log_only = both(x, x_hat)
    loss = freq.STFTLoss(fft_size=n_fft, hop_size=hop, win_length=win)
    np.testing.assert_allclose(ours, [float(loss(*_torch_pair(x, x_hat, b))) for b in range(3)], rtol=1e-5)
    # auraloss's SC is one Frobenius norm over the whole batch; its log-magnitude mean is our batch mean.
    theirs = freq.STFTLoss(fft_size=n_fft, hop_size=hop, win_length=win, w_sc=0.0)(
        torch.tensor(np.asarray(x_hat[:, None])), torch.tensor(np.asarray(x[:, None])))
    np.testing.assert_allclose(float(jnp.mean(log_only)), float(theirs), rtol=1e-5)


@pytest.mark.parametrize("resolutions", [None, SMALL])
def test_multi_resolution_distance_equals_auraloss(resolutions):
    pytest.importorskip("torch")
    freq = pytest.importorskip("auraloss.freq")
    if resolutions is None:
        loss, kwargs, edge, length = freq.MultiResolutionSTFTLoss(), {}, 1025, 4096
    else:
        ffts, hops, wins = (list(r) for r in zip(*resolutions))
        loss = freq.MultiResolutionSTFTLoss(fft_sizes=ffts, hop_sizes=hops, win_lengths=wins)
        kwargs, edge, length = {"resolutions": resolutions}, 65, 400
    x, x_hat = _signals(2, length, silent_edge=edge, seed=1)
    ours = jax.jit(lambda x, r: multi_resolution_stft_distance(x, r, **kwargs))(x, x_hat)
    np.testing.assert_allclose(ours, [float(loss(*_torch_pair(x, x_hat, b))) for b in range(2)], rtol=1e-5)


def test_mel_variant_equals_auraloss_and_librosa():
    pytest.importorskip("torch")
    freq = pytest.importorskip("auraloss.freq")
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, n_mels, fmin, fmax in ((8000, 512, 40, 0.0, None), (22050, 1024, 64, 30.0, 8000.0)):
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax),
                                   librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax),
                                   rtol=1e-5, atol=1e-8)
    resolutions = ((256, 64, 256), (512, 128, 400))
    ffts, hops, wins = (list(r) for r in zip(*resolutions))
    loss = freq.MultiResolutionSTFTLoss(fft_sizes=ffts, hop_sizes=hops, win_lengths=wins, sample_rate=8000,
                                        scale="mel", n_bins=40)
    x, x_hat = _signals(2, 2048, silent_edge=257, seed=2)
    ours = jax.jit(lambda x, r: multi_resolution_stft_distance(x, r, None, resolutions, MelScale(8000, 40)))(
        x, x_hat)
    np.testing.assert_allclose(ours, [float(loss(*_torch_pair(x, x_hat, b))) for b in range(2)], rtol=1e-5)


# The losses and every metric, per example, of clips (B, T), reconstructions (S, B, T) and a mask.
_TERMS = {"mrstft": multi_resolution_stft(SMALL[:2]), "mel": mel_stft(8000, 8, SMALL[:1])}


@jax.jit
def _all_values(x, recon, valid):
    fwd = _forward(x[..., None], recon[..., None], valid)
    values = {name: _term_value(t, fwd) for name, t in _TERMS.items()}
    values.update(audio_metrics(x, recon[0], valid, resolutions=SMALL[1:]))
    values["lsd_odd"] = log_spectral_distance(x, recon[0], valid, n_fft=33, hop_length=5)
    return values


def test_padding_changes_neither_losses_nor_metrics():
    lengths, total = (37, 150), 200
    x, _ = _signals(2, total, seed=3)
    garbage = 5.0 * jax.random.normal(jax.random.key(4), (2, 2, total))
    recon = x + 0.3 * jax.random.normal(jax.random.key(5), garbage.shape)
    valid = jnp.asarray((np.arange(total)[None, :] < np.array(lengths)[:, None]).astype(np.float32))
    x = x * valid  # padded with silence
    padded = _all_values(x, jnp.where(valid > 0, recon, garbage), valid)  # garbage past the clips' ends
    for b, n in enumerate(lengths):
        alone = _all_values(x[b:b + 1, :n], recon[:, b:b + 1, :n], None)
        for name, value in alone.items():
            np.testing.assert_allclose(padded[name][b], value[0], rtol=2e-5, atol=1e-6, err_msg=name)


def test_gradients_are_finite_at_silence_and_match_finite_differences():
    zeros = jnp.zeros((2, 1, 96, 1))
    valid = jnp.asarray((np.arange(96)[None] < np.array([[96], [40]])).astype(np.float32))
    loss = lambda r: sum(jnp.sum(_term_value(t, _forward(zeros[0], r, valid))) for t in _TERMS.values())  # noqa: E731
    assert np.all(np.isfinite(jax.jit(jax.grad(loss))(zeros)))
    with jax.enable_x64(True):
        x, x_hat = (np.asarray(a, np.float64) for a in _signals(2, 80, seed=6))
        valid64 = jnp.asarray(valid[:, :80], jnp.float64)
        f = jax.jit(lambda r: multi_resolution_stft_distance(jnp.asarray(x) * valid64, r, valid64, SMALL[1:2]))
        jax.test_util.check_grads(f, (jnp.asarray(x_hat),), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_lsd_and_snr_closed_forms():
    x, _ = _signals(3, 512, seed=7)
    noise = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    # Scale the noise to an exact power: SNR = 10 log10(P_x / P_n) with P_n = 10^(-snr/10) P_x.
    target_db = np.array([0.0, 10.0, 25.0])
    p_x = np.sum(np.square(np.asarray(x)), axis=-1)
    noise *= np.sqrt(p_x * 10 ** (-target_db / 10) / np.sum(noise ** 2, axis=-1))[:, None]
    lsd, snr = jax.jit(lambda x, r: (log_spectral_distance(x, r), snr_db(x, r)))(x, jnp.stack([x, x + noise]))
    np.testing.assert_allclose(lsd[0], 0.0, atol=1e-4)  # float rounding of two FFT batchings
    np.testing.assert_allclose(snr[1], target_db, atol=1e-3)
    assert np.all(np.diff(np.asarray(lsd[1])) < 0)  # less noise, closer spectra


def test_sine_peaks_in_its_bin():
    sr, n_fft = 8000, 1024
    sine = np.sin(2 * np.pi * 220.0 * np.arange(4000) / sr).astype(np.float32)
    mags = jax.jit(lambda s: stft_magnitude(s, n_fft, 256)[8])(sine)
    mel_mags = mel_filterbank(sr, n_fft, 40) @ np.asarray(mags)
    centers = np.argmax(mel_filterbank(sr, n_fft, 40), axis=1) * sr / n_fft
    assert (int(jnp.argmax(mags)), int(np.argmax(mel_mags))) == (round(220 * n_fft / sr),
                                                                 int(np.argmin(np.abs(centers - 220))))


def test_terms_reject_images_and_empty_mel_filters():
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        _term_value(multi_resolution_stft(SMALL), _forward(jnp.zeros((2, 8, 8, 1)), jnp.zeros((1, 2, 8, 8, 1))))
    with pytest.raises(ValueError, match="mel filters cover no bin"):
        mel_stft(8000, 128, ((128, 32, 128),))
