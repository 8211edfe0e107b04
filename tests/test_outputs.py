"""Each epoch's audio files and the log-mel spectrograms drawn for them."""

import numpy as np
import pytest
from PIL import Image

from jvae.app.outputs import (
    COLORMAP,
    log_mel_spectrogram,
    save_epoch_audio,
    save_spectrograms,
    spectrogram_image,
    stft_sizes,
)

RATE = 16_000


def tone(freq, seconds=0.25, rate=RATE):
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def test_window_and_hop_are_powers_of_two_near_32_and_8_ms():
    assert stft_sizes(16_000) == (512, 128)
    assert stft_sizes(8_000) == (256, 64)
    assert stft_sizes(44_100) == (1024, 256)


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3500.0, 7000.0])
def test_a_pure_tone_peaks_in_the_mel_band_of_its_frequency(freq):
    n_mels = 64
    db = log_mel_spectrogram(tone(freq), RATE, n_mels)
    _, hop = stft_sizes(RATE)
    assert db.shape == (1 + int(0.25 * RATE) // hop, n_mels)
    # Slaney's mel scale: 3 mel per 200 Hz up to 1 kHz, then 27 mel per factor 6.4;
    # the bands' centres lie evenly on it between 0 Hz and Nyquist.
    mels = np.linspace(0.0, 15 + 27 * np.log(RATE / 2 / 1000) / np.log(6.4), n_mels + 2)[1:-1]
    centres = np.where(mels < 15, mels * 200 / 3, 1000 * 6.4 ** ((mels - 15) / 27))
    assert int(np.argmax(db.mean(axis=0))) == int(np.argmin(np.abs(centres - freq)))
    # dB, floored 80 below the peak: the far bands sit on the floor.
    assert db.max() - db.min() == pytest.approx(80.0)


def test_the_image_runs_time_left_to_right_and_low_bands_at_the_bottom():
    low_then_high = np.concatenate([tone(300.0), tone(5000.0)])
    img = spectrogram_image([low_then_high, np.zeros(100)], RATE, n_mels=64, width=200)
    assert img.shape == (2 * 65 - 1, 200, 3) and (img[64] == 255).all()  # white parting line
    brightness = img[:64].astype(int).sum(axis=2)
    rows_left = np.argmax(brightness[:, 20:80], axis=0)
    rows_right = np.argmax(brightness[:, 120:180], axis=0)
    assert (rows_left > 48).all() and (rows_right < 24).all()
    # Lanes share one scale: silence is drawn in the darkest colour.
    assert (img[65:] == COLORMAP[0]).all()


def test_the_colormap_gets_lighter_all_the_way():
    c = COLORMAP / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luminance) > 0).all()


def test_epoch_audio_is_cut_to_each_clips_length(tmp_path):
    sf = pytest.importorskip("soundfile")
    rate, size = 8000, 256
    rng = np.random.default_rng(0)
    lengths = np.array([100, 256, 30, 200, 256], np.int32)
    clips = np.zeros((5, size, 1), np.float32)
    for i, n in enumerate(lengths):
        clips[i, :n, 0] = 0.3 * np.sin(np.arange(n) * (0.2 + 0.1 * i))
        clips[i, n:, 0] = rng.uniform(-1, 1, size - n)  # loud "padding": must never show
    test = {"image": clips, "label": np.zeros(5, np.int32), "length": lengths}
    samples = rng.uniform(-0.5, 0.5, (4, size, 1)).astype(np.float32)
    save_epoch_audio(tmp_path, 3, lambda params, key, cond: samples,
                     lambda params, x, cond: 0.5 * np.asarray(x), None, test, None, rate)

    recon, got_rate = sf.read(tmp_path / "audio" / "reconstructions_epoch003.wav", dtype="float32")
    gap = int(0.25 * rate)
    kept = lengths[:4]  # the first four test clips, each then its reconstruction
    assert got_rate == rate and len(recon) == 2 * kept.sum() + 7 * gap
    start = 0
    for n in kept:
        original, rebuilt = recon[start:start + n], recon[start + n + gap:start + 2 * n + gap]
        np.testing.assert_allclose(rebuilt, 0.5 * original, atol=2 / 32767)
        start += 2 * (n + gap)

    rows = [*samples[..., 0], *[c for i in range(4) for c in
                               (clips[i, :lengths[i], 0], 0.5 * clips[i, :lengths[i], 0])]]
    expected = tmp_path / "expected.png"
    save_spectrograms(expected, rows, rate)
    drawn = np.asarray(Image.open(tmp_path / "audio" / "spectrograms_epoch003.png"))
    assert drawn.shape == (12 * 65 - 1, 800, 3)
    np.testing.assert_array_equal(drawn, np.asarray(Image.open(expected)))
    assert (tmp_path / "audio" / "waveforms_epoch003.png").is_file()
