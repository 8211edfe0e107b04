"""jvae training throughput, side by side with a hand-written floor and PyTorch.

Run from the repository root::

    python -m benchmarks.run --quick      # < 2 min on a 2-core CPU
    python -m benchmarks.run              # the full table of benchmarks/README.md

It detects the backend (CPU, GPU or TPU; device kind and count) and prints one
JSON object per line:

* ``kind: env``: backend, devices, versions, load average, and the float32
  matmul peak measured in this run (GFLOP/s of a large ``jnp.dot``);
* ``kind: case``: one implementation x model x posterior x batch size x
  device count: median images/s over the timed epochs (after a warm-up
  epoch), images per CPU-second of the process (all threads; a load-robust
  measure of work per image on a shared host), step ms, compile s, FLOPs per step from the compiled program's cost
  analysis (analytic for the PyTorch MLP), achieved GFLOP/s and its fraction
  of the measured peak, peak host memory of the process, peak device memory
  (where the backend reports it), planned device bytes of the compiled
  program, and the number of XLA compilations during the timed epochs (jvae
  asserts 0);
* ``kind: ratio``: jvae over PyTorch, over the minimal hand-written JAX loops,
  and the Dirichlet posteriors over the Normal one, per batch size and device
  count, in images/s (``ratio``, with the per-round ratios of epochs run back
  to back) and in images per CPU-second (``cpu_ratio``);
* ``kind: max_batch``: the largest batch that fits per :mod:`jvae.app.modes.memory`.

Implementations of one group (same batch size and device count) run
interleaved, one epoch each in turn (A B C A B C ...), so drift in the
machine's load hits all of them alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform
import resource
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

from benchmarks import minimal, torch_reference
from jvae.app.config import make_config
from jvae.app.flags import add_host_memory_flag
from jvae.app.modes.memory import compiled_bytes, estimate_max_batch_size
from jvae.data import DataError, load_dataset, to_float
from jvae.devices.host_memory import apply_host_memory
from jvae.devices.parallel import data_mesh, replicate
from jvae.training.experiment import DataSpec, build, init_state
from jvae.training.program import compile_program, resolve_placement
from jvae.training.program import run_epoch as run_program_epoch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"

# name -> Config overrides of the model.
MODELS = {
    "mlp-normal": {"net": "mlp", "posterior": "normal"},
    "mlp-dirichlet-exact": {"net": "mlp", "posterior": "dirichlet"},
    "mlp-dirichlet-approx": {"net": "mlp", "posterior": "dirichlet", "dirichlet_reparam": "approx"},
    "conv-normal": {"net": "conv", "posterior": "normal"},
    "sd_vae-normal": {"net": "spec", "encoder_spec": "sd_vae", "posterior": "normal"},
}
# The model family of a MODELS name: its prefix; each family is one interleaved group.
FAMILIES = ("mlp", "conv", "sd_vae")
# Per-example shape of the SD-style VAE's (uniform random) images.
SD_SHAPE = (64, 64, 3)

_compiles = [0]


def _count_compile(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles[0] += 1


monitoring.register_event_duration_secs_listener(_count_compile)


def emit(row: dict, out) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def matmul_peak_gflops(dtype=jnp.float32, sizes=None, reps: int = 5) -> float:
    """Best median GFLOP/s of ``jnp.dot`` on square matrices, on the default device."""
    if sizes is None:
        sizes = (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192)
    dot = jax.jit(jnp.dot)
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        dot(a, b).block_until_ready()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            dot(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n ** 3 / statistics.median(times) / 1e9)
    return best


def _peak_device_mb() -> float | None:
    stats = jax.local_devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def _peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Runner:
    """One implementation of one case: ``run_epoch() -> {images, seconds, loss}``."""

    def __init__(self, impl: str, info: dict, run_epoch: Callable[[], dict]):
        self.impl, self.info, self.run_epoch = impl, info, run_epoch
        self.rates: list[float] = []
        self.seconds: list[float] = []
        self.cpu_rates: list[float] = []
        self.compiles = 0
        self.loss = float("nan")


def jvae_runner(model: str, images: np.ndarray, batch_size: int, devices: int,
                compute_dtype: str, placement: str = "auto") -> Runner:
    """jvae's training path for the config, as ``jvae train`` runs it.

    The program is :mod:`jvae.training.program`'s, the one the ``train`` command
    compiles: ``placement="auto"`` picks what it picks (the on-device epoch
    loop, or one dispatch per host batch for convolutions on XLA:CPU), and a
    device epoch is one dispatch (no progress bar).
    """
    cfg = make_config(MODELS[model], {"batch_size": batch_size, "num_devices": devices,
                                      "compute_dtype": compute_dtype})
    mesh = data_mesh(devices)
    experiment = build(cfg, DataSpec(images.shape[1:]))
    train = {"image": images}
    example = {"image": images[:batch_size]}
    state = replicate(init_state(experiment, jax.random.key(0), example), mesh)
    placement = resolve_placement(placement, experiment, state, example)
    program = compile_program(experiment, mesh, state, train, placement=placement,
                              batch_size=batch_size, seed=0, chunks_per_epoch=None)
    holder = {"state": state, "epoch": 0}

    def run_epoch() -> dict:
        t = time.perf_counter()
        holder["state"], sums = run_program_epoch(program, holder["state"], holder["epoch"])
        loss = float(sums["loss"]) / program.steps_per_epoch  # waits for the epoch
        holder["epoch"] += 1
        return {"images": program.steps_per_epoch * batch_size,
                "seconds": time.perf_counter() - t, "loss": loss}

    post = MODELS[model]
    info = {"model": model.split("-", 1)[0], "posterior": post["posterior"],
            "reparam": post.get("dirichlet_reparam", "exact") if post["posterior"] == "dirichlet"
            else None, "loop": "device_scan" if placement == "device" else "host_step_dispatch",
            "compile_s": round(program.compile_s, 3),
            "flops_per_step": program.flops,
            "flops_source": "xla_cost_analysis" if program.flops else None,
            "planned_device_mb": round(compiled_bytes(program.run) / 2**20, 2),
            "compute_dtype": compute_dtype}
    return Runner("jvae", info, run_epoch)


def _flat_info(batch_size: int) -> dict:
    return {"model": "mlp", "posterior": "normal", "reparam": None, "loop": None,
            "flops_per_step": torch_reference.flops_per_example() * batch_size,
            "flops_source": "analytic_matmuls", "compute_dtype": "float32"}


def minimal_runners(images: np.ndarray, batch_size: int) -> list[Runner]:
    flat = images.reshape(len(images), -1)
    out = []
    for impl, make in (("minimal_epoch", minimal.make_epoch_runner),
                       ("minimal_step", minimal.make_step_runner)):
        run = make(batch_size)
        out.append(Runner(impl, _flat_info(batch_size), lambda run=run: run(flat)))
    return out


def torch_runner(images: np.ndarray, batch_size: int, family: str = "mlp",
                 jvae_flops: float | None = None) -> Runner:
    """PyTorch's twin of the family's jvae model (``diffusers`` for ``sd_vae``).

    Its FLOPs per step are the analytic matmul count for the MLP and, for the
    conv nets, XLA's count of jvae's same-shaped program (``jvae_flops``).
    """
    if family == "mlp":
        images = np.ascontiguousarray(images.reshape(len(images), -1))
        info = _flat_info(batch_size)
    else:
        info = {"model": family, "posterior": "normal", "reparam": None, "loop": None,
                "flops_per_step": jvae_flops,
                "flops_source": "jvae_xla_cost_analysis" if jvae_flops else None,
                "compute_dtype": "float32"}
    runner = torch_reference.make_runner(batch_size, model=family, image_shape=images.shape[1:])
    import torch
    info = {**info, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    return Runner("pytorch", info, lambda: runner.run_epoch(images))


def run_group(runners: list[Runner], rounds: int, warmup: int, pause: float) -> None:
    """Interleaves the runners' epochs: warm-up rounds, then timed rounds."""
    for r in range(warmup + rounds):
        for runner in runners:
            before, cpu = _compiles[0], time.process_time()
            stats = runner.run_epoch()
            cpu = time.process_time() - cpu
            if r == 0:
                runner.first_s = stats["seconds"]
            if r >= warmup:
                runner.compiles += _compiles[0] - before
                runner.rates.append(stats["images"] / stats["seconds"])
                runner.seconds.append(stats["seconds"])
                runner.cpu_rates.append(stats["images"] / max(cpu, 1e-9))
                runner.steps = stats["images"] // runner.batch_size
            runner.loss = stats["loss"]
            time.sleep(pause)  # lets one library's spinning worker threads go idle


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (an SD-style VAE trains < 1 image/s on CPU)."""
    return float(f"{x:.{digits}g}")


def case_row(runner: Runner, batch_size: int, devices: int, examples: int, peak: float) -> dict:
    rate = statistics.median(runner.rates)
    step_s = statistics.median(runner.seconds) / runner.steps
    flops = runner.info.get("flops_per_step")
    achieved = flops / step_s / 1e9 if flops else None
    info = dict(runner.info)
    if "compile_s" not in info:  # jit on first call: the first epoch's excess over the others
        info["compile_s"] = round(max(runner.first_s - statistics.median(runner.seconds), 0), 3)
    return {"kind": "case", "impl": runner.impl, **info,
            "batch_size": batch_size, "devices": devices, "examples_per_epoch": examples,
            "timed_epochs": len(runner.rates), "images_per_sec": _sig(rate),
            "images_per_sec_each": [_sig(x) for x in runner.rates],
            "images_per_cpu_sec": round(statistics.median(runner.cpu_rates), 1),
            "step_ms": round(step_s * 1e3, 4),
            "achieved_gflops": round(achieved, 2) if achieved else None,
            "peak_fraction": round(achieved / peak, 4) if achieved else None,
            "peak_host_mb": round(_peak_host_mb(), 1), "peak_device_mb": _peak_device_mb(),
            "recompiles": runner.compiles, "final_loss": round(runner.loss, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small epochs, batch 128 only, no sd_vae unless --models names it (< 2 min)")
    p.add_argument("--models", default=None, help="comma-separated subset of "
                   + ", ".join(MODELS) + " (default: all)")
    p.add_argument("--batch-sizes", default=None, help="default 128,1024 (quick: 128)")
    p.add_argument("--rounds", type=int, default=None, help="timed epochs (default 5, quick 3)")
    p.add_argument("--examples", type=int, default=None,
                   help="examples per MLP epoch (default: all 20k, quick 8192)")
    p.add_argument("--conv-examples", type=int, default=None,
                   help="examples per conv epoch (default 4096, quick 1024)")
    p.add_argument("--sd-batch-sizes", default="4,8",
                   help="batch sizes of the SD-style VAE on 64x64x3 images (default 4,8)")
    p.add_argument("--sd-steps", type=int, default=1,
                   help="train steps per SD-style epoch (default 1)")
    p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--placement", default="auto", choices=("auto", "device", "host"),
                   help="jvae's data placement (auto: what python -m jvae.train picks)")
    p.add_argument("--no-torch", action="store_true")
    add_host_memory_flag(p)  # as the jvae command; it holds for PyTorch in this process too
    p.add_argument("--no-max-batch", action="store_true")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--out", default=None, help="also append the rows to this file")
    args = p.parse_args(argv)
    # Before any computation: JAX's and PyTorch's threads take the policy as they start.
    host_memory = apply_host_memory(args.host_memory)

    quick = args.quick
    models = [m for m in (args.models or ",".join(
        m for m in MODELS if not (quick and m.startswith("sd_vae")))).split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("128" if quick else "128,1024")).split(",")]
    rounds = args.rounds or (3 if quick else 5)
    out = open(args.out, "a") if args.out else None

    try:
        images = to_float(load_dataset("mnist", "train", data_dir=args.data_dir)["image"])
        source = f"mnist train ({args.data_dir})"
    except DataError as e:
        print(f"note: {e}; timing on uniform random images of MNIST's shape", file=sys.stderr)
        images = np.random.default_rng(0).random((20_000, 28, 28, 1), dtype=np.float32)
        source = "synthetic"
    mlp_n = args.examples or (min(len(images), 8192) if quick else len(images))
    if mlp_n > len(images):  # e.g. a 60k-image epoch from the 20k shared images
        images = np.resize(images, (mlp_n, *images.shape[1:]))
        source += f", tiled to {mlp_n}"
    conv_n = min(len(images), args.conv_examples or (1024 if quick else 4096))
    sd_batch_sizes = [int(b) for b in args.sd_batch_sizes.split(",") if b]

    devs = jax.local_devices()
    device_counts = sorted({1, len(devs)})
    peak = peak_f32 = matmul_peak_gflops()
    # On accelerators bfloat16 is the matrix units' native type: its peak too.
    peak_bf16 = None if jax.default_backend() == "cpu" else matmul_peak_gflops(jnp.bfloat16)
    if args.compute_dtype == "bfloat16" and peak_bf16:
        peak = peak_bf16
    torch_ok = torch_reference.available() and not args.no_torch
    emit({"kind": "env", "backend": jax.default_backend(), "device_kind": devs[0].device_kind,
          "host_memory": host_memory,
          "device_count": len(devs), "jax": jax.__version__, "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
          "matmul_peak_gflops_f32": round(peak_f32, 1),
          "matmul_peak_gflops_bf16": round(peak_bf16, 1) if peak_bf16 else None,
          "torch_device": torch_reference.default_device() if torch_ok else None, "data": source, "quick": quick,
          "torch": __import__("torch").__version__ if torch_ok else None}, out)

    for devices in device_counts:
        for family in FAMILIES:
            names = [m for m in models if m.split("-", 1)[0] == family]
            for bs in sd_batch_sizes if family == "sd_vae" else batch_sizes:
                if family == "sd_vae":
                    n = bs * args.sd_steps
                    x = np.random.default_rng(0).random((n, *SD_SHAPE), dtype=np.float32)
                else:
                    n = mlp_n if family == "mlp" else conv_n
                    x = images[:n]
                if not names or n < bs or bs % devices:
                    continue
                runners = [jvae_runner(m, x, bs, devices, args.compute_dtype, args.placement)
                           for m in names]
                if family == "mlp" and devices == 1 and "mlp-normal" in names:
                    runners += minimal_runners(x, bs)
                if devices == 1 and f"{family}-normal" in names and torch_ok and (
                        family != "sd_vae" or torch_reference.diffusers_available()):
                    runners.append(torch_runner(x, bs, family,
                                                runners[names.index(f"{family}-normal")]
                                                .info["flops_per_step"]))
                for r in runners:
                    r.batch_size = bs
                run_group(runners, rounds, warmup=1, pause=0.1)
                rows = {}
                for r, name in zip(runners, names + [r.impl for r in runners[len(names):]]):
                    rows[name] = case_row(r, bs, devices, n, peak)
                    emit(rows[name], out)
                    if r.impl == "jvae":
                        assert r.compiles == 0, f"jvae recompiled {r.compiles}x between epochs"
                _emit_ratios(rows, bs, devices, out)

    if not args.no_max_batch:
        for model in ("mlp-normal",) if quick else ("mlp-normal", "conv-normal"):
            cfg = make_config(MODELS[model], {"num_devices": len(devs)})
            fit = estimate_max_batch_size(cfg, DataSpec((28, 28, 1)), 60_000)
            emit({"kind": "max_batch", "model": model, "devices": len(devs),
                  "resident_examples": 60_000, "fixed_mb": round(fit.intercept / 2**20, 2),
                  "per_example_kb": round(fit.slope / 2**10, 3),
                  "budget_mb_per_device": round(fit.budget / 2**20, 1),
                  "max_batch_size": fit.max_batch_size,
                  "limited_by": "dataset" if fit.max_batch_size >= 60_000 else "memory"}, out)
    emit({"kind": "end", "loadavg": os.getloadavg()}, out)
    if out:
        out.close()
    return 0


def _emit_ratios(rows: dict, bs: int, devices: int, out) -> None:
    def rate(name):
        return rows[name]["images_per_sec"] if name in rows else None

    pairs = [("mlp-normal", "pytorch"), ("conv-normal", "pytorch"), ("sd_vae-normal", "pytorch"),
             ("mlp-normal", "minimal_epoch"),
             ("mlp-normal", "minimal_step"), ("mlp-dirichlet-approx", "mlp-normal"),
             ("mlp-dirichlet-exact", "mlp-normal"), ("mlp-dirichlet-approx", "mlp-dirichlet-exact")]
    for a, b in pairs:
        if rate(a) and rate(b):
            emit({"kind": "ratio", "numerator": a, "denominator": b, "batch_size": bs,
                  "devices": devices, "ratio": round(rate(a) / rate(b), 3),
                  "cpu_ratio": round(rows[a]["images_per_cpu_sec"]
                                     / rows[b]["images_per_cpu_sec"], 3),
                  # per-round ratios: each pair of epochs ran back to back
                  "ratio_each": [round(x / y, 3) for x, y in zip(
                      rows[a]["images_per_sec_each"], rows[b]["images_per_sec_each"])]}, out)


if __name__ == "__main__":
    sys.exit(main())
