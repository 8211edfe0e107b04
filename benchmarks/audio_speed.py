"""Training speed of jvae's default audio VAE against a PyTorch twin, in one run.

Both frameworks train the same network (:func:`jvae.layers.audio.make_audio_nets`'s
default for the clip length, PQMF filter bank included) on random clips: the
twin's parameter count is asserted equal, and before timing jvae's parameters
are copied into it and both nets' outputs asserted equal (``kind:
twin_check``). The step: encode, draw ``z = loc + scale * eps``,
decode, loss = mean squared error + multi-resolution STFT loss (spectral
convergence + mean absolute log-magnitude difference, FFT sizes 128, 256,
512 and 1024, hop FFT / 4, Hann window; Yamamoto et al., 2020,
arXiv:1910.11480) + ``beta`` x mean KL, then jvae's update (NaN gradients
zeroed, global norm clipped to 1, Adam(1e-3, 0.9, 0.99); the PyTorch twin's
as in ``benchmarks/torch_reference.py``). jvae's step is one jitted
program; PyTorch runs on 2 threads (the machine's cores), as XLA:CPU does.
Rounds are interleaved (jvae, PyTorch, jvae, ...) so load drift on a shared
machine hits both alike.

    python -m benchmarks.audio_speed                       # batch 32 x 8192 samples
    python -m benchmarks.audio_speed --batch-size 8 --length 4096 --rounds 3

Prints one JSON object per line: ``kind: env``, ``kind: twin_check``, one ``kind: case`` per
framework (``clips_per_sec`` the median over rounds, ``step_ms``,
``compile_s``, ``params``) and a ``kind: ratio`` row (jvae over PyTorch; per
round in ``ratio_each``).
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
import optax

from jvae.distributions.likelihoods import gaussian
from jvae.distributions.posteriors import normal_posterior
from jvae.layers.audio import AudioArchitecture, audio_architecture, make_audio_nets
from jvae.layers.pqmf import pqmf_filters
from jvae.training.state import make_optimizer

try:
    import torch
    from torch import nn
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    torch = None

FFT_SIZES = (128, 256, 512, 1024)


# --- the loss, in JAX --------------------------------------------------------


def stft_magnitude(x: jax.Array, n_fft: int, eps: float = 1e-7) -> jax.Array:
    """``|STFT|`` of ``(B, T)`` signals, Hann window, hop ``n_fft / 4``, no padding.

    Frames are four consecutive hops side by side (slices of a reshape), not
    a gather, whose gradient would be a scatter.
    """
    hop = n_fft // 4
    chunks = x.reshape(x.shape[0], -1, hop)
    n = chunks.shape[1] - 3
    frames = jnp.concatenate([chunks[:, i:i + n] for i in range(4)], axis=-1)
    window = jnp.asarray(np.hanning(n_fft + 1)[:-1], x.dtype)
    spec = jnp.fft.rfft(frames * window, axis=-1)
    return jnp.sqrt(spec.real ** 2 + spec.imag ** 2 + eps)


def stft_loss(x: jax.Array, y: jax.Array, sizes=FFT_SIZES) -> jax.Array:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1, averaged over sizes."""
    total = 0.0
    for n in sizes:
        sx, sy = stft_magnitude(x, n), stft_magnitude(y, n)
        sc = jnp.sqrt(jnp.sum((sx - sy) ** 2)) / jnp.sqrt(jnp.sum(sx ** 2))
        total = total + sc + jnp.mean(jnp.abs(jnp.log(sx) - jnp.log(sy)))
    return total / len(sizes)


def jax_step(arch: AudioArchitecture, length: int, latent_channels: int, beta: float, lr: float):
    """``(init, step)`` of jvae's audio VAE; ``step(state, x, key) -> (state, loss)``."""
    posterior, likelihood = normal_posterior(), gaussian()
    enc, dec, latent = make_audio_nets(posterior=posterior, likelihood=likelihood,
                                       data_shape=(length, 1), latent_channels=latent_channels,
                                       arch=arch)
    opt = make_optimizer(lr)

    def init(key, x):
        ke, kd = jax.random.split(key)
        params = {"enc": enc.init(ke, x), "dec": dec.init(kd, jnp.zeros((x.shape[0], *latent)))}
        return params, opt.init(params)

    def loss_fn(params, x, key):
        q = enc.apply(params["enc"], x)
        z = q["loc"] + q["scale"] * jax.random.normal(key, q["loc"].shape)
        out = dec.apply(params["dec"], z)["loc"]
        kl = 0.5 * (q["loc"] ** 2 + q["scale"] ** 2 - 1) - jnp.log(q["scale"])
        return (jnp.mean((out - x) ** 2) + stft_loss(x[..., 0], out[..., 0])
                + beta * jnp.mean(kl))

    @jax.jit
    def step(state, x, key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return init, step


# --- the PyTorch twin ----------------------------------------------------------


class _Twin:
    """PyTorch modules in jvae's layer order, with the jvae parameter each one mirrors.

    ``slots`` lists ``(torch module, jvae path, kind)`` so :meth:`load` can copy
    a jvae parameter tree in (Flax kernels ``(k, in, out)`` become PyTorch's
    ``(out, in, k)``, transposed convolutions' ``(in, out, k)`` flipped, and
    the posterior head's per-parameter convolutions are stacked).
    """

    def __init__(self, arch: AudioArchitecture, latent_channels: int):
        act = {"elu": nn.ELU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU,
               "leaky_relu": lambda: nn.LeakyReLU(0.01)}[arch.activation]
        self.slots = []

        def conv(path, *args, transposed=False, kind="conv", **kw):
            m = (nn.ConvTranspose1d if transposed else nn.Conv1d)(*args, **kw)
            self.slots.append((m, path, "convT" if transposed else kind))
            return m

        class Unit(nn.Module):
            def __init__(self, path, c, d):
                super().__init__()
                self.body = nn.Sequential(
                    act(), conv(path + ("conv",), c, c, arch.kernel, dilation=d,
                                padding=d * (arch.kernel - 1) // 2),
                    act(), conv(path + ("mix",), c, c, 1))

            def forward(self, x):
                return x + self.body(x)

        ch, st, m, sk = arch.channels, arch.strides, arch.bands, arch.stem_kernel
        units = lambda net, s: [Unit((net, f"s{s}_unit{j}"), ch[s], d)  # noqa: E731
                                for j, d in enumerate(arch.dilations)]
        enc = [_PQMF(m, analysis=True)] if m > 1 else []
        enc.append(conv(("enc", "stem"), m, ch[0], sk, padding=sk // 2))
        for s, r in enumerate(st):
            enc += units("enc", s) + [act(), conv(("enc", f"s{s}_down", "conv"), ch[s], ch[s + 1],
                                                  2 * r, stride=r, padding=r // 2)]
        # jvae's ParamHead: a 9-tap convolution per parameter (loc, raw scale), stacked.
        enc += [act(), conv(("enc", "head"), ch[-1], 2 * latent_channels, 9, padding=4,
                            kind="stacked")]
        dec = [conv(("dec", "stem"), latent_channels, ch[-1], sk, padding=sk // 2)]
        for s in reversed(range(len(st))):
            r = st[s]
            dec += [act(), conv(("dec", f"s{s}_up", "conv"), ch[s + 1], ch[s], 2 * r, stride=r,
                                padding=r // 2, transposed=True)] + units("dec", s)
        dec += [act(), conv(("dec", "head", "loc"), ch[0], m, 9, padding=4)]
        dec += [_PQMF(m, analysis=False)] if m > 1 else []
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def parameters(self):
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    @torch.no_grad()
    def load(self, params: dict) -> None:
        """Copies jvae's ``{"enc": ..., "dec": ...}`` parameters in."""
        for module, path, kind in self.slots:
            p = params[path[0]]["params"]
            for key in path[1:]:
                p = p[key]
            if kind == "stacked":
                kernel = np.concatenate([np.asarray(p[k]["kernel"]) for k in ("loc", "scale")], -1)
                bias = np.concatenate([np.asarray(p[k]["bias"]) for k in ("loc", "scale")])
            else:
                kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
            kernel = kernel[::-1].transpose(1, 2, 0) if kind == "convT" else kernel.transpose(2, 1, 0)
            module.weight.copy_(torch.from_numpy(kernel.copy()))
            module.bias.copy_(torch.from_numpy(bias.copy()))


def _PQMF(bands: int, analysis: bool) -> "nn.Module":
    """jvae's fixed PQMF filter bank (:mod:`jvae.layers.pqmf`) as a PyTorch module."""

    class PQMF(nn.Module):
        def __init__(self):
            super().__init__()
            h, g = pqmf_filters(bands)
            self.half = (h.shape[1] - 1) // 2
            # Analysis correlates with h_k at stride M; synthesis zero-stuffs and correlates
            # with M g_k: a stride-M transposed convolution with the flipped filters.
            w = h[:, None, :] if analysis else (bands * g[:, ::-1])[:, None, :]
            self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(w)))

        def forward(self, x):
            if analysis:
                return torch.nn.functional.conv1d(x, self.weight, stride=bands, padding=self.half)
            return torch.nn.functional.conv_transpose1d(x, self.weight, stride=bands,
                                                        padding=self.half,
                                                        output_padding=bands - 1)

    return PQMF()


def torch_twin(arch: AudioArchitecture, latent_channels: int) -> _Twin:
    """jvae's default audio net in PyTorch (channels first), same layers and parameters."""
    return _Twin(arch, latent_channels)


def check_twin(arch: AudioArchitecture, length: int, latent_channels: int) -> float:
    """Largest difference between jvae's and the twin's outputs with the same parameters."""
    init, _ = jax_step(arch, length, latent_channels, 0.0, 1e-3)
    x = np.random.default_rng(1).normal(0, 0.3, (2, length, 1)).astype(np.float32)
    params, _ = init(jax.random.key(2), jnp.asarray(x))
    # Away from the initial values, where zero-initialized layers would hide the others.
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(3)
    params = jax.tree.unflatten(tree, [p + 0.05 * rng.standard_normal(p.shape).astype(np.float32)
                                       for p in leaves])
    enc, dec, latent = make_audio_nets(posterior=normal_posterior(), likelihood=gaussian(),
                                       data_shape=(length, 1), latent_channels=latent_channels,
                                       arch=arch)
    q = enc.apply(params["enc"], jnp.asarray(x))
    y = dec.apply(params["dec"], q["loc"])["loc"]
    twin = torch_twin(arch, latent_channels)
    twin.load(params)
    with torch.no_grad():
        loc, raw = twin.encoder(torch.from_numpy(x.transpose(0, 2, 1).copy())).chunk(2, dim=1)
        y_t = twin.decoder(torch.from_numpy(np.asarray(q["loc"]).transpose(0, 2, 1).copy()))
    diffs = [np.abs(np.asarray(q["loc"]).transpose(0, 2, 1) - loc.numpy()).max(),
             np.abs(np.asarray(q["scale"]).transpose(0, 2, 1)
                    - (torch.nn.functional.softplus(raw) + 1e-6).numpy()).max(),
             np.abs(np.asarray(y).transpose(0, 2, 1) - y_t.numpy()).max()]
    return float(max(diffs))


def torch_stft_loss(x, y, sizes=FFT_SIZES, eps=1e-7):
    total = 0.0
    for n in sizes:
        window = torch.hann_window(n)
        sx, sy = (torch.sqrt(torch.stft(s, n, n // 4, window=window, center=False,
                                        return_complex=True).abs() ** 2 + eps) for s in (x, y))
        sc = torch.linalg.norm(sx - sy) / torch.linalg.norm(sx)
        total = total + sc + torch.mean(torch.abs(torch.log(sx) - torch.log(sy)))
    return total / len(sizes)


def torch_step(arch: AudioArchitecture, latent_channels: int, beta: float, lr: float):
    """``(params, step)``: ``step(x)`` runs one PyTorch training step on ``(B, 1, T)`` clips."""
    twin = torch_twin(arch, latent_channels)
    enc, dec, params = twin.encoder, twin.decoder, twin.parameters()
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), fused=True)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loc, raw = enc(x).chunk(2, dim=1)
        scale = torch.nn.functional.softplus(raw) + 1e-6
        z = loc + scale * torch.randn_like(loc)
        out = dec(z)
        kl = 0.5 * (loc ** 2 + scale ** 2 - 1) - torch.log(scale)
        loss = (torch.mean((out - x) ** 2) + torch_stft_loss(x[:, 0], out[:, 0])
                + beta * kl.mean())
        loss.backward()
        for q in params:  # NaN -> 0 only, then the global-norm clip, as jvae's update
            torch.nan_to_num(q.grad, nan=0.0, posinf=float("inf"), neginf=float("-inf"),
                             out=q.grad)
        nn.utils.clip_grad_norm_(params, max_norm=1.0)
        opt.step()
        return loss

    return params, step


# --- timing ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.audio_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--latent-channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="train steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    p.add_argument("--beta", type=float, default=1e-2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--arch", default="{}", help="JSON overrides of audio_architecture's "
                   "arguments, e.g. '{\"base_channels\": 8}'")
    args = p.parse_args(argv)
    arch = audio_architecture(args.length, **json.loads(args.arch))
    print(json.dumps({"kind": "env", "backend": jax.default_backend(), "jax": jax.__version__,
                      "torch": torch.__version__ if torch else None,
                      "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
                      "arch": arch._asdict(), "batch_size": args.batch_size,
                      "length": args.length}), flush=True)
    rng = np.random.default_rng(0)
    clips = np.clip(rng.normal(0, 0.3, (args.batch_size, args.length, 1)), -1, 1).astype(
        np.float32)

    if torch is not None and not args.no_torch:
        torch.set_num_threads(2)
        diff = check_twin(arch, args.length, args.latent_channels)
        print(json.dumps({"kind": "twin_check", "max_abs_diff": diff}), flush=True)
        assert diff < 1e-3, f"the PyTorch twin computes something else (max difference {diff})"
    init, step = jax_step(arch, args.length, args.latent_channels, args.beta, 1e-3)
    x = jnp.asarray(clips)
    t = time.perf_counter()
    state = init(jax.random.key(0), x)
    n_jax = sum(a.size for a in jax.tree.leaves(state[0]))
    compiled = step.lower(state, x, jax.random.key(1)).compile()
    jax_compile = time.perf_counter() - t

    def run_jax(state, n):
        for i in range(n):
            state, loss = compiled(state, x, jax.random.key(i))
        jax.block_until_ready(loss)
        return state

    runners = {"jvae": run_jax}
    info = {"jvae": {"params": n_jax, "compile_s": round(jax_compile, 2)}}
    states = {"jvae": state}
    if torch is not None and not args.no_torch:
        torch.manual_seed(0)
        params, tstep = torch_step(arch, args.latent_channels, args.beta, 1e-3)
        n_torch = sum(q.numel() for q in params)
        assert n_torch == n_jax, f"PyTorch twin has {n_torch} parameters, jvae {n_jax}"
        xt = torch.from_numpy(clips.transpose(0, 2, 1).copy())

        def run_torch(state, n):
            for _ in range(n):
                tstep(xt)
            return state

        runners["pytorch"] = run_torch
        info["pytorch"] = {"params": n_torch, "compile_s": None}
        states["pytorch"] = None
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds + 1):
        for name, run in runners.items():
            t = time.perf_counter()
            states[name] = run(states[name], args.steps)
            if r:  # the first round warms up
                times[name].append((time.perf_counter() - t) / args.steps)
    rows = {}
    for name, ts in times.items():
        step_s = statistics.median(ts)
        rows[name] = {"kind": "case", "impl": name, "batch_size": args.batch_size,
                      "length": args.length, "clips_per_sec": round(args.batch_size / step_s, 2),
                      "step_ms": round(step_s * 1e3, 1),
                      "step_ms_each": [round(t * 1e3) for t in ts], **info[name],
                      "loadavg": os.getloadavg()}
        print(json.dumps(rows[name]), flush=True)
    if "pytorch" in times:
        each = [b / a for a, b in zip(times["jvae"], times["pytorch"])]
        print(json.dumps({"kind": "ratio", "of": "jvae/pytorch clips/s",
                          "ratio": round(rows["jvae"]["clips_per_sec"]
                                         / rows["pytorch"]["clips_per_sec"], 3),
                          "ratio_each": [round(e, 3) for e in each]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
