"""A masked autoregressive flow (MAF; Papamakarios, Pavlakou & Murray, 2017, arXiv:1705.07057).

Each layer is an affine autoregressive map whose shift and log-scale come from
a MADE network (Germain et al., 2015, arXiv:1502.03509): ``u_i = (x_i - mu_i)
exp(-alpha_i)`` with ``(mu_i, alpha_i)`` functions of ``x_{<i}`` only. MADE
enforces that with masked weights: inputs get the degrees ``1..D``, hidden
unit ``j`` the degree ``m(j) = 1 + (j mod (D - 1))`` (the "sequential"
assignment), a weight from degree ``a`` to hidden degree ``b`` is kept when
``b >= a`` and one to output ``i`` when ``i > b``. The Jacobian of a layer is
triangular with diagonal ``exp(-alpha)``, so

    log p(x) = log N(u; 0, I) - sum_layers sum_i alpha_i

in one pass of every layer (density evaluation is parallel: training is by
maximum likelihood on minibatches). Layers alternate the order of the
dimensions (reversed between layers, the paper's choice). Sampling inverts
the layers from ``u ~ N(0, I)``: ``x_i = u_i exp(alpha_i) + mu_i`` needs
``x_{<i}``, so each layer takes ``D`` passes of its MADE (a ``fori_loop``:
after pass ``t`` the first ``t`` dimensions are exact).

The paper's batch-normalisation layers are left out: the codes are
standardised once instead (:func:`~jvae.training.samplers.base.standardizer`),
and the flow starts at the identity (output weights near 0). Each log-scale is
bounded softly, ``alpha = 3 tanh(a / 3)`` for the MADE's output ``a``, so no
layer stretches a code by more than ``e^3``: without it a flow fitted to a
few thousand codes can map a code between them to infinity. Training stops
early on a tenth of the codes held out, as in the paper
(:func:`~jvae.training.samplers.base.fit_by_gradient`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jvae.base import Array, Objective
from jvae.layers.heads import activation_by_name
from jvae.training.samplers.base import (
    Sampler,
    SamplerError,
    fit_by_gradient,
    split_codes,
    standardizer,
)

__all__ = ["masked_autoregressive_flow", "made_masks", "init_maf", "maf_forward", "maf_inverse",
           "maf_log_prob", "ALPHA_BOUND"]

# Standard deviation of the output layer's initial weights: the flow starts near identity.
_OUTPUT_INIT = 1e-2
# The soft bound of each layer's log-scales.
ALPHA_BOUND = 3.0


def made_masks(dim: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """The connectivity masks of one MADE over ``dim`` inputs (see the module's docstring).

    Args:
      dim: ``D``, inputs and outputs (each output comes twice: shift, then log-scale).
      hidden: hidden layer widths.

    Returns:
      One ``(fan_in, fan_out)`` 0/1 mask per weight matrix, the last ``(hidden[-1], 2 D)``.
    """
    degrees = np.arange(1, dim + 1)
    previous = degrees
    masks = []
    for width in hidden:
        unit = np.arange(width) % max(dim - 1, 1) + 1
        masks.append((unit[None, :] >= previous[:, None]).astype(np.float32))
        previous = unit
    out = (degrees[None, :] > previous[:, None]).astype(np.float32)
    masks.append(np.concatenate([out, out], axis=1))
    return masks


def init_maf(key: Array, dim: int, num_layers: int, hidden: tuple[int, ...]) -> list[dict]:
    """Weights of ``num_layers`` MADEs: ``[{"w": [...], "b": [...]}, ...]``.

    Hidden weights are He-normal (``sqrt(2 / fan_in)``), the output's ``N(0, 0.01^2)``.
    """
    layers = []
    sizes = (dim, *hidden, 2 * dim)
    for key_layer in jax.random.split(key, num_layers):
        ws, bs = [], []
        for i, k in enumerate(jax.random.split(key_layer, len(sizes) - 1)):
            fan_in, fan_out = sizes[i], sizes[i + 1]
            std = _OUTPUT_INIT if i == len(sizes) - 2 else math.sqrt(2.0 / fan_in)
            ws.append(std * jax.random.normal(k, (fan_in, fan_out)))
            bs.append(jnp.zeros((fan_out,)))
        layers.append({"w": ws, "b": bs})
    return layers


def _made(layer: dict, x: Array, activation: str) -> tuple[Array, Array]:
    """``(mu, alpha)`` of one MADE at ``x`` ``(N, D)``; output ``i`` sees ``x_{<i}`` only,
    and ``|alpha| < ALPHA_BOUND``."""
    act = activation_by_name(activation)
    ws, bs = layer["w"], layer["b"]
    masks = made_masks(x.shape[-1], tuple(w.shape[1] for w in ws[:-1]))
    h = x
    for i, (w, b, m) in enumerate(zip(ws, bs, masks)):
        h = h @ (w * m) + b
        if i < len(ws) - 1:
            h = act(h)
    mu, alpha = jnp.split(h, 2, axis=-1)
    return mu, ALPHA_BOUND * jnp.tanh(alpha / ALPHA_BOUND)


def maf_forward(layers: list[dict], x: Array, activation: str = "relu") -> tuple[Array, Array]:
    """The density direction ``x -> u``: ``(u, log |det du/dx|)``, ``(N, D)`` and ``(N,)``."""
    log_det = jnp.zeros(x.shape[:-1], x.dtype)
    for i, layer in enumerate(layers):
        if i:
            x = x[..., ::-1]
        mu, alpha = _made(layer, x, activation)
        x = (x - mu) * jnp.exp(-alpha)
        log_det = log_det - alpha.sum(-1)
    return x, log_det


def maf_inverse(layers: list[dict], u: Array, activation: str = "relu") -> Array:
    """The sampling direction ``u -> x``, the inverse of :func:`maf_forward`."""
    dim = u.shape[-1]
    for i in reversed(range(len(layers))):
        layer, target = layers[i], u

        def one_pass(_, x, layer=layer, target=target):
            mu, alpha = _made(layer, x, activation)
            return target * jnp.exp(alpha) + mu

        u = jax.lax.fori_loop(0, dim, one_pass, jnp.zeros_like(u))
        if i:
            u = u[..., ::-1]
    return u


def maf_log_prob(layers: list[dict], x: Array, activation: str = "relu") -> Array:
    """``log p(x) = log N(u; 0, I) + log |det du/dx|`` ``(N,)`` under a standard Normal base."""
    u, log_det = maf_forward(layers, x, activation)
    return -0.5 * jnp.sum(u ** 2, -1) - 0.5 * u.shape[-1] * math.log(2 * math.pi) + log_det


@functools.lru_cache(maxsize=16)
def _maf(num_layers: int, hidden: tuple[int, ...], activation: str, steps: int, batch_size: int,
         learning_rate: float) -> Sampler:
    objective = Objective(
        lambda: (),
        lambda params, batch, key, state: (
            {"loss": -maf_log_prob(params, batch["image"], activation)}, state))

    @jax.jit
    def fit(key, latents):
        std = standardizer(latents)
        k_init, k_split, k_fit = jax.random.split(key, 3)
        train, valid = split_codes(k_split, (latents - std["shift"]) / std["scale"])
        layers = init_maf(k_init, latents.shape[1], num_layers, hidden)
        layers, history = fit_by_gradient(objective, layers, train, k_fit, steps=steps,
                                          batch_size=batch_size, learning_rate=learning_rate,
                                          valid=valid)
        return {**std, "layers": layers, "history": history}

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state, key, n):
        u = jax.random.normal(key, (n, state["shift"].shape[-1]))
        return maf_inverse(state["layers"], u, activation) * state["scale"] + state["shift"]

    @jax.jit
    def log_prob(state, z):
        u = (jnp.asarray(z, jnp.float32) - state["shift"]) / state["scale"]
        return maf_log_prob(state["layers"], u, activation) - jnp.sum(jnp.log(state["scale"]))

    options = {"num_layers": num_layers, "hidden": list(hidden), "activation": activation,
               "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate}
    return Sampler("maf", options, fit, sample, log_prob)


def masked_autoregressive_flow(num_layers: int = 5, hidden=(128, 128), *,
                               activation: str = "relu", steps: int = 2000,
                               batch_size: int = 256, learning_rate: float = 1e-3) -> Sampler:
    """A MAF of ``num_layers`` MADEs trained by maximum likelihood on the codes.

    Args:
      num_layers: MADE layers (the paper's MAF 5).
      hidden: each MADE's hidden widths.
      activation: a name of :data:`~jvae.layers.heads.ACTIVATIONS`.
      steps: Adam steps (:func:`~jvae.training.samplers.base.fit_by_gradient`).
      batch_size: codes per step.
      learning_rate: the initial step size (cosine-decayed).

    Returns:
      A :class:`~jvae.training.samplers.base.Sampler`; its state holds the
      standardisation, the MADEs' ``layers`` and the training ``history``.
    """
    hidden = tuple(int(h) for h in hidden)
    if num_layers < 1 or min(hidden, default=1) < 1 or steps < 1 or batch_size < 1 or \
            not learning_rate > 0:
        raise SamplerError(f"a MAF needs num_layers, hidden widths, steps and batch_size >= 1 "
                           f"and learning_rate > 0; got {num_layers}, {hidden}, {steps}, "
                           f"{batch_size}, {learning_rate}")
    activation_by_name(activation)  # a bad name fails here, not at the first fit
    return _maf(int(num_layers), hidden, activation, int(steps), int(batch_size),
                float(learning_rate))
