"""Settings that follow the data: what unset settings become for images and for audio."""

import pytest

from jvae.app.config import Config, ConfigError
from jvae.training import defaults


def test_images_keep_the_classic_defaults():
    chosen = defaults.model_defaults(Config(), (28, 28, 1))
    assert chosen == {"net": "mlp", "likelihood": "bernoulli", "gaussian_scale": 1.0,
                      "stft_weight": 0.0}


def test_audio_gets_the_audio_net_a_spectral_objective_and_a_fitting_likelihood():
    chosen = defaults.model_defaults(Config(), (8192, 1), sample_rate=16_000)
    assert chosen["net"] == "audio" and chosen["likelihood"] == "gaussian"
    assert chosen["stft_weight"] == defaults.AUDIO_STFT_WEIGHT > 0
    assert chosen["gaussian_scale"] == defaults.AUDIO_GAUSSIAN_SCALE
    # 16, 32, 64 and 128 ms windows at 16 kHz, as powers of two.
    assert chosen["stft_fft_sizes"] == (256, 512, 1024, 2048)


def test_settings_given_are_never_replaced():
    cfg = Config(net="conv", likelihood="gaussian_learned", gaussian_scale=0.5, stft_weight=0.0)
    assert defaults.model_defaults(cfg, (4096, 1)) == {}


def test_a_batch_larger_than_the_split_is_cut_with_one_notice():
    chosen, notice = defaults.run_defaults(Config(batch_size=128), (32, 32, 3), 18, 4)
    assert chosen["batch_size"] == 16 and "larger than the 18 training examples" in notice
    # Unset: no notice, the default itself is cut.
    chosen, notice = defaults.run_defaults(Config(), (32, 32, 3), 18)
    assert chosen["batch_size"] == 18 and notice is None
    chosen, _ = defaults.run_defaults(Config(), (8192, 1), 1000)
    assert chosen["batch_size"] == defaults.AUDIO_BATCH_SIZE


def test_small_splits_train_for_more_epochs():
    assert defaults.default_epochs(468) == defaults.EPOCHS
    assert defaults.default_epochs(1) == defaults.MAX_AUTO_EPOCHS
    assert defaults.default_epochs(20) == defaults.MIN_STEPS // 20
    chosen, _ = defaults.run_defaults(Config(epochs=3), (28, 28, 1), 60_000)
    assert "epochs" not in chosen


def test_spectral_settings_are_checked():
    with pytest.raises(ConfigError, match="stft_weight must be >= 0"):
        Config(stft_weight=-1.0)
    with pytest.raises(ConfigError, match="stft_fft_sizes"):
        Config(stft_fft_sizes=(2,))
