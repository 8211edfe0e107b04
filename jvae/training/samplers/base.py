"""The contract of a fitted sampler, and the pieces the samplers share.

A trained VAE's codes need not follow its prior: the prior ``N(0, I)`` leaves
holes where no training image's posterior puts mass, and decodes of codes
drawn there look like no image. The density the decoder was trained on is the
aggregate posterior ``q(z) = E_x q(z|x)``, the prior that maximises the ELBO
(Hoffman & Johnson, 2016, "ELBO surgery"; Tomczak & Welling, 2018,
arXiv:1705.07120). A *fitted sampler* is a density estimate of ``q(z)`` made
after training from draws of it (one posterior draw per training image) and
sampled in the prior's place: a Gaussian mixture (Ghosh et al., 2020,
arXiv:1903.12436), a second-stage VAE (Dai & Wipf, 2019, arXiv:1903.05789) or
a masked autoregressive flow (Papamakarios et al., 2017, arXiv:1705.07057).

A :class:`Sampler` is a NamedTuple of pure functions over flat codes
``(N, D)``; its fitted state is a pytree of arrays (dicts and lists only), so
it is saved with :func:`flax.serialization.msgpack_serialize`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jvae.base import Array, JvaeError, Objective, PyTree
from jvae.training.state import TrainState, make_optimizer, make_update_fn

__all__ = ["Sampler", "FittedSampler", "SamplerError", "standardizer", "fit_by_gradient",
           "split_codes"]


class SamplerError(JvaeError, ValueError):
    """A sampler that cannot be fitted or used as asked; the message names the fix."""


class Sampler(NamedTuple):
    """A density over flat codes that is fitted to a sample of them.

    Attributes:
      name: the registry's name (``gmm``, ``two-stage``, ``maf``).
      options: the factory's keyword arguments, enough to build the same sampler again
        (JSON values: numbers, strings, lists).
      fit: ``(key, latents (N, D)) -> state``, a pytree of arrays.
      sample: ``(state, key, n) -> (n, D)`` draws (``n`` static).
      log_prob: ``(state, z (n, D)) -> (n,)`` log-densities in nats (an
        importance-sampled lower bound for the two-stage VAE, whose density has no
        closed form).
    """

    name: str
    options: dict[str, Any]
    fit: Callable[[Array, Array], PyTree]
    sample: Callable[[PyTree, Array, int], Array]
    log_prob: Callable[[PyTree, Array], Array]


class FittedSampler(NamedTuple):
    """A :class:`Sampler` with the state it was fitted to."""

    sampler: Sampler
    state: PyTree

    @property
    def name(self) -> str:
        return self.sampler.name

    @property
    def dim(self) -> int:
        """``D``, the size of the flat codes it draws."""
        return int(self.state["shift"].shape[-1])

    def sample(self, key: Array, n: int) -> Array:
        """``n`` draws ``(n, D)``."""
        return self.sampler.sample(self.state, key, n)

    def log_prob(self, z: Array) -> Array:
        """``log p(z)`` of flat codes ``(n, D)``, ``(n,)``."""
        return self.sampler.log_prob(self.state, z)


# Dimensions whose draws do not vary at all keep a scale of this, not 0.
_MIN_SCALE = 1e-6


def standardizer(latents: Array) -> dict[str, Array]:
    """``{"shift", "scale"}``: each dimension's mean and standard deviation.

    The flows and the second-stage VAE are fitted to ``(z - shift) / scale``, so
    their initialisation and learning rate see unit-scale data whatever the
    first stage's code scale; the density of ``z`` is the fitted one times the
    Jacobian, ``log p(z) = log p_u((z - shift) / scale) - sum_d log scale_d``.
    """
    latents = jnp.asarray(latents, jnp.float32)
    return {"shift": latents.mean(0), "scale": jnp.maximum(latents.std(0), _MIN_SCALE)}


def fit_by_gradient(objective: Objective, params: PyTree, data: Array, key: Array, *,
                    steps: int, batch_size: int, learning_rate: float,
                    clip_norm: float = 10.0, valid: Array | None = None,
                    eval_every: int = 100) -> tuple[PyTree, dict[str, Array]]:
    """Minimises ``objective`` over ``steps`` minibatches of ``data`` drawn with replacement.

    Each step is jvae's own training step (:func:`~jvae.training.state.make_update_fn`:
    Adam behind NaN zeroing, non-finite skips and clipping), looped on device with
    ``lax.scan``; the learning rate follows a cosine decay to a tenth of its
    start (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts). With
    ``valid``, the mean loss on those rows is taken every ``eval_every`` steps and
    after the last, and the parameters of the lowest are returned (early stopping,
    as Papamakarios et al. train MAF): a density fitted to a few thousand codes
    otherwise goes on to memorise them, and puts little mass between them.

    Args:
      objective: the loss; each batch is ``{"image": rows of data}``.
      params: the initial parameters.
      data: ``(N, ...)`` training rows.
      key: PRNG key of the minibatches and the objective's draws.
      steps: optimizer steps.
      batch_size: rows per step.
      learning_rate: the initial Adam step size.
      clip_norm: largest global gradient norm.
      valid: ``(M, ...)`` held-out rows, or None (the last parameters are returned).
      eval_every: steps between two validation losses.

    Returns:
      ``(params, history)``: the fitted parameters and ``{"loss": (steps,)}`` each
      step's mean loss, with ``valid`` also ``"valid_loss"`` ``(steps,)`` (NaN
      between evaluations) and ``"best_step"``, the step whose parameters these are.
    """
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.1)
    optimizer = make_optimizer(schedule, clip_norm=clip_norm)
    update = make_update_fn(objective, optimizer)
    k_state, k_batches, k_valid = jax.random.split(key, 3)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=optimizer.init(params), key=k_state,
                       loss_state=objective.init())
    n = data.shape[0]

    def valid_loss(params):
        terms, _ = objective.terms(params, {"image": valid}, k_valid, objective.init())
        return jnp.mean(terms["loss"])

    def step(carry, inputs):
        state, best, best_loss, best_step = carry
        k, i = inputs
        rows = jax.random.randint(k, (batch_size,), 0, n)
        state, metrics = update(state, {"image": data[rows]})
        if valid is None:
            return (state, best, best_loss, best_step), (metrics["loss"], jnp.nan)

        def check(_):
            loss = valid_loss(state.params)
            better = loss < best_loss  # a NaN loss is never better
            kept = jax.tree.map(lambda a, b: jnp.where(better, a, b), state.params, best)
            return kept, jnp.where(better, loss, best_loss), jnp.where(better, i + 1, best_step), \
                loss

        def skip(_):
            return best, best_loss, best_step, jnp.asarray(jnp.nan, jnp.float32)

        due = ((i + 1) % eval_every == 0) | (i + 1 == steps)
        best, best_loss, best_step, loss = jax.lax.cond(due, check, skip, None)
        return (state, best, best_loss, best_step), (metrics["loss"], loss)

    carry = (state, params, jnp.asarray(jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))
    (state, best, _, best_step), (losses, valid_losses) = jax.lax.scan(
        step, carry, (jax.random.split(k_batches, steps), jnp.arange(steps)))
    if valid is None:
        return state.params, {"loss": losses}
    return best, {"loss": losses, "valid_loss": valid_losses, "best_step": best_step}


def split_codes(key: Array, codes: Array, fraction: float = 0.1,
                min_valid: int = 20) -> tuple[Array, Array | None]:
    """``(train, valid)``: a random ``fraction`` of the rows held out for early stopping,
    or ``(codes, None)`` when that would be fewer than ``min_valid`` rows."""
    n = codes.shape[0]
    n_valid = int(round(fraction * n))
    if n_valid < min_valid or n - n_valid < min_valid:
        return codes, None
    rows = jax.random.permutation(key, n)
    return codes[rows[n_valid:]], codes[rows[:n_valid]]
