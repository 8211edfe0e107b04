"""A folder of 20 photos trained with default settings: ``jvae train --data-source DIR``.

The photos are 20 crops (240 x 180, random positions, half of them
mirrored) of the two photographs scikit-learn ships in its wheel
(``china.jpg`` and ``flower.jpg``), written as JPEGs to a temporary folder,
so the run needs no download. The command is run with no flag but
``--data-source``, ``--workdir`` and ``--no-dashboard``: every other
setting is the data's choice. Prints one JSON row: the settings chosen, the
run's time, and the first and last epochs' test ``neg_elbo`` and ``recon``.

    python benchmarks/photo_folder.py [--workdir /tmp/jvae-photos]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, n: int = 20, seed: int = 0) -> None:
    """``n`` JPEG crops of scikit-learn's two bundled photographs."""
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - 180)
        x = rng.integers(0, photo.shape[1] - 240)
        crop = photo[y:y + 180, x:x + 240]
        if i % 4 >= 2:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"photo_{i:02d}.jpg", quality=92)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jvae-photos-"))
    write_photos(root / "photos")
    workdir = Path(args.workdir) if args.workdir else root / "run"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "jvae", "train", "--data-source",
                          str(root / "photos"), "--workdir", str(workdir), "--no-dashboard"],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"jvae train exited {out.returncode}: {out.stderr.strip()[-500:]}")
    chosen = next((line for line in out.stdout.splitlines()
                   if line.startswith("settings chosen for the data")), "")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({
        "benchmark": "photo_folder", "photos": 20, "chosen": chosen.split(": ", 1)[-1],
        "epochs": len(rows), "steps": rows[-1]["step"], "seconds": round(seconds, 1),
        "first_neg_elbo": round(rows[0]["neg_elbo"], 1), "last_neg_elbo": round(rows[-1]["neg_elbo"], 1),
        "first_recon": round(rows[0]["recon"], 1), "last_recon": round(rows[-1]["recon"], 1),
        "workdir": str(workdir)}))


if __name__ == "__main__":
    main()
