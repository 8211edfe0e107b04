"""The floor: the MLP VAE's train step written by hand in plain JAX, no library.

Same math as jvae's ``--net mlp --posterior normal --likelihood bernoulli``
model and ``make_optimizer`` (784-H-2L encoder, softplus scale + 1e-6,
reparameterized Normal sample, L-H-784 decoder of Bernoulli logits, analytic
KL, masked-free batch mean; NaN zeroing, global-norm clipping at 1, Adam with
b1=0.9, b2=0.99, eps=1e-8), with no Flax, optax or distrax: parameters are a
dict of arrays and Adam is four lines. Two drivers:

* ``make_step_runner``: one jitted step per batch, host batches (the loop a
  user writes first; the issue's "minimal hand-written jitted JAX loop");
* ``make_epoch_runner``: the whole split on device and each epoch one
  ``lax.fori_loop`` over the step, as ``jvae.training.epoch`` does it.

``iw_samples=K`` swaps the ELBO for the IWAE-K bound on the same network
(:func:`iw_loss_fn`), the floor of jvae's importance-weighted families. On its
own, ``python -m benchmarks.minimal --hidden 512 --latent 16 --iw-samples 10``
prints one JSON row per epoch of the on-device loop.

jvae's overhead is its step time over these, measured in the same run
(``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["init_params", "loss_fn", "iw_loss_fn", "make_update", "make_step_runner",
           "make_epoch_runner"]

INPUT = 784


def init_params(key, hidden: int = 400, latent: int = 20) -> dict:
    """LeCun-normal weights and zero biases (Flax's Dense default initializers)."""
    shapes = {"enc": (INPUT, hidden), "loc": (hidden, latent), "scale": (hidden, latent),
              "dec": (latent, hidden), "out": (hidden, INPUT)}
    keys = jax.random.split(key, len(shapes))
    params = {}
    for k, (name, (m, n)) in zip(keys, shapes.items()):
        w = jax.random.truncated_normal(k, -2.0, 2.0, (m, n)) * (1.0 / np.sqrt(m)) / 0.8796
        params[name] = {"w": w, "b": jnp.zeros((n,))}
    return params


def _dense(p, x):
    return x @ p["w"] + p["b"]


def _encode(params, x):
    """The posterior's ``(loc, scale)``."""
    h = jax.nn.relu(_dense(params["enc"], x))
    return _dense(params["loc"], h), jax.nn.softplus(_dense(params["scale"], h)) + 1e-6


def _log_bernoulli(params, x, z):
    """``log p(x|z)``: the decoder's Bernoulli log-likelihood, summed over pixels."""
    logits = _dense(params["out"], jax.nn.relu(_dense(params["dec"], z)))
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def loss_fn(params, x, key):
    """Batch mean of the negative ELBO; ``x`` is ``(B, 784)`` in [0, 1]."""
    loc, scale = _encode(params, x)
    z = loc + scale * jax.random.normal(key, loc.shape)
    kl = jnp.sum(0.5 * (loc ** 2 + scale ** 2 - 1.0) - jnp.log(scale), axis=-1)
    return jnp.mean(kl - _log_bernoulli(params, x, z))


def iw_loss_fn(params, x, key, samples: int):
    """Batch mean of the negative IWAE bound with ``samples`` draws (Burda et al., 2016):
    ``-log (1/K) sum_k p(x, z_k) / q(z_k | x)``, the same network as :func:`loss_fn`."""
    loc, scale = _encode(params, x)
    eps = jax.random.normal(key, (samples, *loc.shape))
    z = loc + scale * eps
    # log p(z) - log q(z|x); the Normals' 2 pi terms cancel.
    log_ratio = -0.5 * jnp.sum(z ** 2 - eps ** 2, -1) + jnp.sum(jnp.log(scale), -1)
    log_w = _log_bernoulli(params, x, z) + log_ratio
    return -jnp.mean(jax.nn.logsumexp(log_w, 0) - jnp.log(samples))


def make_update(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.99, eps: float = 1e-8,
                iw_samples: int = 0):
    """``(carry, x) -> (carry, loss)`` with ``carry = (params, m, v, t, key)``; with
    ``iw_samples`` > 0 the loss is :func:`iw_loss_fn`'s bound, else the ELBO."""
    loss = loss_fn if iw_samples <= 0 else (
        lambda params, x, key: iw_loss_fn(params, x, key, iw_samples))

    def update(carry, x):
        params, m, v, t, key = carry
        key, sub = jax.random.split(key)
        loss_value, g = jax.value_and_grad(loss)(params, x, sub)
        g = jax.tree.map(lambda a: jnp.where(jnp.isnan(a), 0.0, a), g)
        norm = jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree.leaves(g)))
        g = jax.tree.map(lambda a: a * jnp.minimum(1.0, 1.0 / norm), g)
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        params = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
                              params, m, v)
        return (params, m, v, t, key), loss_value

    return update


def _init_carry(seed: int, hidden: int, latent: int):
    params = init_params(jax.random.key(seed), hidden, latent)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return (params, zeros, jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
            jax.random.key(seed + 1))


def make_step_runner(batch_size: int, *, hidden: int = 400, latent: int = 20, seed: int = 0):
    """``run_epoch(images (N, 784) float32) -> {images, seconds, loss}``, one dispatch per step."""
    step = jax.jit(make_update(), donate_argnums=0)
    carry = [_init_carry(seed, hidden, latent)]
    rng = np.random.default_rng(seed)

    def run_epoch(images: np.ndarray) -> dict:
        steps = len(images) // batch_size
        start = time.perf_counter()
        order = rng.permutation(len(images))
        c, total = carry[0], jnp.zeros(())
        for i in range(steps):
            c, loss = step(c, images[order[i * batch_size:(i + 1) * batch_size]])
            total = total + loss
        total = float(total)
        carry[0] = c
        return {"images": steps * batch_size, "seconds": time.perf_counter() - start,
                "loss": total / steps}

    return run_epoch


def make_epoch_runner(batch_size: int, *, hidden: int = 400, latent: int = 20, seed: int = 0,
                      iw_samples: int = 0):
    """Like :func:`make_step_runner` with the data on device and one dispatch per epoch
    (``iw_samples`` > 0: the IWAE bound's step, see :func:`make_update`)."""
    update = make_update(iw_samples=iw_samples)

    def epoch(carry, data, order):
        def body(i, c):
            carry, total = c
            carry, loss = update(carry, data[order[i]])
            return carry, total + loss
        return lax.fori_loop(0, order.shape[0], body, (carry, jnp.zeros(())))

    epoch = jax.jit(epoch, donate_argnums=0)
    carry = [_init_carry(seed, hidden, latent)]
    rng = np.random.default_rng(seed)
    cache = {}

    def run_epoch(images: np.ndarray) -> dict:
        if cache.get("source") is not images:
            cache["source"], cache["data"] = images, jax.device_put(images)
        steps = len(images) // batch_size
        start = time.perf_counter()
        order = rng.permutation(len(images))[:steps * batch_size].reshape(steps, batch_size)
        carry[0], total = epoch(carry[0], cache["data"], order.astype(np.int32))
        total = float(total)
        return {"images": steps * batch_size, "seconds": time.perf_counter() - start,
                "loss": total / steps}

    return run_epoch


def main() -> None:
    """The floor on its own: one JSON row per epoch of the on-device loop (the first
    epoch's ``seconds`` include its compile), on random binary images of MNIST's size."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--iw-samples", type=int, default=0, help="0: the ELBO; K: IWAE-K")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    images = (np.random.default_rng(0).random((args.images, INPUT), np.float32) < 0.2
              ).astype(np.float32)
    run = make_epoch_runner(args.batch_size, hidden=args.hidden, latent=args.latent,
                            iw_samples=args.iw_samples)
    for epoch in range(args.epochs):
        row = run(images)
        row.update(benchmark="minimal_floor", epoch=epoch + 1, hidden=args.hidden,
                   latent=args.latent, iw_samples=args.iw_samples, batch_size=args.batch_size,
                   seconds=round(row["seconds"], 3))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
