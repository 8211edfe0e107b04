"""Train state, optimizer and the jitted, data-parallel train and eval steps."""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jvae.base import VAE, Array, Batch, Objective, PyTree
from jvae.devices.parallel import batch_sharding, data_mesh, replicated_sharding
from jvae.terms.masked import masked_mean, masked_sums
from jvae.training.ema import parameter_ema
from jvae.training.optim import clipped_adam, finite_global_norm, is_finite_step

__all__ = ["TrainState", "make_optimizer", "create_train_state", "make_update_fn",
           "make_train_step", "make_eval_step"]


@flax.struct.dataclass
class TrainState:
    """Everything a training run carries from step to step, as one pytree.

    Attributes:
      step: number of optimizer updates applied (int32 scalar).
      params: model parameters.
      opt_state: optimizer state.
      key: typed PRNG key; each step splits it, so a restored state continues
        the exact random stream.
      loss_state: the objective's own state (see :class:`~jvae.objectives.Objective`).
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    key: Array
    loss_state: PyTree = ()


def make_optimizer(learning_rate: float | optax.Schedule = 1e-3, *, b1: float = 0.9,
                   b2: float = 0.99, clip_norm: float = 1.0,
                   ema_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam behind NaN zeroing and global-norm clipping, optionally tracking a parameter EMA.

    The order matters: NaNs are zeroed *before* the global norm is taken, or a
    single NaN leaf would make the norm NaN and poison every update.

    Args:
      learning_rate: Adam step size or an optax schedule.
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      clip_norm: maximum global gradient norm.
      ema_decay: decay of an exponential moving average of the parameters kept
        in the optimizer's state (:func:`jvae.training.ema.parameter_ema`; 0: none).

    Returns:
      :func:`jvae.training.optim.clipped_adam`: the updates of ``optax.chain(zero_nans(),
      clip_by_global_norm(clip_norm), adam(...))`` fused into one pass per
      parameter leaf (the chain cost ~10% of a small model's step on CPU),
      chained with the EMA when ``ema_decay > 0``.
    """
    adam = clipped_adam(learning_rate, b1=b1, b2=b2, clip_norm=clip_norm)
    return optax.chain(adam, parameter_ema(ema_decay)) if ema_decay else adam


def create_train_state(vae: VAE, objective: Objective, optimizer: optax.GradientTransformation,
                       key: Array, example: Batch, *, cond_key: str | None = None,
                       params: PyTree | None = None) -> TrainState:
    """Initializes parameters, optimizer and objective state.

    Args:
      vae: the model.
      objective: the loss, whose ``init`` provides ``loss_state``.
      optimizer: an optax transformation.
      key: typed PRNG key (``jax.random.key``); split into init and run keys.
      example: a batch with the data's shapes (values are not used beyond init).
      cond_key: batch entry the model is conditioned on, if any.
      params: parameters to start from (imported weights) instead of
        ``vae.init``'s; the run key is the same either way.

    Returns:
      A :class:`TrainState` on the default device.
    """
    init_key, run_key = jax.random.split(key)
    cond = None if cond_key is None else example[cond_key]
    if params is None:
        params = vae.init(init_key, example["image"], cond)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), key=run_key,
                      loss_state=objective.init())


def make_update_fn(objective: Objective, optimizer: optax.GradientTransformation
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """The un-jitted update ``(state, batch) -> (state, metrics)`` of one step.

    This is the single definition of a training step: :func:`make_train_step`
    jits it for one batch per call and :func:`~jvae.training.epoch.make_train_epoch`
    loops it on device over a whole epoch, so both paths run the same math and
    consume the same random stream. A ``"mask"`` entry in the batch (1 for real
    rows, 0 for padding) weights the mean, so padded rows contribute nothing.

    Args:
      objective: the loss.
      optimizer: an optax transformation (see :func:`make_optimizer`).

    Returns:
      A pure function. ``metrics`` holds the batch means of the objective's
      terms plus ``grad_norm``: the gradient's global norm before clipping,
      NaN entries counted as 0 (:func:`~jvae.training.optim.finite_global_norm`, the
      expression :func:`make_optimizer` clips with, so XLA computes it once),
      and ``skipped_steps``: 1 when the loss or that norm is not finite. The
      optimizer receives the loss as ``value`` and skips such a step
      (:func:`~jvae.training.optim.clipped_adam`); its other metrics are reported as 0,
      so sums over an epoch divided by ``steps - skipped_steps`` stay finite.
    """
    optimizer = optax.with_extra_args_support(optimizer)

    def step(state: TrainState, batch: Batch):
        key, sub = jax.random.split(state.key)
        mask = batch.get("mask")

        def loss_fn(params):
            terms, loss_state = objective.terms(params, batch, sub, state.loss_state)
            return masked_mean(terms["loss"], mask), (terms, loss_state)

        (loss, (terms, loss_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        # One reduction for every term (a reduction per term is an XLA op each,
        # and small ops dominate a small model's step on CPU).
        names = list(terms)
        means = masked_mean(jnp.stack([terms[k] for k in names], axis=-1), mask)
        metrics = {k: means[i] for i, k in enumerate(names)}
        metrics["grad_norm"] = norm = finite_global_norm(grads)
        ok = is_finite_step(norm, loss)
        metrics = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in metrics.items()}
        metrics["skipped_steps"] = (~ok).astype(jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  key=key, loss_state=loss_state)
        return new_state, metrics

    return step


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation, *,
                    mesh: Mesh | None = None, donate: bool = True
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """Builds the jitted, data-parallel update ``(state, batch) -> (state, metrics)``.

    The batch is sharded over the mesh's ``"data"`` axis and the state is
    replicated; gradients of the global-batch mean are reduced across devices
    by XLA. The update is :func:`make_update_fn`'s. To run whole epochs in one
    dispatch with the data on device, use :func:`~jvae.training.epoch.make_train_epoch`.

    Args:
      objective: the loss.
      optimizer: an optax transformation (see :func:`make_optimizer`).
      mesh: device mesh; all local devices when None.
      donate: donate the input state's buffers to the output (halves peak
        memory for parameters and optimizer state; the input state is invalid
        after the call).

    Returns:
      The jitted step. ``metrics`` holds the batch means of the objective's
      terms plus ``grad_norm`` (before clipping).
    """
    mesh = mesh or data_mesh()
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(make_update_fn(objective, optimizer), in_shardings=(rep, data),
                   out_shardings=(rep, rep), donate_argnums=(0,) if donate else ())


def make_eval_step(objective: Objective, *, mesh: Mesh | None = None
                   ) -> Callable[..., dict[str, Array]]:
    """Builds the jitted ``(params, batch, key, loss_state=()) -> sums`` evaluation.

    Returns masked *sums* of every per-example term plus ``"count"``, so
    evaluating a split is adding the results and dividing by the count: every
    example counts exactly once, whatever the batch size.

    Args:
      objective: the loss whose terms are evaluated (its state is not updated).
      mesh: device mesh; all local devices when None.

    Returns:
      The jitted evaluation function.
    """
    mesh = mesh or data_mesh()

    def evaluate(params, batch, key, loss_state):
        terms, _ = objective.terms(params, batch, key, loss_state)
        return masked_sums(terms, batch.get("mask"))

    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    jitted = jax.jit(evaluate, in_shardings=(rep, data, rep, rep), out_shardings=rep)

    def eval_step(params, batch, key, loss_state=()):
        return jitted(params, batch, key, loss_state)
    return eval_step
