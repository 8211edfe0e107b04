"""Does a trained CVAE's sample follow its label? Conditional accuracy per recipe.

Trains the MLP CVAE (784-400-20, Bernoulli, Adam 1e-3, batch 128) for
``--epochs`` on the 20,000 shared MNIST training images once per variant, then
prints one JSON row per variant with

* ``conditional_accuracy``: the share of 1,000 class-conditional prior samples
  (100 per digit, ``z ~ N(0, I)``) that a classifier trained on the training
  split assigns to the requested digit, and ``classifier_test_accuracy``, the
  classifier's own accuracy on the 10,000 test images (the ceiling);
* ``label_effect``: mean absolute pixel change of ``E[x|z, y]`` between two
  labels for the same ``z ~ N(0, I)`` (near 0: the decoder ignores ``y``);
* ``neg_elbo``: test -ELBO (nats; the plain bound whatever the training loss).

Variants: ``elbo`` (``--cvae-prior-weight 0``: the plain ELBO), ``hybrid_w``
(the prior-reconstruction term at weight ``w``), ``beta2`` (plain ELBO, KL
weight 2). Rows are appended to ``--out``; variants already there are skipped::

    nice python benchmarks/cvae.py --out /tmp/cvae.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/cvae.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time

import jax
import numpy as np

from benchmarks.run import DEFAULT_DATA_DIR
from benchmarks.zoo import append_missing
from jvae.app.config import make_config
from jvae.app.modes.evaluate import evaluate_run
from jvae.app.runs import restore_run
from jvae.inference import make_inference
from jvae.train import train_and_evaluate

RECIPE = {"dataset": "mnist", "model": "cvae", "batch_size": 128, "hidden": (400,),
          "latent_dim": 20, "lr": 1e-3, "likelihood": "bernoulli", "net": "mlp"}
VARIANTS = {
    "elbo": {"cvae_prior_weight": 0.0},
    "hybrid_0.05": {"cvae_prior_weight": 0.05},
    "hybrid_0.1": {"cvae_prior_weight": 0.1},
    "hybrid_0.2": {"cvae_prior_weight": 0.2},
    "beta2": {"cvae_prior_weight": 0.0, "beta": 2.0},
}


def label_effect(workdir: Path, num: int = 500, seed: int = 0) -> float:
    """Mean |E[x|z, y] - E[x|z, y']| over ``num`` prior draws and random label pairs."""
    run = restore_run(workdir)
    inference = make_inference(run.experiment.vae, num)
    classes = run.experiment.data_spec.num_classes
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, num)
    y2 = (y + rng.integers(1, classes, num)) % classes  # always a different label
    eye = np.eye(classes, dtype=np.float32)
    key = jax.random.key(seed)
    _, a = inference.sample(run.state.params, key, num, eye[y])
    _, b = inference.sample(run.state.params, key, num, eye[y2])  # same key: same z
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


def run_variant(name: str, overrides: dict, args) -> dict:
    cfg = make_config(RECIPE, overrides, {"data_dir": str(args.data_dir), "epochs": args.epochs,
                                          "seed": args.seed})
    workdir = Path(args.workdir) / name
    t0 = time.perf_counter()
    train_and_evaluate(cfg, workdir, quiet=True)
    train_s = time.perf_counter() - t0
    # k = 1 on 100 images: this benchmark is about samples, not the bound.
    report = evaluate_run(workdir, iw_samples=1, num_test_images=100, seed=args.seed)
    return {"benchmark": "cvae", "variant": name, "overrides": overrides, "epochs": cfg.epochs,
            "train_images": 20_000,
            "conditional_accuracy": report["conditional_accuracy"],
            "classifier_test_accuracy": report["classifier_test_accuracy"],
            "label_effect": label_effect(workdir, seed=args.seed),
            "neg_elbo": report["neg_elbo"], "recon": report["recon"], "kl": report["kl"],
            "train_call_s": round(train_s, 1), "seed": args.seed,
            "backend": jax.default_backend()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--workdir", default="/tmp/jvae_cvae_runs", help="one run folder per variant")
    p.add_argument("--out", default="/tmp/jvae_cvae.jsonl", help="JSON rows, appended")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    append_missing(Path(args.out), "variant", VARIANTS, args.variants,
                   lambda name, overrides: run_variant(name, overrides, args))

if __name__ == "__main__":
    main()
