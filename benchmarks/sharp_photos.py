"""Sharp reconstructions of real photos: L2 against latent diffusion's L1 + PatchGAN recipe.

The folder: square crops (48 px by default) at the photos' own resolution of
the twelve photographs scikit-image ships (``benchmarks.data``'s list; no
download), 40 training and 8 test crops from random positions in each, written
as PNGs. The model: a small convolutional autoencoder with a spatial latent at
1/4 resolution and 4 channels (Stable Diffusion's layout, 3x3 convolutions and
SiLUs, no attention; ``posterior_scale=logvar``), the same for every objective.
Every objective trains for the same number of steps (``--steps``, batch 8,
Adam 1e-3 as ``jvae train``), through :func:`jvae.train.train_and_evaluate`:

* ``l2``: the Gaussian likelihood (MSE), ``--beta 1e-6``;
* ``l1``: the Laplace likelihood (L1), ``--beta 1e-6``;
* ``l1_adv``: ``--recipe ldm_no_lpips`` (L1, KL 1e-6, PatchGAN with the hinge
  loss and the adaptive weight at 0.5), its discriminator switched on at
  ``--adv-start`` (default: 40% of the steps; 2 strided layers of 32 channels
  at first, ``--adv-layers``, ``--adv-channels``, for 48-pixel crops);
* ``l1_adv_lpips``: ``--recipe ldm``, LPIPS with the ``lpips`` package's heads
  and a *random* VGG16 backbone (the ImageNet one is a download; pass
  ``--lpips-store DIR`` with real weights to use them instead). Needs ``lpips``
  and PyTorch; skipped without them.

Scored on the test crops (:func:`jvae.metrics.quality.image_quality`, posterior
mean reconstructions): PSNR, MS-SSIM, and the high-frequency energy ratio (the
reconstructions' spectral power above half Nyquist over the originals'; 1.0 is
as sharp as the input). One JSON row per objective, then a ``kind: summary``
row: how much closer to 1.0 each recipe brings the ratio than ``l2``
(``|1 - r_l2| / |1 - r|``) and its PSNR difference. ``--grid FILE`` writes a
picture: the originals on top, then each objective's reconstructions.

    python -m benchmarks.sharp_photos --steps 1000 --grid docs/photos/sharp_grid.png
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
import os
import tempfile
import time
import warnings

import numpy as np
from PIL import Image

ARCHITECTURE = {
    "description": "A small autoencoder with a spatial latent at 1/4 resolution, 4 channels.",
    "latent": "spatial",
    "data_range": [-1, 1],
    "encoder": ["C2d_3_32_3_1_1", "SiLU", "C2d_32_64_3_2_1", "SiLU", "C2d_64_64_3_1_1", "SiLU",
                "C2d_64_64_3_2_1", "SiLU", "C2d_64_64_3_1_1", "SiLU", "C2d_64_8_3_1_1"],
    "decoder": ["C2d_4_64_3_1_1", "SiLU", "C2d_64_64_3_1_1", "SiLU", "UpS_2", "C2d_64_64_3_1_1",
                "SiLU", "UpS_2", "C2d_64_32_3_1_1", "SiLU", "C2d_32_3_3_1_1"],
}

# Settings of each objective over the shared ones.
OBJECTIVES = {
    "l2": {"likelihood": "gaussian", "gaussian_scale": 0.1, "beta": 1e-6},
    "l1": {"likelihood": "laplace", "laplace_scale": 0.5, "beta": 1e-6},
    "l1_adv": {"recipe": "ldm_no_lpips"},
    "l1_adv_lpips": {"recipe": "ldm"},
}


def write_crops(root: Path, size: int, train_per_photo: int = 40, test_per_photo: int = 8,
                seed: int = 0) -> int:
    """Crops of scikit-image's photos at their own resolution into ``root/train`` and ``root/test``."""
    from benchmarks.data import _photos
    rng = np.random.default_rng(seed)
    count = 0
    for name, im in _photos():
        h, w = im.shape[:2]
        for i in range(train_per_photo + test_per_photo):
            split = root / ("train" if i < train_per_photo else "test")
            split.mkdir(parents=True, exist_ok=True)
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            Image.fromarray(im[y:y + size, x:x + size]).save(split / f"{name}_{i:03d}.png")
            count += 1
    return count


def _random_lpips_store(folder: Path) -> Path | None:
    """A weight store with LPIPS on a random VGG16 (the lpips wheel's heads)."""
    try:
        import lpips
        import torch
    except ImportError:
        return None
    from jvae.metrics.lpips import params_from_state_dicts
    from jvae.metrics.weights import WEIGHTS_DIR_ENV, save_params, weights_path
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    os.environ[WEIGHTS_DIR_ENV] = str(folder)
    save_params(params_from_state_dicts(sd, sd), weights_path("lpips"))
    return folder


def _settings(name: str, args, arch_file: Path, folder: Path, steps_per_epoch: int) -> dict:
    from jvae.app.recipes import recipe_settings
    extra = dict(OBJECTIVES[name])
    base = recipe_settings(extra.pop("recipe", None))
    epochs = math.ceil(args.steps / steps_per_epoch)
    adv_start = args.adv_start if args.adv_start is not None else int(0.4 * args.steps)
    return {**base, **extra, "data_source": str(folder), "image_size": str(args.size),
            "channels": 3, "net": "spec", "encoder_spec": str(arch_file),
            "posterior_scale": "logvar", "batch_size": args.batch_size, "epochs": epochs,
            "eval_batch_size": 96, "adv_start": adv_start, "adv_layers": args.adv_layers,
            "adv_channels": args.adv_channels, "lr": args.lr, "seed": args.seed,
            "dashboard": False, "tensorboard": False, "num_images": 16, "quality_images": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="train steps of every objective")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="crop side in pixels")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--adv-start", type=int, default=None,
                        help="step the discriminator starts (default: 40%% of --steps)")
    parser.add_argument("--adv-layers", type=int, default=2,
                        help="the discriminator's stride-2 layers (2: 34x34 patches)")
    parser.add_argument("--adv-channels", type=int, default=32)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--lpips-store", default=None,
                        help="weight store with real LPIPS weights (default: a random VGG16)")
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--grid", default=None, help="PNG file for the picture grid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from jvae.app.config import make_config
    from jvae.app.runs import restore_run
    from jvae.metrics.quality import image_quality, reconstruct_mean
    from jvae.train import train_and_evaluate
    from jvae.training.ema import averaged_params

    root = Path(args.workdir or tempfile.mkdtemp(prefix="jvae-sharp-"))
    folder = root / "crops"
    if not folder.is_dir():
        write_crops(folder, args.size)
    arch_file = root / "arch.json"
    arch_file.write_text(json.dumps({**ARCHITECTURE, "data_shape": [args.size, args.size, 3]}))
    n_train = len(list((folder / "train").iterdir()))
    steps_per_epoch = n_train // args.batch_size
    names = [n for n in args.objectives.split(",") if n]
    if "l1_adv_lpips" in names:
        store = args.lpips_store or _random_lpips_store(root / "weights")
        if store is None:
            print(json.dumps({"kind": "skip", "objective": "l1_adv_lpips",
                              "reason": "needs lpips and torch (pip install 'jvae[references]')"}))
            names.remove("l1_adv_lpips")
        else:
            os.environ["JVAE_WEIGHTS_DIR"] = str(store)
    print(json.dumps({"kind": "env", "train_crops": n_train, "size": args.size,
                      "steps": args.steps, "batch_size": args.batch_size,
                      "loadavg": os.getloadavg(), "cpu_count": os.cpu_count(),
                      "lpips_backbone": "given" if args.lpips_store else "random"}), flush=True)
    results, recons, originals = {}, {}, None
    for name in names:
        cfg = make_config(_settings(name, args, arch_file, folder, steps_per_epoch))
        workdir = root / name
        t0 = time.perf_counter()
        train_and_evaluate(cfg, workdir, quiet=True)
        seconds = time.perf_counter() - t0
        run = restore_run(workdir)
        params = averaged_params(run.state)
        scores = image_quality(run.experiment.vae, params, run.test, batch_size=96)
        row = {"kind": "objective", "objective": name, "steps": int(run.state.step),
               "psnr": round(scores["psnr"], 3), "ms_ssim": round(scores["ms_ssim"], 4),
               "hf_ratio": round(scores["hf_ratio"], 4), "ssim": round(scores["ssim"], 4),
               "train_s": round(seconds, 1)}
        results[name] = row
        print(json.dumps(row), flush=True)
        originals = run.test["image"][:8]
        recons[name] = np.asarray(reconstruct_mean(run.experiment.vae, params, originals))
    if "l2" in results:
        base = results["l2"]
        for name, row in results.items():
            if name == "l2":
                continue
            gap = abs(1 - row["hf_ratio"])
            print(json.dumps({"kind": "summary", "objective": name,
                              "hf_closer_than_l2": round(abs(1 - base["hf_ratio"]) / max(gap, 1e-9), 2),
                              "psnr_vs_l2_db": round(row["psnr"] - base["psnr"], 2)}), flush=True)
    if args.grid and originals is not None:
        rows = [originals] + [recons[n] for n in names]
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
        image = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8))
        image = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        image.save(args.grid)
        print(json.dumps({"kind": "grid", "file": args.grid, "rows": ["original", *names]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
