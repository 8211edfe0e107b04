"""Speech reconstruction quality on the Free Spoken Digit Dataset (FSDD).

Protocol: train on four speakers (george, jackson, lucas, nicolas), hold out
the fifth (theo: 500 clips, 50 per digit). A reconstruction is scored against
its original over the original's length with

* ``lsd_db``: log-spectral distance in dB (``jvae.terms.spectral`` when it is
  importable, else this file's numpy definition; the row says which), STFT 256
  / hop 64 at 8 kHz;
* ``agreement``: the share of held-out clips for which a log-mel digit
  classifier, trained on the training speakers' original clips, names the same
  digit for the reconstruction as for the original;
* ``snr_db``: ``10 log10(sum x^2 / sum (x - x_hat)^2)``, mean over clips.

Subcommands (each prints JSON rows, one object per line)::

    python benchmarks/fsdd_quality.py prepare --out /tmp/fsdd-split
    python benchmarks/fsdd_quality.py classifier [--compare]
    python benchmarks/fsdd_quality.py baseline --latent 20,64,128
    python benchmarks/fsdd_quality.py score --recon RUN/recon
    python benchmarks/fsdd_quality.py all --workdir /tmp/fsdd-run [--minutes 30]

``prepare`` builds ``OUT/{train,test}/<digit>/<file>.wav`` as symbolic links
into the data folder (nothing is copied), the layout ``jvae train
--data-source OUT`` reads as splits and class labels.

The classifier: 40 Slaney mel bands (librosa's default filterbank, written
here) of a 256-point STFT every 64 samples, in dB below the clip's peak
(floored at -80 dB); each band's mean over the clip removed, the bands
resampled in time to 12 frames, then the band means and standard deviations:
560 values per clip, standardised, into a ridge classifier (alpha 1000),
chosen by leave-one-speaker-out accuracy over the training speakers
(``classifier --compare`` prints every candidate).

``baseline``: a linear model of log-STFT magnitudes. Clips zero-padded or cut
to 8,192 samples, ``log(|STFT| + 1e-4)`` (256 / 64: 129 bins x 129 frames)
flattened, PCA with N components fitted on the 2,000 training clips; held-out
clips are projected and rebuilt, their magnitudes inverted with Griffin-Lim
(60 iterations, momentum 0.99, random initial phases, the same STFT), and the
signal cut to the original's length (zeros past 8,192 samples). ``all`` trains
jvae with its default settings (``--no-dashboard`` only), reconstructs the
held-out clips with ``jvae reconstruct``, scores them, and runs the baseline
at the run's latent size (elements per example, from the rebuilt model).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

DATA_DIR = "../shared/data/fsdd"
SAMPLE_RATE = 8_000
N_FFT = 256
HOP = 64
N_MELS = 40
FIXED_LENGTH = 8_192           # the baseline's clip length (samples)
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
TEST_SPEAKER = "theo"
LOG_EPS = 1e-10                # power floor of the numpy LSD (|X|^2 + eps)
MAG_EPS = 1e-4                 # magnitude floor of the baseline's log-magnitudes
POOL_FRAMES = 12               # log-mel frames after resampling each clip in time
TOP_DB = 80.0                  # log-mel dynamic range kept below each clip's peak


# --------------------------------------------------------------------------- data

def parse_name(path: str | os.PathLike) -> tuple[int, str, int]:
    """``(digit, speaker, index)`` of a ``{digit}_{speaker}_{index}.wav`` file name."""
    digit, speaker, index = Path(path).stem.split("_")
    return int(digit), speaker, int(index)


def list_clips(data_dir: str | os.PathLike) -> list[Path]:
    """The dataset's ``.wav`` files, sorted by name."""
    paths = sorted(Path(data_dir).glob("*.wav"))
    if not paths:
        raise SystemExit(f"no .wav files in {data_dir}")
    return paths


def split_clips(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``(train, test)``: the training speakers' clips and the held-out speaker's."""
    train = [p for p in paths if parse_name(p)[1] in TRAIN_SPEAKERS]
    test = [p for p in paths if parse_name(p)[1] == TEST_SPEAKER]
    return train, test


def labels_of(paths: Sequence[Path]) -> np.ndarray:
    """The spoken digit of each clip, from its file name."""
    return np.array([parse_name(p)[0] for p in paths])


def read_clip(path: str | os.PathLike) -> np.ndarray:
    """A clip as mono float32 in [-1, 1] at 8 kHz (channels averaged; soxr if stored otherwise).

    The same reading as ``jvae.datasets.audio.read_wav``, kept here so scoring
    does not import jvae.
    """
    import soundfile
    x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="VHQ")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def read_clips(paths: Sequence[Path]) -> list[np.ndarray]:
    """:func:`read_clip` of each path."""
    return [read_clip(p) for p in paths]


def prepare(data_dir: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Builds ``out/{train,test}/<digit>/<name>.wav`` as symlinks to the clips.

    Links already there and pointing at the same file are kept; anything else
    at a link's path is an error (nothing is overwritten).
    """
    train, test = split_clips(list_clips(data_dir))
    made = kept = 0
    for split, paths in (("train", train), ("test", test)):
        for src in paths:
            link = Path(out) / split / str(parse_name(src)[0]) / src.name
            target = src.resolve()
            if link.is_symlink() and Path(os.readlink(link)) == target:
                kept += 1
                continue
            if link.exists() or link.is_symlink():
                raise SystemExit(f"{link} exists and is not a link to {target}")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            made += 1
    return {"benchmark": "fsdd", "kind": "prepare", "out": str(out), "train": len(train),
            "test": len(test), "links_made": made, "links_kept": kept}


# --------------------------------------------------------------------------- STFT

def hann(n: int) -> np.ndarray:
    """The periodic Hann window of length ``n``."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)


def n_frames(length: int, hop: int = HOP) -> int:
    """Frames of a centred STFT of ``length`` samples."""
    return 1 + length // hop


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Centred STFT (zero padding of ``n_fft // 2``, periodic Hann window).

    Args:
      x: ``(..., samples)`` real signal.
    Returns:
      ``(..., n_fft // 2 + 1, frames)`` complex, ``frames = 1 + samples // hop``.
    """
    x = np.asarray(x, np.float64)
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    xp = np.pad(x, pad)
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft, axis=-1)[..., ::hop, :]
    frames = frames[..., :n_frames(x.shape[-1], hop), :]
    return np.swapaxes(np.fft.rfft(frames * hann(n_fft), axis=-1), -1, -2)


def istft(spec: np.ndarray, length: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Inverse of :func:`stft`: windowed overlap-add over the window's squared sum.

    Args:
      spec: ``(..., n_fft // 2 + 1, frames)`` complex.
      length: samples of the signal to return.
    """
    win = hann(n_fft)
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * win
    t = frames.shape[-2]
    total = n_fft + hop * (t - 1)
    out = np.zeros(frames.shape[:-2] + (total,))
    norm = np.zeros(total)
    for i in range(t):                       # ~130 frames: a loop of vector adds
        out[..., i * hop:i * hop + n_fft] += frames[..., i, :]
        norm[i * hop:i * hop + n_fft] += win ** 2
    out = out / np.where(norm > 1e-8, norm, 1.0)
    out = out[..., n_fft // 2:]
    short = length - out.shape[-1]
    if short > 0:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, short)])
    return out[..., :length]


def griffin_lim(mag: np.ndarray, length: int, n_iter: int = 60, momentum: float = 0.99,
                seed: int = 0) -> np.ndarray:
    """A signal whose STFT magnitude approximates ``mag`` (fast Griffin-Lim).

    Alternates projections between consistent spectrograms and the given
    magnitude, with the momentum step of Perraudin et al. (2013); starts from
    uniformly random phases.

    Args:
      mag: ``(..., bins, frames)`` non-negative magnitudes.
      length: samples of the returned signal(s).
    """
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(mag.shape))
    prev = np.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(mag * angles, length))
        angles = rebuilt - (momentum / (1 + momentum)) * prev
        angles = angles / np.maximum(np.abs(angles), 1e-16)
        prev = rebuilt
    return istft(mag * angles, length)


# --------------------------------------------------------------------------- mel

def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / step,
                    f / (200.0 / 3))


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, np.float64)
    step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(step * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters on the Slaney mel scale.

    Band edges are equally spaced in mel from ``fmin`` to ``fmax`` (default
    Nyquist); each triangle is scaled by ``2 / bandwidth`` in Hz (Slaney's
    area normalisation), which is librosa's default ``filters.mel``.
    """
    fmax = sr / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    rising = (freqs[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - freqs[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def log_mel(x: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """``(n_mels, frames)`` log-mel power in dB below the clip's peak, floored at -80 dB."""
    power = np.abs(stft(x)) ** 2
    db = 10.0 * np.log10(np.maximum(fb @ power, 1e-10))
    return np.maximum(db - db.max(), -TOP_DB)


def pool(mel_db: np.ndarray, frames: int = POOL_FRAMES) -> np.ndarray:
    """A fixed-size vector: the band-mean-removed log-mel at ``frames`` frames, band means, stds.

    Each band's mean over the clip is subtracted (cepstral mean normalisation
    in the mel domain: a fixed colouring of the spectrum cancels), then the
    bands are resampled in time by linear interpolation, so clips of any
    length map to the same shape and keep the order of their sounds. The
    band means and standard deviations follow (``n_mels * (frames + 2)`` values).
    """
    t = mel_db.shape[1]
    mean = mel_db.mean(1)
    grid = np.linspace(0, t - 1, frames)
    resampled = np.stack([np.interp(grid, np.arange(t), band) for band in mel_db - mean[:, None]])
    return np.concatenate([resampled.ravel(), mean, mel_db.std(1)])


def features(clips: Iterable[np.ndarray]) -> np.ndarray:
    """``(clips, dims)`` pooled log-mel features."""
    fb = mel_filterbank()
    return np.stack([pool(log_mel(c, fb)) for c in clips]).astype(np.float32)


# --------------------------------------------------------------------------- classifier

def classifier_candidates() -> dict[str, Callable[[], object]]:
    """Scikit-learn pipelines tried for the digit classifier (name -> factory)."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    ridge = {f"ridge_a{a}": (lambda a=a: make_pipeline(StandardScaler(), RidgeClassifier(alpha=a)))
             for a in (300, 1000, 3000, 10000)}
    svm = {f"svm_rbf_C{c}": (lambda c=c: make_pipeline(StandardScaler(), SVC(C=c)))
           for c in (1, 10)}
    return {**ridge, **svm}


# Chosen by leave-one-speaker-out accuracy over the four training speakers
# (``classifier --compare``), not by the held-out speaker.
CLASSIFIER = "ridge_a1000"


def speaker_cv(name: str, feats: np.ndarray, labels: np.ndarray,
               speakers: np.ndarray) -> float:
    """Leave-one-speaker-out accuracy of candidate ``name`` over the training speakers."""
    make = classifier_candidates()[name]
    right = 0
    for s in np.unique(speakers):
        held = speakers == s
        right += int((make().fit(feats[~held], labels[~held]).predict(feats[held])
                      == labels[held]).sum())
    return right / len(labels)


def train_classifier(train_paths: Sequence[Path], name: str = CLASSIFIER):
    """The digit classifier fitted on the training speakers' original clips."""
    feats = features(read_clips(train_paths))
    return classifier_candidates()[name]().fit(feats, labels_of(train_paths))


def predict(clf, clips: Sequence[np.ndarray]) -> np.ndarray:
    """Digits the classifier names for each clip."""
    return clf.predict(features(clips))


# --------------------------------------------------------------------------- metrics

def lsd_numpy(x: np.ndarray, x_hat: np.ndarray, n_fft: int = N_FFT, hop: int = HOP,
              eps: float = LOG_EPS) -> float:
    """Log-spectral distance (dB): mean over frames of the RMS over bins of the dB difference."""
    a = 10.0 * np.log10(np.abs(stft(x, n_fft, hop)) ** 2 + eps)
    b = 10.0 * np.log10(np.abs(stft(x_hat, n_fft, hop)) ** 2 + eps)
    return float(np.mean(np.sqrt(np.mean((a - b) ** 2, axis=-2)), axis=-1))


def jvae_lsd() -> tuple[Callable | None, str]:
    """``(jvae.terms.spectral.log_spectral_distance, "")``, or ``(None, why not)``."""
    try:
        from jvae.terms.spectral import log_spectral_distance
    except Exception as e:  # noqa: BLE001 - a jvae mid-edit must not stop the scoring
        return None, f"{type(e).__name__}: {e}"
    return log_spectral_distance, ""


def pad_batch(clips: Sequence[np.ndarray], multiple: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(clips, valid)``: zero-padded to a common length (a multiple of ``multiple``)."""
    length = -(-max(len(c) for c in clips) // multiple) * multiple
    batch = np.zeros((len(clips), length), np.float32)
    valid = np.zeros((len(clips), length), np.float32)
    for i, c in enumerate(clips):
        batch[i, :len(c)], valid[i, :len(c)] = c, 1.0
    return batch, valid


def lsd_scores(originals: Sequence[np.ndarray], recons: Sequence[np.ndarray],
               chunk: int = 100) -> tuple[np.ndarray, str]:
    """Per-clip LSD (dB) over each original's length, and which definition gave it.

    Uses jvae's metric (``jvae.terms.spectral.log_spectral_distance``, STFT
    256 / hop 64, passed explicitly) when it can be imported: clips padded to
    a common length, with the ``valid`` mask that makes each value the value
    of the unpadded clip. Otherwise :func:`lsd_numpy`, the same formula.
    """
    fn, why = jvae_lsd()
    if fn is None:
        return (np.array([lsd_numpy(x, y) for x, y in zip(originals, recons)]),
                f"numpy fallback (this file; jvae's not importable: {why}), "
                f"eps {LOG_EPS:g}, n_fft {N_FFT}, hop {HOP}")
    out = []
    for i in range(0, len(originals), chunk):
        x, valid = pad_batch(originals[i:i + chunk])
        y, _ = pad_batch([fit_length(r, len(o)) for o, r in
                          zip(originals[i:i + chunk], recons[i:i + chunk])])
        out.append(np.asarray(fn(x, y, valid, n_fft=N_FFT, hop_length=HOP)))
    return (np.concatenate(out).astype(np.float64),
            f"jvae.terms.spectral.log_spectral_distance, n_fft {N_FFT}, hop {HOP}")


def snr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    """``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB (as ``jvae.datasets.audio.snr_db``)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return float(10 * np.log10(np.sum(x ** 2) / max(np.sum((x - x_hat) ** 2), 1e-30)))


def snr_scores(originals: Sequence[np.ndarray], recons: Sequence[np.ndarray]) -> np.ndarray:
    """Per-clip SNR in dB."""
    return np.array([snr_db(x, y) for x, y in zip(originals, recons)])


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``length`` samples."""
    x = np.asarray(x, np.float32)[:length]
    return np.pad(x, (0, length - len(x)))


def score_row(clf, test_paths: Sequence[Path], originals: Sequence[np.ndarray],
              recons: Sequence[np.ndarray]) -> dict:
    """The metrics of reconstructions against their originals (same order)."""
    recons = [np.clip(fit_length(r, len(x)), -1, 1) for x, r in zip(originals, recons)]
    lsd, lsd_def = lsd_scores(originals, recons)
    snr = snr_scores(originals, recons)
    pred_x, pred_r = predict(clf, originals), predict(clf, recons)
    truth = labels_of(test_paths)
    return {"clips": len(recons), "lsd_db": round(float(lsd.mean()), 3),
            "lsd_db_median": round(float(np.median(lsd)), 3),
            "agreement": round(float((pred_x == pred_r).mean()), 4),
            "recon_accuracy": round(float((pred_r == truth).mean()), 4),
            "original_accuracy": round(float((pred_x == truth).mean()), 4),
            "snr_db": round(float(snr.mean()), 3),
            "snr_db_median": round(float(np.median(snr)), 3),
            "lsd_definition": lsd_def, "classifier": CLASSIFIER}


# --------------------------------------------------------------------------- baseline

def log_magnitudes(clips: Sequence[np.ndarray]) -> np.ndarray:
    """``(clips, bins * frames)``: log(|STFT| + eps) of each clip at the fixed length."""
    batch = np.stack([fit_length(c, FIXED_LENGTH) for c in clips])
    return np.log(np.abs(stft(batch)) + MAG_EPS).reshape(len(clips), -1).astype(np.float32)


def pca_fit(train_logmag: np.ndarray, n_max: int):
    """Exact PCA (full SVD) with ``n_max`` components; fewer components are its leading rows."""
    from sklearn.decomposition import PCA
    return PCA(n_components=n_max, svd_solver="full").fit(train_logmag)


def pca_reconstruct(pca, logmag: np.ndarray, n: int) -> np.ndarray:
    """Projection of ``logmag`` on the ``n`` leading components, back in the input space."""
    comps = pca.components_[:n]
    codes = (logmag - pca.mean_) @ comps.T
    return codes @ comps + pca.mean_


def baseline_recons(pca, test_clips: Sequence[np.ndarray], n: int,
                    n_iter: int = 60) -> list[np.ndarray]:
    """Held-out clips through PCA(n) of log-magnitudes and Griffin-Lim, at their own length."""
    logmag = pca_reconstruct(pca, log_magnitudes(test_clips), n)
    bins = N_FFT // 2 + 1
    mag = np.maximum(np.exp(logmag.reshape(len(test_clips), bins, -1)) - MAG_EPS, 0.0)
    audio = griffin_lim(mag, FIXED_LENGTH, n_iter=n_iter)
    return [fit_length(a, len(c)) for a, c in zip(audio, test_clips)]


# --------------------------------------------------------------------------- commands

def env_fields() -> dict:
    """Load average, for rows timed on a shared machine."""
    return {"load_avg_1m": round(os.getloadavg()[0], 2)}


def cmd_prepare(args) -> Iterator[dict]:
    """The symlinked split folder."""
    yield prepare(args.data, args.out)


def cmd_classifier(args) -> Iterator[dict]:
    """Held-out accuracy of the classifier on original clips (with --compare, every candidate)."""
    t0 = time.perf_counter()
    train, test = split_clips(list_clips(args.data))
    xtr, xte = features(read_clips(train)), features(read_clips(test))
    ytr, yte = labels_of(train), labels_of(test)
    speakers = np.array([parse_name(p)[1] for p in train])
    t_feat = time.perf_counter() - t0
    for name in (list(classifier_candidates()) if args.compare else [CLASSIFIER]):
        t1 = time.perf_counter()
        clf = classifier_candidates()[name]().fit(xtr, ytr)
        row = {"benchmark": "fsdd", "kind": "classifier", "classifier": name,
               "chosen": name == CLASSIFIER,
               "features": f"log-mel {N_MELS} (Slaney), STFT {N_FFT}/{HOP}, "
                           f"band means removed, {POOL_FRAMES} frames + band means + stds",
               "train_clips": len(train), "test_clips": len(test),
               "test_accuracy": round(float((clf.predict(xte) == yte).mean()), 4)}
        if args.compare:
            row["speaker_cv_accuracy"] = round(speaker_cv(name, xtr, ytr, speakers), 4)
        row.update(features_seconds=round(t_feat, 1),
                   seconds=round(time.perf_counter() - t1, 1), **env_fields())
        yield row


def baseline_rows(data: str, sizes: Sequence[int], gl_iters: int) -> Iterator[dict]:
    """One row per latent size N: PCA(N) of log-magnitudes + Griffin-Lim, scored.

    N above the number of training clips (the most components PCA has) is
    cut to it, and the row says so.
    """
    t0 = time.perf_counter()
    train, test = split_clips(list_clips(data))
    train_clips, test_clips = read_clips(train), read_clips(test)
    clf = classifier_candidates()[CLASSIFIER]().fit(features(train_clips), labels_of(train))
    fitted = [min(n, len(train)) for n in sizes]
    pca = pca_fit(log_magnitudes(train_clips), max(fitted))
    t_fit = time.perf_counter() - t0
    for asked, n in zip(sizes, fitted):
        t1 = time.perf_counter()
        recons = baseline_recons(pca, test_clips, n, n_iter=gl_iters)
        row = {"benchmark": "fsdd", "kind": "baseline", "model": f"pca{n}+griffin-lim",
               "latent": n, "latent_asked": asked, "gl_iters": gl_iters,
               "fixed_length": FIXED_LENGTH,
               "explained_variance": round(float(pca.explained_variance_ratio_[:n].sum()), 4)}
        row.update(score_row(clf, test, test_clips, recons))
        row.update(fit_seconds=round(t_fit, 1), seconds=round(time.perf_counter() - t1, 1),
                   **env_fields())
        yield row


def cmd_baseline(args) -> Iterator[dict]:
    """The baseline at each ``--latent`` size."""
    yield from baseline_rows(args.data, [int(n) for n in str(args.latent).split(",")],
                             args.gl_iters)


def find_recons(recon_dir: str | os.PathLike, names: Sequence[str]) -> dict[str, Path]:
    """``name -> path`` of the reconstructions under ``recon_dir`` (any depth).

    Raises SystemExit naming the missing files, or a name found twice.
    """
    if not Path(recon_dir).is_dir():
        raise SystemExit(f"no folder {recon_dir}")
    found: dict[str, Path] = {}
    for p in sorted(Path(recon_dir).rglob("*.wav")):
        if p.name in found:
            raise SystemExit(f"{p.name} appears twice under {recon_dir}: {found[p.name]}, {p}")
        found[p.name] = p
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(names)} held-out reconstructions missing "
                         f"under {recon_dir}, e.g. {', '.join(missing[:5])}")
    return {n: found[n] for n in names}


def score_folder(data: str, recon_dir: str) -> dict:
    """The metrics row of a folder of reconstructed held-out clips.

    Reconstructions are read at 8 kHz (resampled if written at another rate),
    then cut or zero-padded to the original's length; ``length_mismatches``
    counts the files that needed it.
    """
    t0 = time.perf_counter()
    train, test = split_clips(list_clips(data))
    paths = find_recons(recon_dir, [p.name for p in test])
    originals = read_clips(test)
    recons = [read_clip(paths[p.name]) for p in test]
    mismatched = sum(len(r) != len(x) for x, r in zip(originals, recons))
    clf = train_classifier(train)
    row = {"benchmark": "fsdd", "kind": "score", "recon": str(recon_dir),
           "length_mismatches": mismatched}
    row.update(score_row(clf, test, originals, recons))
    row.update(seconds=round(time.perf_counter() - t0, 1), **env_fields())
    return row


def cmd_score(args) -> Iterator[dict]:
    """Scores ``--recon`` against the held-out originals."""
    yield score_folder(args.data, args.recon)


def run_timed(cmd: list[str], limit_s: float | None) -> tuple[int, float, bool]:
    """Runs ``cmd``; past ``limit_s`` sends SIGTERM (jvae checkpoints and stops).

    Returns ``(exit status, seconds, stopped)``.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    stopped = False
    try:
        proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        stopped = True
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    return proc.returncode, time.perf_counter() - t0, stopped


def run_latent(workdir: str | os.PathLike) -> dict:
    """The latent of a trained run: per-example shape and size, from its rebuilt model.

    Falls back to ``latent_dim`` of its ``config.json`` when jvae cannot
    rebuild the model (the row's ``latent_source`` says which).
    """
    try:
        from jvae.app.runs import load_data_with_info, saved_config
        from jvae.training.experiment import DataSpec, build
        cfg = saved_config(workdir)
        train, _, info = load_data_with_info(cfg, lazy=True)
        shape = tuple(build(cfg, DataSpec.of(train, info.get("sample_rate"))).vae.latent_shape)
        return {"latent_shape": list(shape), "latent": int(np.prod(shape)),
                "latent_source": "rebuilt model", "chunk_size": info.get("chunk_size")}
    except Exception as e:  # noqa: BLE001 - any failure falls back to the saved setting
        dim = int(json.loads((Path(workdir) / "config.json").read_text())["latent_dim"])
        return {"latent": dim, "latent_source": f"config.json latent_dim ({type(e).__name__}: {e})"}


def cmd_all(args) -> Iterator[dict]:
    """Train jvae with default settings, reconstruct, score, and run the baseline."""
    work = Path(args.workdir)
    split = Path(args.split_dir) if args.split_dir else work.parent / f"{work.name}-split"
    yield prepare(args.data, split)
    jvae = [sys.executable, "-m", "jvae"]
    limit = args.minutes * 60 if args.minutes else None
    train_cmd = jvae + ["train", "--data-source", str(split), "--workdir", str(work),
                        "--no-dashboard"]
    rc, secs, stopped = run_timed(train_cmd, limit)
    yield {"benchmark": "fsdd", "kind": "train", "command": " ".join(train_cmd[1:]),
           "exit": rc, "seconds": round(secs, 1), "stopped_at_limit": stopped,
           "minutes_limit": args.minutes, **env_fields()}
    if rc != 0 and not stopped:
        raise SystemExit(f"jvae train exited with status {rc}")
    recon = work / "recon"
    t0 = time.perf_counter()
    rec_cmd = jvae + ["reconstruct", "--workdir", str(work), "--input", str(split / "test"),
                      "--output", str(recon)]
    rc = subprocess.run(rec_cmd).returncode
    yield {"benchmark": "fsdd", "kind": "reconstruct", "command": " ".join(rec_cmd[1:]),
           "exit": rc, "seconds": round(time.perf_counter() - t0, 1)}
    if rc != 0:
        raise SystemExit(f"jvae reconstruct exited with status {rc}")
    latent = run_latent(work)
    row = score_folder(args.data, str(recon))
    row.update(model="jvae (default settings)", train_seconds=round(secs, 1), **latent)
    yield row
    sizes = [int(n) for n in str(args.latent).split(",")] if args.latent else [latent["latent"]]
    yield from baseline_rows(args.data, sizes, args.gl_iters)


def build_parser() -> argparse.ArgumentParser:
    """The command line: prepare, classifier, baseline, score, all."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=DATA_DIR, help="FSDD folder (default %(default)s)")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("prepare", parents=[common], help="symlinked train/test/<digit>/ folders")
    s.add_argument("--out", required=True)
    s = sub.add_parser("classifier", parents=[common],
                       help="the digit classifier's accuracy on original held-out clips")
    s.add_argument("--compare", action="store_true",
                   help="every candidate, with leave-one-speaker-out accuracy")
    s = sub.add_parser("baseline", parents=[common], help="PCA of log-magnitudes + Griffin-Lim")
    s.add_argument("--latent", default="64", help="components, comma-separated (64)")
    s.add_argument("--gl-iters", type=int, default=60)
    s = sub.add_parser("score", parents=[common],
                       help="score a folder of reconstructed held-out clips")
    s.add_argument("--recon", required=True)
    s = sub.add_parser("all", parents=[common],
                       help="train jvae (defaults), reconstruct, score, baseline")
    s.add_argument("--workdir", required=True)
    s.add_argument("--minutes", type=float, default=0,
                   help="stop training (SIGTERM: jvae checkpoints) after this long; 0: no limit")
    s.add_argument("--split-dir", default=None,
                   help="symlink folder (default: WORKDIR-split beside the workdir)")
    s.add_argument("--latent", default=None,
                   help="baseline sizes, comma-separated (default: the run's latent size)")
    s.add_argument("--gl-iters", type=int, default=60)
    return p


COMMANDS = {"prepare": cmd_prepare, "classifier": cmd_classifier, "baseline": cmd_baseline,
            "score": cmd_score, "all": cmd_all}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    for row in COMMANDS[args.command](args):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
