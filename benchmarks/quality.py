"""Quality figure: test -ELBO of the MLP VAE 784-400-20 on the shared MNIST split.

Recipe (issue 2): ReLU MLP 784-400-20, Bernoulli likelihood on [0, 1] pixels,
Adam 1e-3 (b2=0.99, clipped at global norm 1), batch 128, 10 epochs on the
20,000 shared training images; -ELBO in nats, mean over the 10,000 test images.
Prints one JSON row per posterior.

    python benchmarks/quality.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax

from jvae.app.config import make_config
from jvae.train import train_and_evaluate

RECIPE = {"dataset": "mnist", "epochs": 10, "batch_size": 128, "hidden": (400,),
          "latent_dim": 20, "lr": 1e-3, "likelihood": "bernoulli", "binarize": "none",
          "activation": "relu", "net": "mlp"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--posteriors", default="normal,dirichlet")
    args = p.parse_args()
    for posterior in args.posteriors.split(","):
        cfg = make_config(RECIPE, {"data_dir": args.data_dir, "epochs": args.epochs,
                                   "seed": args.seed, "posterior": posterior,
                                   "dirichlet_prior": 0.98})
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            row = train_and_evaluate(cfg, workdir, quiet=True)
        print(json.dumps({
            "benchmark": "quality", "model": "mlp-784-400-20", "posterior": posterior,
            "epochs": cfg.epochs, "train_images": 20_000, "test_images": 10_000,
            "test_neg_elbo": round(row["neg_elbo"], 3), "test_recon": round(row["recon"], 3),
            "test_kl": round(row["kl"], 3), "images_per_sec": round(row["images_per_sec"]),
            "seconds": round(time.perf_counter() - t0, 1), "seed": args.seed,
            "backend": jax.default_backend(), "devices": jax.device_count()}), flush=True)


if __name__ == "__main__":
    main()
