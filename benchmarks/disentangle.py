"""Disentanglement on the built-in dSprites: VAE, beta-VAE, beta-TCVAE and FactorVAE.

Recipe (Chen et al., 2018's MLP for dSprites, narrowed to fit this CPU): ReLU
MLP 4096-512-512-10 and back, Bernoulli likelihood, Adam 1e-3 (b2=0.99,
clipped at global norm 1), batch 64, ``--epochs`` epochs over the first
``--train-examples`` images of the training split. Each family is trained
with ``--seeds`` seeds; ``jvae evaluate`` then reports the five metrics of
:mod:`jvae.metrics.disentanglement` (BetaVAE score, FactorVAE score, MIG, SAP,
DCI) from the encoder means. One JSON row per (family, seed), plus one summary
row per family with each metric's mean and its spread (min and max over the
seeds)::

    python -m benchmarks.disentangle --out /tmp/disentangle.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

RECIPE = {"dataset": "dsprites", "net": "mlp", "hidden": (512, 512), "latent_dim": 10,
          "likelihood": "bernoulli", "binarize": "none", "activation": "relu", "lr": 1e-3,
          "batch_size": 64}

FAMILIES = {
    "vae": {},
    "beta_vae_b4": {"beta": 4.0},
    "btcvae_b6": {"model": "btcvae", "tcvae_beta": 6.0, "tcvae_estimator": "mss"},
    "factorvae_g10": {"model": "factorvae", "factorvae_gamma": 10.0},
}
METRICS = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement",
           "dci_completeness", "dci_informativeness")


def run_one(name: str, seed: int, args) -> dict:
    from jvae.app.config import make_config
    from jvae.app.modes.evaluate import evaluate_run
    from jvae.train import train_and_evaluate
    cfg = make_config(RECIPE, FAMILIES[name], {"epochs": args.epochs, "seed": seed,
                                               "train_examples": args.train_examples,
                                               "test_examples": 1000})
    workdir = Path(args.workdir) / f"{name}-s{seed}"
    t0 = time.perf_counter()
    train_and_evaluate(cfg, workdir, quiet=True)
    train_s = time.perf_counter() - t0
    report = evaluate_run(workdir, iw_samples=1, num_test_images=100, fid_images=0,
                          factor_points=args.factor_points, dci_points=args.dci_points,
                          score_points=args.score_points, seed=seed)
    scores = report["disentanglement"]
    return {"benchmark": "disentangle", "family": name, "seed": seed, "epochs": args.epochs,
            "train_examples": args.train_examples, "neg_elbo": report.get("neg_elbo"),
            **{m: scores[m] for m in METRICS if m in scores},
            "train_s": round(train_s, 1), "metrics_s": scores.get("wall_s")}


def summary(name: str, rows: list[dict]) -> dict:
    """Mean and min/max over the seeds of every metric."""
    out = {"benchmark": "disentangle_summary", "family": name, "seeds": len(rows)}
    for m in (*METRICS, "neg_elbo"):
        values = [r[m] for r in rows if r.get(m) is not None]
        if values:
            out[m] = {"mean": round(statistics.fmean(values), 4),
                      "min": round(min(values), 4), "max": round(max(values), 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/jvae_disentangle")
    p.add_argument("--out", default="/tmp/disentangle.jsonl", help="JSON rows, appended")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-examples", type=int, default=50_000)
    p.add_argument("--factor-points", type=int, default=10_000)
    p.add_argument("--dci-points", type=int, default=1_000)
    p.add_argument("--score-points", type=int, default=500)
    args = p.parse_args()
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    for name in args.families.split(","):
        if name not in FAMILIES:
            raise SystemExit(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
        done = [r for r in rows if r["benchmark"] == "disentangle" and r["family"] == name]
        for seed in range(args.seeds):
            if any(r["seed"] == seed for r in done):
                continue
            row = run_one(name, seed, args)
            done.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        print(json.dumps(summary(name, done)), flush=True)


if __name__ == "__main__":
    main()
