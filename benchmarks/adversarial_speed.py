"""What jvae's PatchGAN discriminator adds to a train step, against a PyTorch twin, in one run.

Both frameworks train jvae's ``--net conv`` VAE on 28x28x1 MNIST training images
(``--hidden 256``, latent 20; the twin is ``benchmarks/torch_reference.py``'s
``_conv_vae``) at batch 64, each batch a different slice of the images, and
two steps are timed per framework:

* ``plain``: encode, draw ``z = loc + scale * eps`` (``scale = softplus(raw) +
  1e-6``), decode, loss = batch mean of the Laplace negative log-likelihood
  ``sum |x - x_hat| / 0.5 + log(2 * 0.5)`` + 1e-6 x the closed-form KL, then
  one update of jvae's optimizer (NaN gradients zeroed, global norm clipped
  to 1, Adam(lr, 0.9, 0.99); PyTorch's as ``TorchVAERunner``'s, fused Adam).
  jvae: ``--likelihood laplace --laplace-scale 0.5 --beta 1e-6``.
* ``adv``: latent diffusion's generator step and discriminator step on the
  same batch (jvae: the same config with ``--adv-weight 0.5 --adv-start 0
  --adv-layers 2 --adv-channels 64``, hinge loss, adaptive weight on). The
  generator's loss is the plain loss + ``0.5 * lambda * (-mean D(x_hat))``,
  ``lambda = clip(||grad_W rec|| / (||grad_W g|| + 1e-4), 0, 1e4)`` held
  constant, ``rec`` the batch mean of the Laplace NLL, ``g = -mean D(x_hat)``,
  ``W`` the decoder's last convolution's kernel (3x3, 32 -> 1); PyTorch takes
  both gradients with ``torch.autograd.grad(..., W, retain_graph=True)``, as
  latent diffusion's ``calculate_adaptive_weight``, and freezes the
  discriminator's parameters during the generator's backward pass (as
  Lightning's ``toggle_optimizer``). Then the discriminator ``D`` (pix2pix's
  PatchGAN: 4x4 convolutions, 64 -> 128 channels at stride 2, 256 at stride 1,
  one logit per patch; BatchNorm over each call's own batch, no running
  averages; LeakyReLU 0.2; pixels mapped to [-1, 1]) takes one Adam(lr, 0.5,
  0.9) step on ``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``,
  ``x_hat`` the generator pass's reconstruction, detached, real and fake in
  two separate calls.

jvae's steps are ``jvae.training.state.make_train_step``'s jitted programs,
compiled ahead of time (``compile_s``); PyTorch runs eagerly on
``os.cpu_count()`` threads. Nothing is copied between the frameworks (their
initializations differ); the parameter counts of VAE and discriminator are
asserted equal (``kind: twin_check``). Rounds are interleaved (jvae plain,
PyTorch plain, jvae adv, PyTorch adv, repeat) after one warm-up round, so
load drift on a shared machine hits all alike.

    python -m benchmarks.adversarial_speed                  # batch 64, 5 rounds of 20 steps
    python -m benchmarks.adversarial_speed --rounds 3 --steps 10 --batch-size 128
    python benchmarks/adversarial_speed.py --no-torch       # jvae only

MNIST is read from ``--data-dir`` (default ``../shared/data/mnist`` from the
repository root; gzipped IDX); when it is missing the steps train on uniform
random images (a ``kind: note`` row says so; the speed does not depend on the
pixels). Prints one JSON object per line: ``kind: env`` (versions, threads,
load average), ``kind: twin_check`` (both frameworks' parameter counts), one
``kind: case`` per framework and step (``step_ms`` the median over rounds,
``step_ms_each``, ``images_per_sec``, ``compile_s``; the ``adv`` rows also
``adv_over_plain``: the discriminator's cost as adv step time / plain step
time, per round in ``adv_over_plain_each``) and a ``kind: ratio`` row:
PyTorch's adv step time / jvae's (>= 1.0: jvae at least as fast; per round
in ``ratio_each``; ``plain_ratio`` the same for the plain step).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import torch_reference
from jvae.app.config import make_config
from jvae.devices.parallel import data_mesh
from jvae.training.experiment import DataSpec, build, example_batch, init_state
from jvae.training.state import make_train_step

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    torch = None

SHAPE = (28, 28, 1)
LATENT = 20
HIDDEN = 256
LAPLACE_SCALE = 0.5
BETA = 1e-6
ADV_WEIGHT = 0.5


# --- jvae ----------------------------------------------------------------------------


def jvae_config(adv: bool, layers: int, channels: int, lr: float, batch_size: int):
    """The config of the jvae step: ``adv`` adds the PatchGAN term from step 0."""
    return make_config({"net": "conv", "hidden": (HIDDEN,), "latent_dim": LATENT,
                        "likelihood": "laplace", "laplace_scale": LAPLACE_SCALE, "beta": BETA,
                        "adv_weight": ADV_WEIGHT if adv else 0.0, "adv_start": 0,
                        "adv_layers": layers, "adv_channels": channels, "lr": lr,
                        "batch_size": batch_size})


def jvae_case(adv: bool, batches: list[dict], args) -> tuple:
    """``(state, compiled step, compile_s, vae params, discriminator params)``."""
    cfg = jvae_config(adv, args.adv_layers, args.adv_channels, args.lr, args.batch_size)
    exp = build(cfg, DataSpec(SHAPE))
    state = init_state(exp, jax.random.key(0), example_batch(exp, args.batch_size))
    n_vae = sum(a.size for a in jax.tree.leaves(state.params))
    n_disc = sum(a.size for a in jax.tree.leaves(state.loss_state["adv"].params)) if adv else 0
    step = make_train_step(exp.objective, exp.optimizer, mesh=data_mesh(1))
    t = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    return state, compiled, time.perf_counter() - t, n_vae, n_disc


# --- the PyTorch twin ----------------------------------------------------------------


def torch_patchgan(layers: int, channels: int, in_channels: int = 1):
    """pix2pix's NLayerDiscriminator as jvae's ``PatchGAN``: batch statistics only, [-1, 1] inputs.

    Returns ``(D, module)``: ``D(x)`` maps images in [0, 1] to patch logits.
    """
    mods = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
    prev = channels
    for n in range(1, layers + 1):
        out = channels * min(2 ** n, 8)
        mods += [nn.Conv2d(prev, out, 4, 2 if n < layers else 1, 1, bias=False),
                 nn.BatchNorm2d(out, track_running_stats=False), nn.LeakyReLU(0.2)]
        prev = out
    mods.append(nn.Conv2d(prev, 1, 4, 1, 1))
    net = nn.Sequential(*mods)
    return lambda x: net(2.0 * x - 1.0), net


def _laplace_runner_class():
    class LaplaceRunner(torch_reference.TorchVAERunner):
        """``TorchVAERunner`` (its optimizer, clipping and NaN zeroing) with jvae's Laplace loss."""

        def terms(self, x):
            """``(x_hat, per-example Laplace NLL, per-example KL)``."""
            loc, raw = self.encode(x)
            scale = F.softplus(raw) + 1e-6
            eps = torch.randn(loc.shape, generator=self.noise_gen, device=self.device)
            x_hat = self.decode(loc + scale * eps)
            b = LAPLACE_SCALE
            nll = ((x - x_hat).abs() / b + float(np.log(2 * b))).flatten(1).sum(-1)
            return x_hat, nll, torch_reference._gaussian_kl(loc, scale)

        def loss(self, x):
            _, nll, kl = self.terms(x)
            return (nll + BETA * kl).mean()

    return LaplaceRunner


def _adversarial_runner_class():
    class AdversarialRunner(_laplace_runner_class()):
        """The Laplace runner plus latent diffusion's generator and discriminator steps."""

        def add_discriminator(self, layers: int, channels: int, lr: float):
            self.disc, self.disc_net = torch_patchgan(layers, channels)
            self.disc_net.to(self.device)
            self.disc_params = list(self.disc_net.parameters())
            self.disc_opt = torch.optim.Adam(self.disc_params, lr=lr, betas=(0.5, 0.9), fused=True)
            self.last = self.decode[-1].weight  # the decoder's last conv, 32 -> 1
            assert tuple(self.last.shape) == (1, 32, 3, 3), self.last.shape

        def _step(self, x):
            # The generator's step, D frozen.
            self.optimizer.zero_grad(set_to_none=True)
            self.disc_net.requires_grad_(False)
            x_hat, nll, kl = self.terms(x)
            rec_loss = nll.mean()
            g_loss = -self.disc(x_hat).mean()
            rec_grad, = torch.autograd.grad(rec_loss, self.last, retain_graph=True)
            g_grad, = torch.autograd.grad(g_loss, self.last, retain_graph=True)
            weight = torch.clamp(rec_grad.norm() / (g_grad.norm() + 1e-4), 0.0, 1e4).detach()
            loss = rec_loss + BETA * kl.mean() + ADV_WEIGHT * weight * g_loss
            loss.backward()
            for p in self.params:  # NaN -> 0 only; infinities are left to the clipping
                torch.nan_to_num(p.grad, nan=0.0, posinf=float("inf"), neginf=float("-inf"),
                                 out=p.grad)
            nn.utils.clip_grad_norm_(self.params, max_norm=1.0)
            self.optimizer.step()
            # The discriminator's step on the same batch, against the detached reconstructions.
            self.disc_net.requires_grad_(True)
            self.disc_opt.zero_grad(set_to_none=True)
            fake = x_hat.detach()
            d_loss = 0.5 * (F.relu(1.0 - self.disc(x)).mean() + F.relu(1.0 + self.disc(fake)).mean())
            d_loss.backward()
            self.disc_opt.step()
            return loss.detach()

    return AdversarialRunner


def torch_case(adv: bool, args):
    """A runner whose ``_step(x)`` is one PyTorch train step on an NCHW batch."""
    torch.manual_seed(0)
    parts = torch_reference._conv_vae(LATENT, HIDDEN)
    cls = _adversarial_runner_class() if adv else _laplace_runner_class()
    runner = cls(args.batch_size, *parts, seed=0)
    for group in runner.optimizer.param_groups:
        group["lr"] = args.lr
    if adv:
        runner.add_discriminator(args.adv_layers, args.adv_channels, args.lr)
    return runner


# --- timing --------------------------------------------------------------------------


def load_images(data_dir: str, n: int) -> tuple[np.ndarray, str]:
    """The first ``n`` MNIST training images ``(n, 28, 28, 1)`` in [0, 1] (all there are, if
    fewer), or ``n`` uniform random ones if the files are missing."""
    try:
        images = torch_reference.load_mnist_images(data_dir)[:n].reshape(-1, *SHAPE)
        return np.ascontiguousarray(images), "mnist"
    except (OSError, ValueError) as e:
        print(json.dumps({"kind": "note", "note": f"no MNIST in {data_dir} ({e}); "
                          "training on uniform random images"}), flush=True)
    return np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32), "random"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adversarial_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="train steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of VAE and discriminator")
    p.add_argument("--adv-layers", type=int, default=2)
    p.add_argument("--adv-channels", type=int, default=64)
    p.add_argument("--data-dir", default=str(torch_reference.DEFAULT_DATA_DIR))
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    use_torch = torch is not None and not args.no_torch
    if use_torch:
        torch.set_num_threads(os.cpu_count() or 1)

    # One batch per step of a round (at most the images there are), the same for both.
    n_batches = max(1, args.steps)
    images, source = load_images(args.data_dir, n_batches * args.batch_size)
    n_batches = len(images) // args.batch_size
    if n_batches < 1:
        raise SystemExit(f"need at least {args.batch_size} images, found {len(images)}")
    print(json.dumps({"kind": "env", "backend": jax.default_backend(), "jax": jax.__version__,
                      "torch": torch.__version__ if torch else None,
                      "torch_threads": torch.get_num_threads() if use_torch else None,
                      "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "data": source,
                      "distinct_batches": n_batches,
                      "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
                      "adv_layers": args.adv_layers, "adv_channels": args.adv_channels}),
          flush=True)
    mask = jnp.ones((args.batch_size,), jnp.float32)
    jax_batches = [{"image": jnp.asarray(images[i * args.batch_size:(i + 1) * args.batch_size]),
                    "mask": mask} for i in range(n_batches)]

    info, runners, states = {}, {}, {}
    for adv in (False, True):
        name = "adv" if adv else "plain"
        state, compiled, compile_s, n_vae, n_disc = jvae_case(adv, jax_batches, args)
        info[("jvae", name)] = {"compile_s": round(compile_s, 2), "params": n_vae,
                                "disc_params": n_disc}
        states[("jvae", name)] = state

        def run_jax(state, n, compiled=compiled):
            for i in range(n):
                state, metrics = compiled(state, jax_batches[i % n_batches])
            jax.block_until_ready(metrics)
            return state

        runners[("jvae", name)] = run_jax
        if use_torch:
            runner = torch_case(adv, args)
            n_t = sum(q.numel() for q in runner.params)
            n_td = sum(q.numel() for q in runner.disc_params) if adv else 0
            info[("pytorch", name)] = {"compile_s": None, "params": n_t, "disc_params": n_td}
            states[("pytorch", name)] = None
            nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
            torch_batches = list(nchw.split(args.batch_size))[:n_batches]

            def run_torch(state, n, runner=runner, torch_batches=torch_batches):
                for i in range(n):
                    loss = runner._step(torch_batches[i % n_batches])
                loss.item()
                return state

            runners[("pytorch", name)] = run_torch

    if use_torch:
        counts = {impl: {"vae": info[(impl, "adv")]["params"],
                         "discriminator": info[(impl, "adv")]["disc_params"]}
                  for impl in ("jvae", "pytorch")}
        print(json.dumps({"kind": "twin_check", "params": counts}), flush=True)
        assert counts["jvae"] == counts["pytorch"], f"the PyTorch twin differs in size: {counts}"
        assert info[("jvae", "plain")]["params"] == info[("pytorch", "plain")]["params"]

    # Interleaved: jvae plain, PyTorch plain, jvae adv, PyTorch adv; the first round warms up.
    times: dict[tuple, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds + 1):
        for key, run in runners.items():
            t = time.perf_counter()
            states[key] = run(states[key], args.steps)
            if r:
                times[key].append((time.perf_counter() - t) / args.steps)

    med = {k: statistics.median(ts) for k, ts in times.items()}
    for (impl, name), ts in times.items():
        row = {"kind": "case", "impl": impl, "step": name, "batch_size": args.batch_size,
               "step_ms": round(med[(impl, name)] * 1e3, 2),
               "step_ms_each": [round(t * 1e3, 2) for t in ts],
               "images_per_sec": round(args.batch_size / med[(impl, name)], 1),
               **info[(impl, name)]}
        if name == "adv":
            plain = times[(impl, "plain")]
            row["adv_over_plain"] = round(med[(impl, "adv")] / med[(impl, "plain")], 3)
            row["adv_over_plain_each"] = [round(a / b, 3) for a, b in zip(ts, plain)]
        row["loadavg"] = os.getloadavg()
        print(json.dumps(row), flush=True)
    if use_torch:
        def each(name):
            return [round(t / j, 3) for j, t in zip(times[("jvae", name)], times[("pytorch", name)])]

        print(json.dumps({"kind": "ratio", "of": "pytorch/jvae adv step time",
                          "ratio": round(med[("pytorch", "adv")] / med[("jvae", "adv")], 3),
                          "ratio_each": each("adv"),
                          "plain_ratio": round(med[("pytorch", "plain")] / med[("jvae", "plain")], 3),
                          "plain_ratio_each": each("plain")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
