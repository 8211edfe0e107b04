"""Figures for the config-defined architectures: sequence VAEs, spec nets, SD-style VAE.

Run from the repository root (each part prints one JSON object per line)::

    python -m benchmarks.architectures --part sequence   # 3 decoder modes, 5 epochs
    python -m benchmarks.architectures --part conv       # spec conv vs MLP, 10 epochs
    python -m benchmarks.architectures --part sd         # SD-style VAE size and step time

* ``sequence``: an LSTM sequence VAE (``--net rnn``) on MNIST read row by row
  (28 steps of 28 pixels) with each decoder mode; test -ELBO after 5 epochs.
* ``conv``: the packaged ``mnist_conv`` spec (``--net spec``) against the
  built-in MLP (``--net mlp``) and its spec twin ``mnist_mlp``, 10 epochs on the
  shared MNIST (20k train, 10k test): test -ELBO and training images/s. All
  three feed host batches (``--data-placement host``): on XLA:CPU a conv net's
  step inside the on-device epoch loop runs many times slower (about 0.2 s vs
  4.5 s per batch of 128 for ``mnist_conv``).
* ``sd``: the packaged ``sd_vae`` at 64x64x3: parameter count, latent shape,
  and one jitted train step's time (median of the timed steps, after compile).

The training parts go through :func:`jvae.train.train_and_evaluate`, the code
the CLI runs, with all other settings at their defaults (batch 128, Adam 1e-3,
latent 20, Bernoulli likelihood on grey levels, seed 0). Rows carry the
equivalent CLI command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jvae.app.config import make_config
from jvae.devices.parallel import data_mesh, replicate
from jvae.train import train_and_evaluate
from jvae.train_state import create_train_state, make_train_step
from jvae.training.experiment import DataSpec, build

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def _env() -> dict:
    return {"kind": "env", "backend": jax.default_backend(),
            "devices": [d.device_kind for d in jax.devices()], "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()), "jax": jax.__version__}


def _train_row(part: str, settings: dict, workroot: Path, name: str) -> dict:
    cfg = make_config(settings)
    t0 = time.perf_counter()
    row = train_and_evaluate(cfg, workroot / name, quiet=True)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
    rows = [json.loads(line) for line in (workroot / name / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rates = [r["images_per_sec"] for r in rows]
    return {"kind": part, "name": name, "epochs": row["epoch"],
            "test_neg_elbo": round(row["neg_elbo"], 2), "test_recon": round(row["recon"], 2),
            "test_kl": round(row["kl"], 2),
            "test_neg_elbo_per_epoch": [round(r["neg_elbo"], 2) for r in rows],
            # The first epoch can carry one-off costs; the median of the rest is the rate.
            "images_per_sec": round(statistics.median(rates[1:] or rates), 1),
            "images_per_sec_per_epoch": [round(r, 1) for r in rates],
            "train_wall_s": round(row["wall_s"], 1), "compile_s": round(row["compile_s"], 1),
            "total_s": round(time.perf_counter() - t0, 1), "loadavg": list(os.getloadavg()),
            "command": f"python -m jvae.train {flags}"}


def run_sequence(data_dir: str, workroot: Path, epochs: int) -> None:
    for mode in ("repeat_latent", "concat_output_latent", "output_as_input"):
        settings = {"data_dir": data_dir, "net": "rnn", "rnn_cell": "lstm", "rnn_hidden": 256,
                    "decoder_mode": mode, "epochs": epochs}
        print(json.dumps(_train_row("sequence", settings, workroot, f"rnn_lstm_{mode}")),
              flush=True)


def run_conv(data_dir: str, workroot: Path, epochs: int, placement: str) -> None:
    cases = {"spec_mnist_conv": {"net": "spec", "encoder_spec": "mnist_conv"},
             "builtin_mlp": {"net": "mlp"},
             "spec_mnist_mlp": {"net": "spec", "encoder_spec": "mnist_mlp"}}
    for name, extra in cases.items():
        settings = {"data_dir": data_dir, **extra, "epochs": epochs, "data_placement": placement}
        print(json.dumps(_train_row("conv_vs_mlp", settings, workroot, name)), flush=True)


def run_sd(size: int, batch: int, steps: int) -> None:
    cfg = make_config({"net": "spec", "encoder_spec": "sd_vae", "likelihood": "gaussian"})
    data_shape = (size, size, 3)
    experiment = build(cfg, DataSpec(data_shape))
    vae, objective, optimizer = experiment.vae, experiment.objective, experiment.optimizer
    mesh = data_mesh(1)
    x = np.random.default_rng(0).random((batch, *data_shape), dtype=np.float32)
    batch_dict = {"image": x, "mask": np.ones(batch, np.float32)}
    t0 = time.perf_counter()
    state = replicate(create_train_state(vae._replace(init=jax.jit(vae.init)), objective,
                                         optimizer, jax.random.key(0), batch_dict), mesh)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(state.params))
    t0 = time.perf_counter()
    step = make_train_step(objective, optimizer, mesh=mesh).lower(state, batch_dict).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps + 1):  # the first call also moves the batch; not timed
        t0 = time.perf_counter()
        state, metrics = step(state, batch_dict)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[1:])
    print(json.dumps({
        "kind": "sd_vae", "input": list(data_shape), "latent": list(vae.latent_shape),
        "params": num_params, "batch": batch, "init_s": round(init_s, 1),
        "compile_s": round(compile_s, 1), "step_s_median": round(step_s, 3),
        "step_s_all": [round(t, 3) for t in times[1:]],
        "images_per_sec": round(batch / step_s, 2), "loss": float(metrics["loss"]),
        "loadavg": list(os.getloadavg()),
        "command": f"python -m benchmarks.architectures --part sd --size {size} "
                   f"--batch {batch} --steps {steps}"}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.architectures",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("sequence", "conv", "sd", "all"), default="all")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR.resolve()))
    p.add_argument("--workdir", help="run folders (a fresh temporary one when omitted)")
    p.add_argument("--sequence-epochs", type=int, default=5)
    p.add_argument("--conv-epochs", type=int, default=10)
    # XLA:CPU runs convolutions inside the on-device epoch loop many times
    # slower than in a per-step executable, so the conv comparison feeds
    # host batches (the same for all three nets).
    p.add_argument("--conv-placement", choices=("host", "device"), default="host")
    p.add_argument("--size", type=int, default=64, help="SD-style VAE input height and width")
    p.add_argument("--batch", type=int, default=4, help="SD-style VAE batch size")
    p.add_argument("--steps", type=int, default=5, help="timed SD-style VAE steps")
    args = p.parse_args(argv)
    print(json.dumps(_env()), flush=True)
    with tempfile.TemporaryDirectory(prefix="jvae_arch_") as tmp:
        workroot = Path(args.workdir or tmp)
        if args.part in ("sequence", "all"):
            run_sequence(args.data_dir, workroot, args.sequence_epochs)
        if args.part in ("conv", "all"):
            run_conv(args.data_dir, workroot, args.conv_epochs, args.conv_placement)
        if args.part in ("sd", "all"):
            run_sd(args.size, args.batch, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
