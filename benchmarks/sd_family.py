"""Stable Diffusion's autoencoder and TAESD: jvae against diffusers on this CPU, in one run.

Both frameworks run the same random weights (a diffusers model saved with
``save_pretrained`` and imported with ``jvae import-weights``) on the same
photo (scikit-learn's bundled ``china.jpg``, centre-cropped and resized to
``--size``), for two layouts:

* ``sd``: the SD 1.x/2.x ``AutoencoderKL`` (83.65M parameters); encode gives
  the posterior mean, decode its image;
* ``taesd``: the ``AutoencoderTiny`` (TAESD, 2.45M parameters).

Each is timed untiled and tiled (tiles of at most ``--tile`` image pixels
overlapping by a quarter; diffusers' ``enable_tiling`` with its tile sizes set
to the same; jvae shortens its tiles to the least that covers the image in as
many, :func:`jvae.layers.tiling.fit_tile`, as diffusers' last tiles are
partial), encode and decode separately, the median of ``--rounds`` after one
warm-up call (jvae's warm-up is its compilation, reported as ``compile_s``).
jvae runs what ``jvae encode``/``jvae decode`` run,
:class:`jvae.app.native.NativeNet`, one image a call. Every case runs in a
fresh process, so ``peak_rss_mb`` (the process's peak resident memory,
``VmHWM``) is that case's alone: weights, the framework's runtime, the
activations. ``kind: big`` rows decode a ``--big``-pixel square image tiled
(jvae), the memory bound: its peak against the plan of the untiled program
(``untiled_plan_mb``, from the compiler's memory analysis; nothing is run).

jvae runs forward-only programs with XLA's own convolutions
(:func:`jvae.layers.convolution.native_convolutions`); PyTorch runs eagerly
on ``--threads`` threads (default: the CPU count), under ``torch.no_grad``.

    python -m benchmarks.sd_family                       # 512x512, tile 256, the 2048 TAESD decode
    python -m benchmarks.sd_family --big-layouts taesd sd # also the SD layout's 2048 decode (minutes)
    python -m benchmarks.sd_family --layouts taesd --rounds 5
    python -m benchmarks.sd_family --layouts --big-layouts  # the convolution rows only

Prints one JSON object per line: ``kind: env``, ``kind: conv`` (one forward
3x3 convolution of the layouts' shapes as im2col + GEMM, training's form on
CPU, and as XLA's own, which these forward programs use), one ``kind: case`` per
framework, layout and tiling, ``kind: ratio`` per layout and tiling
(diffusers' encode + decode time over jvae's: >= 1.0 means jvae is at least as
fast) and ``kind: big`` rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACTOR = 8


def _photo(size: int) -> np.ndarray:
    """``china.jpg`` centre-cropped square and resized: ``(1, size, size, 3)`` in [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = load_sample_image("china.jpg")
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    out = Image.fromarray(crop).resize((size, size), Image.BICUBIC)
    return (np.asarray(out, np.float32) / 255.0)[None]


def _peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``getrusage``'s
    ``ru_maxrss`` it starts afresh at ``exec``, not at the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, rounds: int) -> tuple[float, list[float], float]:
    """(median, each, first call) seconds of ``fn()`` over ``rounds`` after one warm-up."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    each = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        each.append(time.perf_counter() - t)
    return statistics.median(each), each, first


# --- the weights ---------------------------------------------------------------------


def make_weights(folder: Path, layout: str) -> Path:
    """A random diffusers model of ``layout`` (norms and biases perturbed), saved."""
    import diffusers
    import torch

    from jvae.layers.diffusers import KNOWN_LAYOUTS

    torch.manual_seed(0)
    config = {k: v for k, v in KNOWN_LAYOUTS[layout].items() if not k.startswith("_")}
    cls = diffusers.AutoencoderTiny if layout.startswith("taesd") else diffusers.AutoencoderKL
    model = cls(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    src = folder / layout
    model.save_pretrained(src)
    return src


# --- one case per process ------------------------------------------------------------


def _diffusers_case(src: Path, layout: str, size: int, tile: int, rounds: int,
                    threads: int) -> dict:
    import diffusers
    import torch

    torch.set_num_threads(threads)
    cls = diffusers.AutoencoderTiny if layout.startswith("taesd") else diffusers.AutoencoderKL
    model = cls.from_pretrained(src, low_cpu_mem_usage=False).eval()
    if tile:
        model.enable_tiling()
        model.tile_sample_min_size = tile
        model.tile_overlap_factor = 0.25
        if hasattr(model, "tile_latent_min_size"):
            model.tile_latent_min_size = tile // FACTOR
    x = torch.from_numpy(2 * _photo(size) - 1).permute(0, 3, 1, 2).contiguous()

    def encode():
        out = model.encode(x)
        return out.latents if hasattr(out, "latents") else out.latent_dist.mean

    with torch.no_grad():
        z = encode()
        enc, enc_each, _ = _timed(encode, rounds)
        dec, dec_each, _ = _timed(lambda: model.decode(z).sample, rounds)
    return {"encode_s": enc, "decode_s": dec, "encode_each": enc_each, "decode_each": dec_each,
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def _jvae_net(workdir: Path, tile: int):
    """The imported run as :class:`~jvae.app.native.NativeNet`: what ``jvae encode`` and
    ``jvae decode`` run (whole images with ``tile`` 0, else tiles of at most ``tile``
    pixels overlapping by a quarter), its parameters on the device."""
    import jax

    from jvae.app.modes.weights import restore_params
    from jvae.app.native import NativeNet, Tiling
    from jvae.app.runs import saved_config
    from jvae.training.experiment import DataSpec, build

    params, layout = restore_params(workdir)
    cfg = saved_config(workdir)
    shape = (64, 64, 3)
    vae = build(cfg, DataSpec(shape)).vae
    return NativeNet(cfg, jax.device_put(params), vae, shape, layout.factor,
                     tiling=Tiling(tile, 0.25), budget=1 << 50)


def _jvae_case(workdir: Path, size: int, tile: int, rounds: int) -> dict:
    import jax

    x = _photo(size)[0]
    net = _jvae_net(workdir, tile)
    t = time.perf_counter()
    z = net.encode(x)["mean"]
    net.decode(z)
    compile_s = time.perf_counter() - t
    enc, enc_each, _ = _timed(lambda: net.encode(x), rounds)
    dec, dec_each, _ = _timed(lambda: net.decode(z), rounds)
    return {"encode_s": enc, "decode_s": dec, "encode_each": enc_each, "decode_each": dec_each,
            "compile_s": compile_s, "jax": jax.__version__}


def _big_case(workdir: Path, size: int, tile: int) -> dict:
    """A tiled decode of a ``size`` square image, and the untiled program's planned bytes."""
    import jax

    from jvae.devices.budget import compiled_bytes
    from jvae.inference import make_inference

    net = _jvae_net(workdir, tile)
    channels = net.vae((64, 64, 3)).latent_shape[-1]
    z = np.random.default_rng(0).standard_normal((size // FACTOR, size // FACTOR, channels))
    t = time.perf_counter()
    out = net.decode(z.astype(np.float32))
    wall = time.perf_counter() - t
    rss = _peak_rss_mb()
    # The untiled program at full size, planned by the compiler, never run.
    decode = make_inference(net.vae((size, size, 3)), 1).decode
    abstract = jax.ShapeDtypeStruct((1, *z.shape), np.float32)
    plan = compiled_bytes(decode.lower(net.params, abstract).compile())
    return {"decode_s": wall, "peak_rss_mb": rss, "untiled_plan_mb": plan / 2**20,
            "finite": bool(np.isfinite(out).all()), "output_shape": list(out.shape),
            "tiles": net.tiles}


def _run_case(args: argparse.Namespace) -> None:
    framework, layout, size, tile = args.case.split(":")
    size, tile = int(size), int(tile)
    row = {"kind": "case", "framework": framework, "layout": layout, "size": size,
           "tile": tile}
    if framework == "diffusers":
        row.update(_diffusers_case(Path(args.weights) / layout, layout, size, tile, args.rounds,
                                   args.threads))
    elif framework == "jvae":
        row.update(_jvae_case(Path(args.weights) / f"{layout}-run", size, tile, args.rounds))
    else:
        row.update(kind="big", framework="jvae")
        row.update(_big_case(Path(args.weights) / f"{layout}-run", size, tile))
    row.setdefault("peak_rss_mb", _peak_rss_mb())
    print(json.dumps(row), flush=True)


# --- why forward programs use XLA's convolutions ----------------------------------------

# (side, channels in, channels out) of the SD and TAESD layouts' 3x3 convolutions.
CONV_SHAPES = ((512, 128, 128), (256, 256, 256), (64, 512, 512), (512, 64, 64), (512, 3, 128))


def conv_rows(rounds: int = 3) -> list[dict]:
    """One forward 3x3 convolution per shape of :data:`CONV_SHAPES`, batch 1, as im2col +
    GEMM (training's form on CPU) and as XLA's own: the best of ``rounds`` in ms and
    GFLOP/s."""
    import jax
    from jax import lax

    from jvae.layers.convolution import conv

    rows = []
    for side, c_in, c_out in CONV_SHAPES:
        rng = np.random.default_rng(0)
        x = jax.numpy.asarray(rng.standard_normal((1, side, side, c_in)), np.float32)
        w = jax.numpy.asarray(rng.standard_normal((3, 3, c_in, c_out)), np.float32)
        forms = {
            "gemm": jax.jit(lambda x, w: conv(x, w, (1, 1), ((1, 1), (1, 1)))),
            "xla": jax.jit(lambda x, w: lax.conv_general_dilated(
                x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))),
        }
        flops = 2 * side * side * c_in * c_out * 9
        row = {"kind": "conv", "side": side, "c_in": c_in, "c_out": c_out}
        for name, fn in forms.items():
            fn(x, w).block_until_ready()
            best = min(_timed(lambda: fn(x, w).block_until_ready(), rounds)[1])  # noqa: B023
            row[f"{name}_ms"] = 1e3 * best
            row[f"{name}_gflops"] = flops / best / 1e9
        rows.append(row)
    return rows


# --- the driver ----------------------------------------------------------------------


def _subprocess_row(args: argparse.Namespace, case: str, weights: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.sd_family", "--case", case, "--weights",
           str(weights), "--rounds", str(args.rounds), "--threads", str(args.threads)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not rows:
        return {"kind": "error", "case": case, "stderr": done.stderr[-2000:]}
    return json.loads(rows[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", nargs="*", default=["sd", "taesd"], choices=["sd", "taesd"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--big", type=int, default=2048, help="side of the tiled big decode")
    p.add_argument("--big-layouts", nargs="*", default=["taesd"], choices=["sd", "taesd"])
    p.add_argument("--big-tile", type=int, default=512)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        return _run_case(args)

    import jax

    from jvae.app.modes.weights import import_diffusers

    print(json.dumps({"kind": "env", "cpu_count": os.cpu_count(), "threads": args.threads,
                      "jax": jax.__version__, "load_avg": os.getloadavg()}), flush=True)
    for row in conv_rows(args.rounds):
        print(json.dumps(row), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        for layout in sorted(set(args.layouts) | set(args.big_layouts)):
            src = make_weights(weights, layout)
            import_diffusers(src, weights / f"{layout}-run", data_shape=(64, 64, 3))
        for layout in args.layouts:
            for tile in dict.fromkeys((0, args.tile)):
                rows = {}
                # jvae first, then diffusers: each in its own process.
                for framework in ("jvae", "diffusers"):
                    rows[framework] = _subprocess_row(
                        args, f"{framework}:{layout}:{args.size}:{tile}", weights)
                    print(json.dumps(rows[framework]), flush=True)
                if all(r.get("kind") == "case" for r in rows.values()):
                    total = {k: r["encode_s"] + r["decode_s"] for k, r in rows.items()}
                    print(json.dumps({"kind": "ratio", "layout": layout, "size": args.size,
                                      "tile": tile, "diffusers_over_jvae":
                                      total["diffusers"] / total["jvae"],
                                      "load_avg": os.getloadavg()}), flush=True)
        for layout in args.big_layouts:
            print(json.dumps(_subprocess_row(
                args, f"big:{layout}:{args.big}:{args.big_tile}", weights)), flush=True)


if __name__ == "__main__":
    main()
