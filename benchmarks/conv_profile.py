"""Where the conv VAE's train step spends its time, layer by layer, per formulation.

Times forward, input gradient and kernel gradient of every convolution and
transposed convolution of jvae's ``--net conv`` VAE (MNIST, batch 128 by
default), each jitted alone, for each formulation: XLA's own convolution
(``lax``: what ``flax.linen.Conv`` / ``ConvTranspose`` run), the polyphase
transposed convolution, and the im2col + GEMM forms of :mod:`jvae.layers.convolution`;
with PyTorch installed, also PyTorch's ``conv2d`` / ``conv_transpose2d`` on the
same shapes (NCHW, the layers of ``benchmarks/torch_reference.py``'s twin).
Then the whole train step, one dispatch per batch and inside the on-device
``lax.scan`` epoch, with the native and the GEMM formulations, interleaved.

    python -m benchmarks.conv_profile               # layers and steps, batch 128
    python -m benchmarks.conv_profile --no-steps --batch-size 32

Prints one JSON object per line (``kind: layer`` and ``kind: step``), times in ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jvae.layers.convolution as conv_mod
import jvae.layers.upsample as upsample_mod
from benchmarks import torch_reference
from jvae.app.config import make_config
from jvae.app.flags import add_host_memory_flag
from jvae.devices.host_memory import apply_host_memory
from jvae.layers.convolution import conv
from jvae.layers.upsample import transposed_conv, transposed_conv_gemm
from jvae.train_state import make_train_step
from jvae.training.epoch import epoch_order, make_train_epoch, put_dataset
from jvae.training.experiment import DataSpec, build, init_state


def _lax_conv(x, w, strides):
    pads = lax.padtype_to_pads(x.shape[1:3], w.shape[:2], strides, "SAME")
    return lax.conv_general_dilated(x, w, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _lax_conv_transpose(x, w, strides):
    return lax.conv_transpose(x, w, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


CONV_IMPLS = {"lax": _lax_conv, "gemm": lambda x, w, s: conv(x, w, s, "SAME")}
TRANSPOSE_IMPLS = {"lax": _lax_conv_transpose, "polyphase": transposed_conv,
                   "gemm": transposed_conv_gemm}


def layers(batch: int) -> list[tuple[str, tuple, tuple, tuple, dict]]:
    """(name, input shape, kernel shape, strides, implementations) of the conv VAE."""
    return [
        ("encoder Conv_0 1->32 s2", (batch, 28, 28, 1), (3, 3, 1, 32), (2, 2), CONV_IMPLS),
        ("encoder Conv_1 32->64 s2", (batch, 14, 14, 32), (3, 3, 32, 64), (2, 2), CONV_IMPLS),
        ("decoder ConvTranspose_0 64->64 x2", (batch, 7, 7, 64), (3, 3, 64, 64), (2, 2),
         TRANSPOSE_IMPLS),
        ("decoder ConvTranspose_1 64->32 x2", (batch, 14, 14, 64), (3, 3, 64, 32), (2, 2),
         TRANSPOSE_IMPLS),
        ("decoder head 32->1", (batch, 28, 28, 32), (3, 3, 32, 1), (1, 1), CONV_IMPLS),
    ]


def _median_ms(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 3)


def _torch_layer_ms(xs: tuple, ws: tuple, strides: tuple, transposed: bool,
                    reps: int) -> dict:
    """Forward, input-gradient and kernel-gradient ms of the PyTorch twin's layer."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    n, h, w, cin = xs
    cout = ws[-1]
    x = torch.randn(n, cin, h, w)
    if transposed:
        weight = torch.randn(cin, cout, *ws[:2]) * 0.1

        def f(x, weight):
            return F.conv_transpose2d(x, weight, stride=strides, padding=1, output_padding=1)
    else:
        weight = torch.randn(cout, cin, *ws[:2]) * 0.1

        def f(x, weight):
            return F.conv2d(x, weight, stride=strides, padding=1)
    g = torch.ones_like(f(x, weight))

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1e3, 3)

    def grad(wrt_x: bool):
        xx, ww = x.clone().requires_grad_(wrt_x), weight.clone().requires_grad_(not wrt_x)
        return torch.autograd.grad(f(xx, ww), xx if wrt_x else ww, g)

    with torch.no_grad():
        forward = timed(lambda: f(x, weight))
    return {"forward_ms": forward, "input_grad_ms": timed(lambda: grad(True)),
            "kernel_grad_ms": timed(lambda: grad(False))}


def profile_layers(batch: int, reps: int, torch_too: bool = True) -> list[dict]:
    """Per layer and formulation: forward, input-gradient and kernel-gradient ms.

    jvae's rows time forward and each gradient as separate jitted programs; the
    ``pytorch`` row times ``conv2d`` alone and ``autograd.grad`` (forward plus that
    gradient, as PyTorch computes it), so its gradient columns include a forward.
    """
    rows = []
    torch_too = torch_too and torch_reference.available()
    for name, xs, ws, strides, impls in layers(batch):
        x = jax.random.normal(jax.random.key(0), xs)
        w = jax.random.normal(jax.random.key(1), ws) * 0.1
        for impl, f in impls.items():
            fwd = jax.jit(lambda x, w, f=f: f(x, w, strides))
            g = jnp.ones(jax.eval_shape(fwd, x, w).shape)
            dx = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda x: f(x, w, strides), x)[1](g)[0])
            dw = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda w: f(x, w, strides), w)[1](g)[0])
            rows.append({"kind": "layer", "layer": name, "impl": impl, "batch_size": batch,
                         "forward_ms": _median_ms(fwd, x, w, reps=reps),
                         "input_grad_ms": _median_ms(dx, x, w, g, reps=reps),
                         "kernel_grad_ms": _median_ms(dw, x, w, g, reps=reps)})
            print(json.dumps(rows[-1]), flush=True)
        if torch_too:
            rows.append({"kind": "layer", "layer": name, "impl": "pytorch", "batch_size": batch,
                         **_torch_layer_ms(xs, ws, strides, impls is TRANSPOSE_IMPLS, reps)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


@contextlib.contextmanager
def gemm_convolutions(flag: bool):
    """Traces jvae's Conv / ConvTranspose with (True) or without (False) the GEMM forms."""
    saved = conv_mod.use_gemm_convolutions, upsample_mod.use_gemm_convolutions
    conv_mod.use_gemm_convolutions = upsample_mod.use_gemm_convolutions = lambda: flag
    try:
        yield
    finally:
        conv_mod.use_gemm_convolutions, upsample_mod.use_gemm_convolutions = saved


def profile_steps(overrides: dict, shape: tuple, batch: int, steps: int, rounds: int,
                  variants=(("native", False, False), ("gemm", True, False),
                            ("gemm", True, True))) -> list[dict]:
    """Train-step ms of each (formulation, loop) variant, rounds interleaved."""
    images = np.random.default_rng(0).random((batch * steps, *shape), dtype=np.float32)
    cfg = make_config(overrides, {"batch_size": batch})
    runs = []
    for name, flag, scan in variants:
        with gemm_convolutions(flag):
            exp = build(cfg, DataSpec(shape))
            t = time.perf_counter()
            state = init_state(exp, jax.random.key(0), {"image": images[:batch]})
            init_s = time.perf_counter() - t
            t = time.perf_counter()
            if scan:
                data = put_dataset({"image": images})
                order = jnp.asarray(epoch_order(len(images), batch, seed=0, epoch=0))
                f = make_train_epoch(exp.objective, exp.optimizer).lower(
                    state, data, order, jax.random.key(0), np.int32(0)).compile()

                def call(s, f=f, data=data, order=order):
                    return f(s, data, order, jax.random.key(0), np.int32(0))[0]
            else:
                batch_ = {"image": jnp.asarray(images[:batch]), "mask": jnp.ones((batch,))}
                f = make_train_step(exp.objective, exp.optimizer).lower(state, batch_).compile()

                def call(s, f=f, b=batch_):
                    for _ in range(steps):
                        s = f(s, b)[0]
                    return s
            compile_s = time.perf_counter() - t
        runs.append({"name": name, "loop": "device_scan" if scan else "host_step",
                     "call": call, "state": state, "ms": [], "compile_s": compile_s,
                     "init_s": init_s})
    for r in range(rounds + 1):
        for run in runs:
            t = time.perf_counter()
            run["state"] = jax.block_until_ready(run["call"](run["state"]))
            if r:  # the first round warms up
                run["ms"].append((time.perf_counter() - t) / steps * 1e3)
    rows = []
    for run in runs:
        rows.append({"kind": "step", "model": overrides.get("encoder_spec", overrides["net"]),
                     "formulation": run["name"], "loop": run["loop"], "batch_size": batch,
                     "step_ms": round(statistics.median(run["ms"]), 2),
                     "step_ms_each": [round(x, 1) for x in run["ms"]],
                     "compile_s": round(run["compile_s"], 2), "init_s": round(run["init_s"], 2),
                     "loadavg": os.getloadavg()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-layers", action="store_true")
    p.add_argument("--no-steps", action="store_true")
    p.add_argument("--sd", action="store_true",
                   help="also the SD-style VAE's step (64x64x3, batch --sd-batch-size)")
    p.add_argument("--sd-batch-size", type=int, default=4)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch layer rows")
    add_host_memory_flag(p)
    args = p.parse_args(argv)
    host_memory = apply_host_memory(args.host_memory)
    print(json.dumps({"kind": "env", "backend": jax.default_backend(),
                      "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
                      "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                      "host_memory": host_memory, "loadavg": os.getloadavg()}), flush=True)
    if not args.no_layers:
        profile_layers(args.batch_size, args.reps, torch_too=not args.no_torch)
    if not args.no_steps:
        profile_steps({"net": "conv"}, (28, 28, 1), args.batch_size, steps=8,
                      rounds=args.rounds)
    if args.sd:
        profile_steps({"net": "spec", "encoder_spec": "sd_vae"}, (64, 64, 3),
                      args.sd_batch_size, steps=1, rounds=args.rounds,
                      variants=(("native", False, False), ("gemm", True, False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
