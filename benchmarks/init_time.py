"""Seconds to initialize a model's train state and compile its train step, each net in a fresh process.

Prints one JSON row per net: ``{"bench": "init", "net", "data_shape", "params", "init_s",
"compile_s"}``, where ``init_s`` is :func:`jvae.training.experiment.init_state` from the
built experiment to parameters on the device (what ``jvae train`` waits for
before compiling its step), in a process that has compiled nothing yet, and
``compile_s`` the ahead-of-time compile of the train program ``jvae train``
runs (:func:`jvae.training.program.compile_program`, one dispatch per host batch of
``--batch``) that follows.

    python -m benchmarks.init_time --nets mlp,conv,sd_vae
    python -m benchmarks.init_time --nets sd_vae --batch 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

# net -> (config overrides, per-example data shape)
NETS = {
    "mlp": ({}, (28, 28, 1)),
    "conv": ({"net": "conv"}, (28, 28, 1)),
    "sd_vae": ({"net": "spec", "encoder_spec": "sd_vae", "likelihood": "gaussian"}, (64, 64, 3)),
}


def _measure(net: str, batch: int) -> dict:
    import jax

    from jvae.app.config import make_config
    from jvae.devices.parallel import data_mesh, replicate
    from jvae.training.experiment import DataSpec, build, example_batch, init_state
    from jvae.training.program import compile_program
    overrides, shape = NETS[net]
    experiment = build(make_config(overrides), DataSpec(shape, 10))
    example = example_batch(experiment, batch)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_state(experiment, jax.random.key(0), example))
    seconds = time.perf_counter() - t0
    params = sum(x.size for x in jax.tree.leaves(state.params))
    mesh = data_mesh(1)
    train = {"image": np.zeros((2 * batch, *shape), np.float32)}
    program = compile_program(experiment, mesh, replicate(state, mesh), train, placement="host",
                              batch_size=batch, seed=0)
    return {"bench": "init", "net": net, "data_shape": list(shape), "params": int(params),
            "batch": batch, "init_s": round(seconds, 2), "compile_s": round(program.compile_s, 2),
            "backend": jax.default_backend()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, of {', '.join(NETS)}")
    p.add_argument("--batch", type=int, default=8, help="example batch the state is shaped by")
    p.add_argument("--one", choices=tuple(NETS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one, args.batch)), flush=True)
        return
    for net in args.nets.split(","):
        if net not in NETS:
            p.error(f"unknown net {net!r}; choose from {', '.join(NETS)}")
        # A fresh interpreter per net: nothing compiled or cached by an earlier one.
        subprocess.run([sys.executable, "-m", "benchmarks.init_time", "--one", net,
                        "--batch", str(args.batch)], check=True)


if __name__ == "__main__":
    main()
