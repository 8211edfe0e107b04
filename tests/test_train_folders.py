"""Training on a folder of images and on a folder of .wav files, end to end (tiny)."""

import json

import numpy as np
import pytest
from PIL import Image

from jvae.app.config import ConfigError, make_config
from jvae.data import DataError
from jvae.train import train_and_evaluate

TINY = dict(batch_size=8, eval_batch_size=8, hidden=(16,), latent_dim=2, num_images=8, epochs=1)


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "pictures"
    for cls, level in (("bright", 200), ("dark", 40)):
        (root / cls).mkdir(parents=True)
        for i in range(16):
            arr = np.clip(level + rng.integers(-30, 30, (10, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_run_writes_classes_and_refuses_other_data(pictures, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("DATA_SOURCE", str(pictures))
    work = tmp_path / "run"
    settings = {**TINY, "image_size": "8", "test_fraction": 0.25, "likelihood": "gaussian"}
    row = train_and_evaluate(make_config(settings), work, quiet=True)
    assert np.isfinite(row["neg_elbo"])
    assert json.loads((work / "classes.json").read_text()) == ["bright", "dark"]
    saved = json.loads((work / "data.json").read_text())
    assert saved["image_size"] == [8, 8] and saved["channels"] == 3
    assert saved["data_source"] == str(pictures)
    assert (work / "images" / "samples_epoch001.png").exists()
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    # Another image size, or another folder: refused, nothing in the workdir rewritten.
    with pytest.raises(DataError, match="image_size: saved"):
        train_and_evaluate(make_config({**settings, "image_size": "4", "epochs": 2}), work,
                           quiet=True)
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    for i in range(16):
        Image.new("RGB", (8, 8), (i, i, i)).save(other / "x" / f"{i}.png")
    monkeypatch.setenv("DATA_SOURCE", str(other))
    with pytest.raises(DataError, match="other data.*data_source"):
        train_and_evaluate(make_config({**settings, "epochs": 2}), work, quiet=True)
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


def test_audio_folder_run_writes_wavs(tmp_path):
    sf = pytest.importorskip("soundfile")
    root = tmp_path / "tones"
    for split, n in (("train", 4), ("test", 1)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            t = np.arange(4096) / 8000
            sf.write(root / split / f"{i}.wav", 0.4 * np.sin(2 * np.pi * (300 + 100 * i) * t),
                     8000, subtype="PCM_16")
    # The MLP without the spectral term: this test is about the files a run writes.
    base = {**TINY, "data_source": str(root), "chunk_size": 256, "net": "mlp",
            "stft_weight": 0.0}
    with pytest.raises(ConfigError, match="--likelihood gaussian"):
        train_and_evaluate(make_config({**base, "likelihood": "bernoulli"}), tmp_path / "bad",
                           quiet=True)
    assert not (tmp_path / "bad").exists()
    work = tmp_path / "run"
    # The likelihood left unset follows the data: a Gaussian, for samples in [-1, 1].
    row = train_and_evaluate(make_config(base), work, quiet=True)
    assert json.loads((work / "config.json").read_text())["likelihood"] == "gaussian"
    assert np.isfinite(row["neg_elbo"])
    recon, rate = sf.read(work / "audio" / "reconstructions_epoch001.wav", dtype="int16")
    # Four originals and four reconstructions of 256 samples, 0.25 s of silence between.
    assert rate == 8000 and len(recon) == 8 * 256 + 7 * 2000
    assert not recon[256:2256].any() and recon[:256].any()
    assert (work / "audio" / "samples_epoch001.wav").exists()
    assert (work / "audio" / "waveforms_epoch001.png").exists()


def test_conv1d_nets_map_chunks_to_the_likelihood_shape():
    import jax

    from jvae.distributions.likelihoods import gaussian
    from jvae.distributions.posteriors import normal_posterior
    from jvae.nets import make_nets
    enc, dec = make_nets("conv", posterior=normal_posterior(), likelihood=gaussian(
        learn_scale=True), latent_shape=(4,), data_shape=(256, 1), hidden=(16,))
    x = np.zeros((2, 256, 1), np.float32)
    # Shapes only: tracing checks every layer without compiling the nets.
    post = jax.eval_shape(lambda: enc.apply(enc.init(jax.random.key(0), x), x))
    assert post["loc"].shape == (2, 4)
    z = np.zeros((2, 4), np.float32)
    out = jax.eval_shape(lambda: dec.apply(dec.init(jax.random.key(1), z), z))
    assert all(v.shape == (2, 256, 1) for v in out.values())
    with pytest.raises(ValueError, match="divisible by 256"):
        bad = make_nets("conv", posterior=normal_posterior(),
                        likelihood=gaussian(),
                        latent_shape=(4,), data_shape=(300, 1))[1]
        jax.eval_shape(lambda: bad.init(jax.random.key(0), z))


def test_data_flags_parse_and_name_the_default_workdir(tmp_path):
    from jvae.app import flags
    from jvae.train import MODE, default_workdir

    def parse(argv):
        return flags.config_from_args(flags.make_parser(MODE, "jvae train").parse_args(argv))[0]

    cfg = parse(["--data-source", str(tmp_path / "my_pics"), "--no-cache", "--strict",
                 "--image-size", "32x48", "--channels", "1"])
    assert (cfg.cache, cfg.strict, cfg.image_size, cfg.channels) == (False, True, "32x48", 1)
    assert default_workdir(cfg) == "runs/my_pics"
    cfg = parse(["--dataset", "digits", "--no-strict"])
    assert cfg.strict is False and cfg.cache is True and default_workdir(cfg) == "runs/digits"
    with pytest.raises(ConfigError, match="channels"):
        parse(["--channels", "2"])
