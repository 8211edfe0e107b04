"""Model-zoo figures: every family trained with the core recipe, then evaluated.

Recipe (as the core quality figure): ReLU MLP 784-400-20, Bernoulli likelihood
on [0, 1] pixels, Adam 1e-3 (b2=0.99, clipped at global norm 1), batch 128,
10 epochs on the 20,000 shared MNIST training images. For each family this
prints one JSON row with

* ``neg_elbo``: test -ELBO (nats, mean over all 10,000 test images);
* ``nll_bound_k5000``: minus the k=5000 importance-weighted bound, on the first
  ``n_test_images`` test images (the same subset for every family, because
  k=5000 costs 5000 decoder passes per image);
* ``neg_elbo_subset``: the -ELBO estimate on that same subset, for a paired
  comparison with the bound;
* ``images_per_sec``: training throughput (median over epochs; the machine may
  be shared, so treat it as indicative).

Rows are appended to ``--out`` as they finish; families already there are
skipped, so an interrupted run resumes::

    python benchmarks/zoo.py --out /tmp/zoo.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax

from jvae.app.config import make_config
from jvae.app.modes.evaluate import evaluate_run
from jvae.train import train_and_evaluate

RECIPE = {"dataset": "mnist", "epochs": 10, "batch_size": 128, "hidden": (400,),
          "latent_dim": 20, "lr": 1e-3, "likelihood": "bernoulli", "binarize": "none",
          "activation": "relu", "net": "mlp"}

FAMILIES = {
    "vae": {},
    "beta_vae_b2": {"beta": 2.0},
    "ae": {"model": "ae"},
    "cvae": {"model": "cvae"},
    "iwae_k5": {"model": "iwae", "num_samples": 5},
    "iwae_k50": {"model": "iwae", "num_samples": 50},
    "flow_spline_l4": {"flow_layers": 4, "flow_coupling": "spline"},
    "flow_affine_l4": {"flow_layers": 4, "flow_coupling": "affine"},
    "dirichlet_vae": {"posterior": "dirichlet"},
    "vq": {"model": "vq"},
}
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def run_family(name: str, overrides: dict, args) -> dict:
    """Trains one family (or reuses a finished run in its workdir) and evaluates it."""
    cfg = make_config(RECIPE, overrides, {"data_dir": str(args.data_dir), "epochs": args.epochs,
                                          "seed": args.seed})
    workdir = Path(args.workdir) / name
    t0 = time.perf_counter()
    train_and_evaluate(cfg, workdir, quiet=True)
    train_s = time.perf_counter() - t0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    report = evaluate_run(workdir, iw_samples=args.iw_samples,
                          num_test_images=args.num_test_images, batch_size=args.eval_batch,
                          chunk_size=args.chunk_size, seed=args.seed)
    row = {
        "benchmark": "zoo", "family": name, "model": cfg.model, "posterior": report["posterior"],
        "overrides": overrides, "epochs": cfg.epochs, "train_images": 20_000,
        "neg_elbo": report.get("neg_elbo"), "recon": report["recon"], "kl": report.get("kl"),
        "n_eval_images": report["n_eval_images"],
        f"nll_bound_k{args.iw_samples}": report.get("nll_bound"),
        "neg_elbo_subset": report.get("neg_elbo_subset"),
        "n_test_images": report.get("n_test_images"),
        "active_units": report["active_units"],
        "images_per_sec": statistics.median(r["images_per_sec"] for r in rows),
        "train_wall_s": round(sum(r["epoch_s"] for r in rows), 1),
        "iwae_eval_s": round(report.get("iwae_wall_s", 0.0), 1),
        "wall_s": round(time.perf_counter() - t0, 1), "train_call_s": round(train_s, 1),
        "seed": args.seed, "backend": jax.default_backend(), "devices": jax.device_count()}
    if "codebook" in report:
        row["codebook"] = report["codebook"]
    if report.get("conditional"):
        row["conditional"] = True  # the bound is on log p(x|y)
    return row


def append_missing(out: Path, key: str, table: dict, names: str, run) -> None:
    """Runs ``run(name, table[name])`` for each comma-separated name whose row
    (``row[key] == name``) is not yet in ``out``, appending and printing each
    row as it finishes, so an interrupted benchmark resumes where it stopped."""
    done = set()
    if out.exists():
        done = {json.loads(line)[key] for line in out.read_text().splitlines() if line.strip()}
    for name in names.split(","):
        if name not in table:
            raise SystemExit(f"unknown {key} {name!r}; choose from {', '.join(table)}")
        if name in done:
            continue
        row = run(name, table[name])
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--workdir", default="/tmp/jvae_zoo_runs", help="one run folder per family")
    p.add_argument("--out", default="/tmp/jvae_zoo.jsonl", help="JSON rows, appended")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iw-samples", type=int, default=5000)
    p.add_argument("--num-test-images", type=int, default=2000,
                   help="the bound is evaluated on the first N test images (all models alike)")
    p.add_argument("--eval-batch", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    append_missing(Path(args.out), "family", FAMILIES, args.families,
                   lambda name, overrides: run_family(name, overrides, args))

if __name__ == "__main__":
    main()
