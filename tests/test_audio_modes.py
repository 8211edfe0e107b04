"""Audio through every mode: a run trained with default settings on a small generated
``.wav`` folder, then encode, reconstruct, sample, interpolate, traverse and evaluate."""

import json

import numpy as np
import pytest

from jvae.app.config import make_config
from jvae.train import train_and_evaluate

from helpers import run_cli

sf = pytest.importorskip("soundfile")

# The module-scoped run trains once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("audio_modes")

RATE = 8000
# Clip lengths in samples: shorter and longer than the chunk the data chooses.
LENGTHS = (300, 700, 1000, 1500, 2300, 2600)


def _tone(n, freq, rate=RATE):
    t = np.arange(n) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory):
    """Two classes of tones of several lengths, train/ and test/ folders."""
    root = tmp_path_factory.mktemp("tones")
    for split, lengths in (("train", LENGTHS * 3), ("test", LENGTHS[:3])):
        for i, n in enumerate(lengths):
            label = "low" if i % 2 else "high"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / split / label / f"{i}.wav", _tone(n, 300 if i % 2 else 900), RATE,
                     subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def run(wav_dir, tmp_path_factory):
    """One epoch with the settings the data chooses (only the run's size is set)."""
    work = tmp_path_factory.mktemp("audio_run")
    train_and_evaluate(make_config({"data_source": str(wav_dir), "epochs": 1,
                                    "eval_batch_size": 8, "latent_dim": 2,
                                    "data_placement": "host"}), work, quiet=True)
    return work


_run = run_cli


def test_the_run_chose_audio_settings_and_reports_audio_metrics(run):
    cfg = json.loads((run / "config.json").read_text())
    data = json.loads((run / "data.json").read_text())
    # The 90th percentile of the lengths (2600 samples) rounds up to 4096.
    assert data["chunk_size"] == cfg["chunk_size"] == 4096
    assert (cfg["net"], cfg["likelihood"]) == ("audio", "gaussian")
    assert cfg["stft_weight"] > 0 and cfg["stft_fft_sizes"]
    # A batch larger than the 20 training chunks was cut to them (a multiple of 8 devices).
    assert cfg["batch_size"] == 16
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("lsd_db", "mrstft", "snr_db", "stft", "neg_elbo"):
        assert np.isfinite(row[key]), key


def test_reconstruct_writes_one_wav_per_input_at_its_length(run, wav_dir, tmp_path, capsys):
    # One input at another rate: its reconstruction comes back at that rate and length.
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    sf.write(inputs / "a.wav", _tone(2600, 900), RATE)
    sf.write(inputs / "sub" / "b.wav", _tone(600, 300, 16000), 16000)
    out = tmp_path / "out"
    code, cap = _run(["reconstruct", "--workdir", str(run), "--input", str(inputs),
                      "--output", str(out)], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["count"] == 2
    a, rate_a = sf.read(out / "a.wav")
    b, rate_b = sf.read(out / "sub" / "b.wav")
    assert (len(a), rate_a) == (2600, RATE) and (len(b), rate_b) == (600, 16000)
    assert np.abs(a).max() > 0


def test_encode_writes_a_code_sequence_per_chunk(run, wav_dir, tmp_path, capsys):
    out = tmp_path / "codes.npz"
    code, cap = _run(["encode", "--workdir", str(run), "--input", str(wav_dir / "test"),
                      "--output", str(out)], capsys)
    assert code == 0, cap.err
    codes = np.load(out)
    # Test clips of 300, 700 and 1000 samples: one chunk each, padded.
    assert codes["mean"].shape[0] == 3 and codes["mean"].ndim == 3
    assert sorted(codes["lengths"].tolist()) == [300, 700, 1000]
    assert set(codes["offsets"].tolist()) == {0}


@pytest.mark.parametrize("mode,extra,clips", [
    ("sample", ["--num", "3"], 3),
    ("interpolate", ["--from", "0", "--to", "1", "--steps", "4"], 4),
    ("traverse", ["--dims", "0-1", "--steps", "3"], 6),
])
def test_generating_modes_write_wavs(run, tmp_path, capsys, mode, extra, clips):
    out = tmp_path / f"{mode}.wav"
    code, cap = _run([mode, "--workdir", str(run), "--output", str(out), *extra], capsys)
    assert code == 0, cap.err
    x, rate = sf.read(out)
    gap = int(0.25 * RATE)
    assert rate == RATE and len(x) == clips * 4096 + (clips - 1) * gap


def test_audio_runs_refuse_image_paths_in_one_line(run, tmp_path, capsys):
    code, cap = _run(["sample", "--workdir", str(run), "--output", str(tmp_path / "s.png")],
                     capsys)
    assert code == 2 and "trained on audio" in cap.err and "must end in .wav" in cap.err
    (tmp_path / "pics").mkdir()
    from PIL import Image
    Image.new("L", (8, 8)).save(tmp_path / "pics" / "x.png")
    code, cap = _run(["reconstruct", "--workdir", str(run), "--input", str(tmp_path / "pics"),
                      "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "holds images" in cap.err and ".wav" in cap.err
    assert len(cap.err.strip().splitlines()) == 1


def test_evaluate_reports_the_masked_bound_and_audio_metrics(run, capsys):
    code, cap = _run(["evaluate", "--workdir", str(run), "--iw-samples", "4"], capsys)
    assert code == 0, cap.err
    report = json.loads(cap.out.strip().splitlines()[-1])
    assert np.isfinite(report["nll_bound"]) and np.isfinite(report["lsd_db"])
