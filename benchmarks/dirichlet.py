"""Dirichlet posterior: exact sampler vs the DirVAE approximation, speed and test -ELBO.

Trains the MLP VAE (784-400-20, Bernoulli likelihood, Dirichlet(0.98) prior)
twice on the same data and seed, once per ``dirichlet_reparam``, with the
epochs of the two runs interleaved (A B A B) so load drift hits both alike.
Both models are then scored on the test split with the *exact* family
(``jax.random.dirichlet`` samples and the Dirichlet KL), a true ELBO for
``q = Dir(alpha(x))`` whatever the model was trained with; the approximate
run's own objective (its Gamma KL, a looser bound) is reported beside it.
Prints one JSON row per run::

    python -m benchmarks.dirichlet --epochs 10
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/dirichlet.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import statistics
import time

import jax

from benchmarks.run import DEFAULT_DATA_DIR
from jvae.app.config import make_config
from jvae.app.runs import load_data
from jvae.devices.parallel import data_mesh, replicate
from jvae.train_state import make_eval_step
from jvae.training.experiment import DataSpec, build, init_state
from jvae.training.program import compile_program, evaluate_split, run_epoch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dirichlet",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    args = p.parse_args(argv)

    base = {"posterior": "dirichlet", "data_dir": args.data_dir, "batch_size": args.batch_size,
            "seed": args.seed, "num_devices": 1}
    train, test = load_data(make_config(base))
    mesh = data_mesh(1)
    spec = DataSpec.of(train)
    exact_eval = make_eval_step(build(make_config(base), spec).objective, mesh=mesh)

    runs = {}
    for reparam in ("exact", "approx"):
        cfg = make_config(base, {"dirichlet_reparam": reparam})
        experiment = build(cfg, spec)
        example = {"image": train["image"][:args.batch_size]}
        state = replicate(init_state(experiment, jax.random.key(cfg.seed), example), mesh)
        program = compile_program(experiment, mesh, state, {"image": train["image"]},
                                  placement="device", batch_size=args.batch_size,
                                  seed=args.seed, chunks_per_epoch=None)
        runs[reparam] = {"objective": experiment.objective, "state": state, "rates": [],
                         "program": program}

    for epoch in range(args.epochs):
        for r in runs.values():
            t = time.perf_counter()
            r["state"], sums = run_epoch(r["program"], r["state"], epoch)
            steps = r["program"].steps_per_epoch
            r["train_loss"] = float(sums["loss"]) / steps
            r["rates"].append(steps * args.batch_size / (time.perf_counter() - t))

    eval_key = jax.random.key(args.seed + 1)
    for reparam, r in runs.items():
        params, loss_state = r["state"].params, r["state"].loss_state
        exact = evaluate_split(exact_eval, params, test, 1000, eval_key, mesh, loss_state)
        own = evaluate_split(make_eval_step(r["objective"], mesh=mesh), params, test, 1000, eval_key,
                       mesh, loss_state)
        rates = r["rates"][1:] or r["rates"]  # the first epoch includes compilation
        print(json.dumps({
            "kind": "dirichlet_quality", "reparam": reparam, "epochs": args.epochs,
            "batch_size": args.batch_size, "train_examples": len(train["image"]), "backend": jax.default_backend(),
            "train_images_per_sec": round(statistics.median(rates), 1),
            "test_neg_elbo_exact": round(exact["neg_elbo"], 3),
            "test_recon": round(exact["recon"], 3), "test_kl_exact": round(exact["kl"], 3),
            "test_neg_elbo_own_objective": round(own["neg_elbo"], 3),
            "final_train_loss": round(r["train_loss"], 3), "loadavg": os.getloadavg()}),
            flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
