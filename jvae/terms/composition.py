"""Composable loss terms: an objective is a weighted sum of per-example terms.

One forward pass (encode, draw ``S`` posterior samples with their
log-densities, decode) is shared by every term; each :class:`Term` turns it
into a per-example value ``(B,)``. :func:`compose` weights and adds them::

    objective = compose(vae, {
        "recon": (1.0, reconstruction()),
        "kl": (linear_warmup(1.0, 5000), kl_divergence()),   # KL warm-up
        "ssim": (0.5, ssim_loss()),
    }, derived=neg_elbo_metric)

so the ELBO is ``recon + kl`` and adding, removing or re-weighting a term is
editing a dict. A term may keep state across steps (a running moment, a code
usage histogram): ``Term.init`` builds it, ``Term.apply`` returns it updated,
and :func:`compose` keeps every term's state in the objective's
``loss_state`` (stored in :class:`~jvae.train_state.TrainState`, checkpointed
with it). Weights may be schedules of the step count the composition keeps in
``loss_state["step"]`` (counted in train steps: evaluation does not advance it).

Every value is reported under its term's name, next to ``"loss"``; a term can
add metrics of its own, and ``derived`` adds metrics computed from the values.

This module holds the composition (:func:`forward`, :func:`compose`, weights
and schedules); the ELBO's own terms and the optional ones are
:mod:`jvae.terms.standard`.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping

import jax
import jax.numpy as jnp

from jvae.base import VAE, Array, Batch, Forward, Objective, PyTree, Term, Weight
from jvae.distributions.likelihoods import masked_log_prob
from jvae.distributions.posteriors import sample_and_log_prob
from jvae.distributions.priors import log_prior
from jvae.model import decode_samples
from jvae.terms.masked import valid_mask

__all__ = ["Forward", "Term", "Weight", "forward", "compose", "stateless", "shared_value",
           "linear_warmup"]


def stateless(fn: Callable[[Forward], Array]) -> Term:
    """A :class:`Term` from a function ``forward -> (B,)`` that keeps no state."""
    return Term(lambda vae: (), lambda fwd, state: (fn(fwd), {}, state))


def shared_value(fwd: Forward, name: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per pass: a later call with the same ``name`` gets the first value.

    Terms that need the same expensive quantity (beta-TCVAE's three KL pieces
    share one pairwise density matrix) then use one traced value: XLA would
    merge identical forward computations anyway, but autodiff would still
    differentiate each copy with its own cotangent. With one copy the
    cotangents are summed and the backward pass runs once. A pass without
    scratch (``fwd.shared`` None) computes every time.
    """
    if fwd.shared is None:
        return compute()
    if name not in fwd.shared:
        fwd.shared[name] = compute()
    return fwd.shared[name]


def forward(vae: VAE, params: PyTree, batch: Batch, key: Array, *, num_samples: int = 1,
            cond_key: str | None = None) -> Forward:
    """Runs the shared pass: encode, ``num_samples`` reparameterized draws, decode.

    ``z`` is ``posterior.sample(key, ...)`` (the same draws for the same key),
    so compositions reproduce the values of the core ELBO exactly; ``fwd.key``
    is ``fold_in(key, 2)``, for terms that draw randomness of their own.
    Quantities no term uses (e.g. ``log_q`` under an analytic KL) are removed by XLA.
    ``log_pz`` is :func:`~jvae.distributions.priors.log_prior`, the model's
    learned prior when it has one.
    """
    x = batch["image"]
    cond = None if cond_key is None else batch[cond_key]
    post = vae.encode(params, x, cond)
    z, log_q = sample_and_log_prob(vae.posterior, key, post, num_samples)
    lik = decode_samples(vae, params, z, cond)
    valid = valid_mask(batch, x)
    # The terms' own stream: 1 is the cvae's prior draw (jvae.objectives.cvae).
    return Forward(vae, params, x, cond, batch.get("mask"), post, z, log_q,
                   log_prior(vae, params, z, key),
                   lik, masked_log_prob(vae.likelihood, lik, x, valid), valid,
                   jax.random.fold_in(key, 2), {})


def compose(vae: VAE, terms: Mapping[str, tuple[Weight, Term]], *, num_samples: int = 1,
            cond_key: str | None = None,
            derived: Callable[[dict[str, Array]], dict[str, Array]] | None = None) -> Objective:
    """An :class:`~jvae.objectives.Objective` minimizing ``sum_n w_n * term_n``.

    Args:
      vae: the model.
      terms: ``{name: (weight, term)}``; a weight is a float or a schedule
        ``step -> float``. A constant weight of 0 keeps a term as a reported
        metric only (e.g. the ELBO's pieces next to the IWAE loss).
      num_samples: posterior samples per example in the shared forward pass.
      cond_key: batch entry that conditions encoder and decoder, or None.
      derived: ``values -> {name: (B,)}`` extra metrics computed from the
        terms' values (e.g. ``neg_elbo = recon + kl``).

    Returns:
      The objective. Its ``loss_state`` is ``()`` when no term keeps state and
      no weight is a schedule (so plain objectives keep an empty state); else a
      dict with each stateful term's state under its name and ``"step"``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not terms:
        raise ValueError("an objective needs at least one term")
    for name in terms:
        if name in ("loss", "step"):
            raise ValueError(f"{name!r} is reserved; rename the term")
    scheduled = any(callable(w) for w, _ in terms.values())
    stateful = [n for n, (_, t) in terms.items() if jax.tree.leaves(t.init(vae))]

    def init():
        state = {n: terms[n][1].init(vae) for n in stateful}
        if scheduled:
            state["step"] = jnp.zeros((), jnp.int32)
        return state or ()

    def terms_fn(params, batch, key, loss_state):
        fwd = forward(vae, params, batch, key, num_samples=num_samples, cond_key=cond_key)
        state = loss_state if isinstance(loss_state, dict) else {}
        step = state.get("step")
        out, new_state, loss = {}, {}, None
        for name, (weight, term) in terms.items():
            value, metrics, term_state = term.apply(fwd, state.get(name, ()))
            if name in stateful:
                new_state[name] = jax.tree.map(jax.lax.stop_gradient, term_state)
            out[name] = value
            out.update(metrics)
            if callable(weight):
                weighted = weight(step) * value
            elif weight != 0:
                weighted = weight * value if weight != 1 else value
            else:
                continue
            loss = weighted if loss is None else loss + weighted
        if derived is not None:
            out.update(derived(out))
        out["loss"] = jnp.zeros_like(fwd.log_px[0]) if loss is None else loss
        if scheduled:
            new_state["step"] = step + 1
        return out, new_state or ()

    return Objective(init, terms_fn)


def linear_warmup(weight: float, steps: int) -> Callable[[Array], Array]:
    """Schedule ``weight * min(1, step / steps)`` (KL warm-up: Bowman et al., 2016,
    arXiv:1511.06349; Sonderby et al., 2016, arXiv:1602.02282)."""
    if steps <= 0:
        raise ValueError(f"warm-up steps must be positive, got {steps}")
    return lambda step: weight * jnp.minimum(1.0, step.astype(jnp.float32) / steps)
