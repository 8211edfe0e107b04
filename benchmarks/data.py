"""Data benchmarks: the built-in digits, an image folder, the input pipeline, an audio folder.

Each subcommand builds its data offline, runs, and prints JSON rows::

    python -m benchmarks.data digits                 # the README's first command
    python -m benchmarks.data folder --epochs 6      # photo crops, conv VAE, logistic mixture
    python -m benchmarks.data pipeline --num-images 10000
    python -m benchmarks.data audio --epochs 8       # tones and chirps, 1-D conv VAE
    python -m benchmarks.data stream --epochs 3      # streamed training vs the model's step rate

Scratch data goes under ``--scratch`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _emit(row: dict) -> None:
    import jax
    row = {**row, "backend": jax.default_backend(), "devices": jax.device_count(),
           "load_avg_1m": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}
    print(json.dumps(row), flush=True)


def digits(args) -> None:
    """``python -m jvae.train --dataset=digits`` with its defaults, timed in-process."""
    from jvae.app.config import make_config
    from jvae.train import train_and_evaluate
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        row = train_and_evaluate(make_config({"dataset": "digits"}), work, quiet=True)
    _emit({"benchmark": "digits", "epochs": row["epoch"], "test_neg_elbo": round(row["neg_elbo"], 3),
           "test_recon": round(row["recon"], 3), "test_kl": round(row["kl"], 3),
           "seconds_in_process": round(time.perf_counter() - t0, 1)})


def _photos() -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled photographs (no network), as RGB uint8."""
    import skimage.data as d
    names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
             "immunohistochemistry", "retina", "colorwheel", "camera", "moon", "brick", "grass"]
    out = []
    for n in names:
        im = getattr(d, n)()
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        out.append((n, im[..., :3].astype(np.uint8)))
    return out


def make_photo_folder(root: Path, per_class: int, seed: int = 0) -> int:
    """Random square crops (32 to 160 px) of each photo, PNG and JPEG, one class folder each."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    count = 0
    for name, im in _photos():
        (root / name).mkdir(parents=True, exist_ok=True)
        h, w = im.shape[:2]
        for i in range(per_class):
            s = int(rng.integers(32, min(160, h, w) + 1))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = Image.fromarray(im[y:y + s, x:x + s])
            if i % 2:
                crop.save(root / name / f"{i:04d}.png")
            else:
                crop.save(root / name / f"{i:04d}.jpg", quality=90)
            count += 1
    return count


def folder(args) -> None:
    """Conv VAE at 32x32x3 with the logistic mixture on a folder of photo crops."""
    from jvae.app.config import make_config
    from jvae.train import train_and_evaluate
    scratch = Path(args.scratch)
    root = scratch / "photo_crops"
    n = make_photo_folder(root, args.per_class) if not root.exists() else None
    os.environ.setdefault("JVAE_DATA_DIR", str(scratch / "home"))
    work = scratch / "run_folder"
    cfg = make_config({"data_source": str(root), "image_size": "32", "channels": 3,
                       "net": "conv", "likelihood": "logistic_mixture", "epochs": args.epochs,
                       "batch_size": 64, "eval_batch_size": 200, "latent_dim": 32,
                       "hidden": (256,), "lr": args.lr})
    t0 = time.perf_counter()
    row = train_and_evaluate(cfg, work, quiet=True)
    dims = 32 * 32 * 3
    _emit({"benchmark": "image_folder", "files": n, "classes": len(_photos()), "lr": args.lr,
           "epochs": row["epoch"], "test_neg_elbo": round(row["neg_elbo"], 2),
           "test_bits_per_dim": round(row["neg_elbo"] / (dims * math.log(2)), 3),
           "images_per_sec": round(row["images_per_sec"]), "seconds": round(time.perf_counter() - t0, 1),
           "grids": str(work / "images")})


def _synthetic_jpegs(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 640x480 JPEGs (1,000 distinct, the rest copies): smooth colour fields, shapes
    and grain, so decoding costs what a photo's does."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, ImageDraw
    root.mkdir(parents=True, exist_ok=True)

    def one(i):
        rng = np.random.default_rng([seed, i])
        field = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        im = Image.fromarray(field).resize((640, 480), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, 600)), int(rng.integers(0, 440))
            draw.ellipse([x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        arr = np.asarray(im, np.int16) + rng.integers(-8, 9, (480, 640, 1), dtype=np.int16)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg", quality=85)

    distinct = min(n, 1000)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(distinct)))
    # Copies under new names stand in for the rest: the same decode work per
    # file, a tenth of the generation time.
    import shutil
    for i in range(distinct, n):
        shutil.copyfile(root / f"{i % distinct:05d}.jpg", root / f"{i:05d}.jpg")


def pipeline(args) -> None:
    """Images/s of the cache build (1 thread, all threads), later epochs, and the model step."""
    import shutil

    import jax

    from jvae.datasets.cache import cached_decode, decode_all
    from jvae.datasets.images import IMAGE_SUFFIXES, index_folder
    scratch = Path(args.scratch)
    root = scratch / f"jpegs_{args.num_images}"
    if not root.exists():
        t0 = time.perf_counter()
        _synthetic_jpegs(root, args.num_images)
        print(f"# wrote {args.num_images} JPEGs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    index = index_folder(root, IMAGE_SUFFIXES)
    paths = [root / f for f in index.files]
    size = (64, 64)
    sub = paths[:min(len(paths), args.draft_sample)]
    for draft in (True, False):  # the JPEG draft mode's share, on a sample, one thread
        from jvae.datasets import images as images_lib
        decode = images_lib.decode_image if draft else _decode_without_draft
        t0 = time.perf_counter()
        decode_all(sub, size, 3, workers=1, progress=False, decode=decode)
        _emit({"benchmark": "pipeline", "stage": "decode_resize", "draft": draft, "threads": 1,
               "images": len(sub), "images_per_sec": round(len(sub) / (time.perf_counter() - t0))})
    for threads in (1, os.cpu_count()):
        cache = scratch / f"cache_t{threads}"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        data, ok, _ = cached_decode(root, index.files, size, 3, cache_dir=cache, workers=threads,
                                    progress=False)
        dt = time.perf_counter() - t0
        _emit({"benchmark": "pipeline", "stage": "cache_build", "threads": threads,
               "images": len(ok), "images_per_sec": round(len(ok) / dt), "seconds": round(dt, 1)})
    # Later epochs: shuffled batches of 128 gathered from the memmap, as floats.
    t0 = time.perf_counter()
    data, _, _ = cached_decode(root, index.files, size, 3, cache_dir=cache, progress=False)
    reopen = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    t0 = time.perf_counter()
    for i in range(0, len(order) - 127, 128):
        idx = np.sort(order[i:i + 128])
        batch = data[idx].astype(np.float32) / 255.0
    dt = time.perf_counter() - t0
    _emit({"benchmark": "pipeline", "stage": "cached_epoch", "loader": "memmap_gather",
           "images_per_sec": round(len(order) // 128 * 128 / dt), "reopen_s": round(reopen, 3)})
    for workers in args.workers:
        out = _grain_epoch(data, workers)
        if out is not None:
            _emit({"benchmark": "pipeline", "stage": "cached_epoch", "loader": "grain",
                   "workers": workers, "images_per_sec": round(out[0]),
                   "first_batch_s": round(out[1], 2)})
    # Without a cache: every epoch decodes, in the loader's threads or workers.
    from jvae.datasets.stream import ImageFiles
    files = ImageFiles(sub, size, 3)
    for workers in args.workers:
        out = _grain_epoch(files, workers)
        if out is not None:
            _emit({"benchmark": "pipeline", "stage": "uncached_epoch", "loader": "grain",
                   "images": len(sub), "workers": workers, "images_per_sec": round(out[0]),
                   "first_batch_s": round(out[1], 2)})
    _emit({"benchmark": "pipeline", "stage": "model_step", "model": "conv VAE 64x64x3",
           "batch": 128, "images_per_sec": round(_model_rate(batch, args.steps))})
    del jax


def _decode_without_draft(path, size, channels):
    from PIL import Image

    from jvae.datasets.images import fit_array
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
    return fit_array(np.asarray(im), size)


def _grain_epoch(data: np.ndarray, workers: int) -> tuple[float, float] | None:
    try:
        from jvae.datasets.stream import make_loader
    except ImportError:
        return None
    loader = make_loader(data, np.zeros(len(data), np.int32), np.arange(len(data)),
                         batch_size=128, seed=0, epoch=0, workers=workers)
    t0 = time.perf_counter()
    n = len(next(loader)["image"])
    first = time.perf_counter() - t0  # includes starting the worker processes
    t1 = time.perf_counter()
    for batch in loader:
        n += len(batch["image"])
    return (n - 128) / (time.perf_counter() - t1), first


def _model_rate(batch: np.ndarray, steps: int, settings: dict | None = None) -> float:
    """Training images/s of a model (default: the conv VAE) on one device-resident batch
    (jvae's own step, no input pipeline)."""
    import jax

    from jvae.app.config import make_config
    from jvae.devices.parallel import data_mesh, replicate, shard_batch
    from jvae.train_state import make_train_step
    from jvae.training.experiment import DataSpec, build, init_state
    cfg = make_config(settings or {"net": "conv", "likelihood": "gaussian", "latent_dim": 32,
                                   "hidden": (256,)})
    experiment = build(cfg, DataSpec(tuple(batch.shape[1:])))
    mesh = data_mesh(1)
    state = replicate(init_state(experiment, jax.random.key(0), {"image": batch}), mesh)
    step = make_train_step(experiment.objective, experiment.optimizer, mesh=mesh)
    b = shard_batch({"image": batch, "mask": np.ones(len(batch), np.float32)}, mesh)
    for _ in range(3):  # compile and warm up
        state, m = step(state, b)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, b)
    jax.block_until_ready(m)
    return steps * len(batch) / (time.perf_counter() - t0)


def make_audio_folder(root: Path, seed: int = 0) -> int:
    """Tones and chirps at 8, 16, 22.05 and 44.1 kHz, 8/16/24-bit PCM and float, two classes."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    rates = (8000, 16000, 22050, 44100)
    subtypes = ("PCM_U8", "PCM_16", "PCM_24", "FLOAT")
    count = 0
    for kind in ("tone", "chirp"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            rate, subtype = rates[i % 4], subtypes[(i // 4 + i) % 4]
            t = np.arange(int(rng.uniform(2.0, 4.0) * rate)) / rate
            f0 = rng.uniform(110, 880)
            if kind == "tone":
                x = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t)
            else:
                f1 = rng.uniform(110, 2000)
                x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
            sf.write(root / kind / f"{i:02d}.wav", (0.5 * x / np.abs(x).max()).astype(np.float32),
                     rate, subtype=subtype)
            count += 1
    return count


def audio(args) -> None:
    """A 1-D conv VAE on chunks of the synthesized folder; test -ELBO per chunk and SNR."""
    import jax.numpy as jnp

    from jvae.app.config import make_config
    from jvae.app.runs import restore_run
    from jvae.datasets.audio import snr_db
    from jvae.inference import make_reconstructor
    from jvae.train import train_and_evaluate
    scratch = Path(args.scratch)
    root = scratch / "tones"
    files = make_audio_folder(root) if not root.exists() else None
    work = scratch / "run_audio"
    # A fixed, small observation scale: a learned one first explains the
    # signal as noise (reconstructions near silence) and leaves it there.
    cfg = make_config({"data_source": str(root), "sample_rate": 16000,
                       "chunk_size": args.chunk_size, "test_fraction": 0.2, "net": "conv",
                       "likelihood": "gaussian", "gaussian_scale": 0.05,
                       "epochs": args.epochs, "batch_size": 32, "eval_batch_size": 32,
                       "latent_dim": 32, "hidden": (256,), "lr": 1e-3})
    t0 = time.perf_counter()
    row = train_and_evaluate(cfg, work, quiet=True)
    seconds = time.perf_counter() - t0
    run = restore_run(work)
    train, test = run.train, run.test
    recon = np.asarray(make_reconstructor(run.experiment.vae)(
        run.state.params, jnp.asarray(test["image"]), None))
    snrs = [snr_db(x, r) for x, r in zip(test["image"], recon)]
    _emit({"benchmark": "audio_folder", "files": files, "sample_rate": 16000,
           "chunk_size": args.chunk_size, "likelihood": "gaussian(scale=0.05)",
           "train_chunks": len(train["image"]), "test_chunks": len(test["image"]),
           "epochs": row["epoch"], "test_neg_elbo_per_chunk": round(row["neg_elbo"], 1),
           "recon_snr_db_mean": round(float(np.mean(snrs)), 2),
           "recon_snr_db_median": round(float(np.median(snrs)), 2),
           "seconds": round(seconds, 1), "outputs": str(work / "audio")})


def stream(args) -> None:
    """Streamed training (``--data-placement stream``) from a cached folder of photo crops,
    with 0 and N loader workers, beside the loader alone and the model's step alone."""
    import shutil

    from jvae.app.config import make_config
    from jvae.datasets.folders import load_folder
    from jvae.datasets.stream import Feed
    from jvae.train import train_and_evaluate
    scratch = Path(args.scratch)
    root = scratch / "photo_crops"
    files = make_photo_folder(root, args.per_class) if not root.exists() else None
    os.environ.setdefault("JVAE_DATA_DIR", str(scratch / "home"))
    size = args.image_size
    t0 = time.perf_counter()
    folder = load_folder(root, image_size=size, channels=3, lazy=True, progress=False)
    build_s = time.perf_counter() - t0
    split = folder.split("train", lazy=True)
    n = len(split["image"])
    _emit({"benchmark": "stream", "stage": "cache_build", "files": files or folder.info["num_files"],
           "train_images": n, "image_size": size, "images_per_sec": round(n / build_s),
           "seconds": round(build_s, 1)})
    settings = {"data_source": str(root), "image_size": str(size), "channels": 3,
                "net": args.net, "likelihood": "gaussian", "latent_dim": 32, "hidden": (256,),
                "batch_size": args.batch_size, "eval_batch_size": 500, "epochs": args.epochs,
                "dashboard": False, "tensorboard": False, "checkpoint_every": "epoch"}
    for workers in args.workers:  # the input pipeline alone, six epochs, nothing trains
        feed = Feed({"image": split["image"].floats()}, batch_size=args.batch_size, seed=0,
                    workers=workers)
        t0 = time.perf_counter()
        batches = feed.epoch_batches(0)
        next(batches)
        first = time.perf_counter() - t0  # with workers: spawning them, each importing jax
        for _ in batches:  # the rest of the first epoch: every worker up
            pass
        t1 = time.perf_counter()
        count = sum(1 for e in range(1, 6) for _ in feed.epoch_batches(e))
        feed.close()
        _emit({"benchmark": "stream", "stage": "loader_only", "workers": workers,
               "epochs_timed": 5,
               "images_per_sec": round(count * args.batch_size / (time.perf_counter() - t1)),
               "first_batch_s": round(first, 2), "first_epoch_s": round(t1 - t0, 2)})
    batch = split["image"].floats()[:args.batch_size]
    model = _model_rate(batch, args.steps, {k: settings[k] for k in (
        "net", "likelihood", "latent_dim", "hidden")})
    _emit({"benchmark": "stream", "stage": "model_step", "net": args.net,
           "batch": args.batch_size, "images_per_sec": round(model)})
    for placement, workers in [("host", 0)] + [("stream", w) for w in args.workers]:
        cfg = make_config({**settings, "data_placement": placement, "loader_workers": workers})
        rows = []

        class Rows:
            def on_epoch(self, row, params):
                rows.append(row)

        work = scratch / f"run_{args.net}_{placement}_{workers}"
        shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
        train_and_evaluate(cfg, work, quiet=True, hooks=[Rows()])
        later = float(np.median([r["images_per_sec"] for r in rows[1:] or rows]))
        _emit({"benchmark": "stream", "stage": "training", "placement": placement,
               "workers": workers, "net": args.net, "batch": args.batch_size,
               "epochs": len(rows), "first_epoch_images_per_sec": round(rows[0]["images_per_sec"]),
               "later_epochs_images_per_sec": round(later),
               "model_step_images_per_sec": round(model),
               "input_wait_share": round(max(0.0, 1 - later / model), 3),
               "test_neg_elbo": round(rows[-1]["neg_elbo"], 1)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("digits", "folder", "pipeline", "audio", "stream"))
    p.add_argument("--scratch", default=None, help="folder for generated data and runs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=250, help="folder, stream: crops per photo")
    p.add_argument("--image-size", type=int, default=32, help="stream: image side")
    p.add_argument("--batch-size", type=int, default=64, help="stream: batch size")
    p.add_argument("--net", default="conv", help="stream: conv or mlp")
    p.add_argument("--num-images", type=int, default=10_000, help="pipeline: JPEGs")
    p.add_argument("--draft-sample", type=int, default=1000,
                   help="pipeline: files for draft on/off and the uncached epochs")
    p.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 2],
                   help="pipeline, stream: grain worker counts")
    p.add_argument("--steps", type=int, default=20, help="pipeline, stream: timed model steps")
    p.add_argument("--chunk-size", type=int, default=1024, help="audio: samples per chunk")
    p.add_argument("--lr", type=float, default=2e-3, help="folder: learning rate")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.scratch = args.scratch or tmp
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
        globals()[args.what](args)


if __name__ == "__main__":
    main()
