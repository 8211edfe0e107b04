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
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jvae.base import VAE, Array, Batch, Forward, Objective, PyTree, Term, Weight
from jvae.masked import masked_mean
from jvae.model import decode_samples
from jvae.posteriors import kl_estimate, sample_and_log_prob
from jvae.ssim import ssim

__all__ = ["Forward", "Term", "Weight", "forward", "compose", "stateless", "linear_warmup",
           "reconstruction", "kl_divergence", "iwae_bound", "ssim_loss", "latent_sparsity",
           "decoder_l2", "elbo_terms", "neg_elbo_metric", "log_mean_exp"]


def stateless(fn: Callable[[Forward], Array]) -> Term:
    """A :class:`Term` from a function ``forward -> (B,)`` that keeps no state."""
    return Term(lambda vae: (), lambda fwd, state: (fn(fwd), {}, state))


def forward(vae: VAE, params: PyTree, batch: Batch, key: Array, *, num_samples: int = 1,
            cond_key: str | None = None) -> Forward:
    """Runs the shared pass: encode, ``num_samples`` reparameterized draws, decode.

    ``z`` is ``posterior.sample(key, ...)`` (the same draws for the same key),
    so compositions reproduce the values of the core ELBO exactly. Quantities
    no term uses (e.g. ``log_q`` under an analytic KL) are removed by XLA.
    """
    x = batch["image"]
    cond = None if cond_key is None else batch[cond_key]
    post = vae.encode(params, x, cond)
    z, log_q = sample_and_log_prob(vae.posterior, key, post, num_samples)
    lik = decode_samples(vae, params, z, cond)
    return Forward(vae, params, x, cond, batch.get("mask"), post, z, log_q,
                   vae.posterior.prior_log_prob(z, vae.latent_shape),
                   lik, vae.likelihood.log_prob(lik, x))


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


def log_mean_exp(a: Array, axis: int = 0) -> Array:
    """``log(mean(exp(a)))`` along ``axis``, computed stably."""
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def reconstruction() -> Term:
    """``-E_q[log p(x|z)]``, the mean over the samples of the negative log-likelihood."""
    return stateless(lambda fwd: -jnp.mean(fwd.log_px, axis=0))


def kl_divergence(analytic: bool | None = None) -> Term:
    """``KL(q(z|x) || p(z))``: closed form when the family has one (and
    ``analytic`` is not False), else the Monte Carlo estimate
    ``mean_s log q(z_s|x) - log p(z_s)`` on the forward pass's samples."""

    def value(fwd):
        post = fwd.vae.posterior
        if analytic is False or not post.analytic_kl:
            return jnp.mean(fwd.log_q - fwd.log_pz, axis=0)
        return kl_estimate(post, fwd.post, fwd.log_q, fwd.log_pz)
    return stateless(value)


def iwae_bound() -> Term:
    """The negative importance-weighted bound (Burda et al., 2015, arXiv:1509.00519):

    ``-log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)``, with the forward pass's
    ``S`` samples. Equal to the single-sample ``-ELBO`` estimate for ``S = 1``;
    tighter (smaller, in expectation) as ``S`` grows.
    """
    return stateless(lambda fwd: -log_mean_exp(fwd.log_px + fwd.log_pz - fwd.log_q))


def ssim_loss(**ssim_kwargs) -> Term:
    """``1 - SSIM(E[x|z], x)`` averaged over samples; needs images ``(B, H, W, C)``
    (pass ``weight = beta`` to get the usual ``beta * (1 - SSIM)``)."""

    def value(fwd):
        if fwd.x.ndim != 4:
            raise ValueError(f"the SSIM term needs images (B, H, W, C), got shape {fwd.x.shape}")
        recon = fwd.vae.likelihood.mean(fwd.lik)
        return 1.0 - jnp.mean(ssim(recon, fwd.x[None], **ssim_kwargs), axis=0)
    return stateless(value)


def latent_sparsity(momentum: float = 0.99, eps: float = 1e-6) -> Term:
    """A scale-free L1 penalty on the deterministic code ``m = E_q[z|x]``:

    ``sum_j |m_j| / sqrt(v_j)`` with ``v_j`` a running estimate of ``E[m_j^2]``
    (an exponential moving average over training batches, kept in the term's
    state). Dividing by the running RMS stops a model from shrinking its codes
    (and growing its decoder weights) to dodge an L1 penalty, which a plain
    autoencoder would otherwise do.

    Args:
      momentum: decay of the moving average.
      eps: floor on ``v``.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")

    def init(vae):
        return {"second_moment": jnp.ones((math.prod(vae.latent_shape),), jnp.float32)}

    def apply(fwd, state):
        code = fwd.vae.posterior.mean(fwd.post)
        code = code.reshape(code.shape[0], -1)
        batch_moment = masked_mean(jax.lax.stop_gradient(code) ** 2, fwd.mask)
        v = momentum * state["second_moment"] + (1 - momentum) * batch_moment
        value = jnp.sum(jnp.abs(code) / jnp.sqrt(v + eps), axis=-1)
        return value, {}, {"second_moment": v}
    return Term(init, apply)


def decoder_l2() -> Term:
    """``sum ||W||^2`` over the decoder's weight matrices and kernels (leaves
    with 2+ dimensions; biases and norms' scales are not decayed), the same for
    every example, so its batch mean is the penalty itself."""

    def value(fwd):
        leaves = [w for w in jax.tree.leaves(fwd.params["decoder"]) if jnp.ndim(w) >= 2]
        total = sum(jnp.sum(jnp.square(w)) for w in leaves) if leaves else 0.0
        return jnp.broadcast_to(total, fwd.log_px.shape[1:])
    return stateless(value)


def elbo_terms(*, beta: Weight = 1.0, alpha: float = 1.0) -> dict[str, tuple[Weight, Term]]:
    """The (weighted) ELBO's terms: ``{"recon": (alpha, ...), "kl": (beta, ...)}``."""
    return {"recon": (alpha, reconstruction()), "kl": (beta, kl_divergence())}


def neg_elbo_metric(values: dict[str, Array]) -> dict[str, Array]:
    """``derived`` hook reporting the unweighted ``neg_elbo = recon + kl``."""
    return {"neg_elbo": values["recon"] + values["kl"]}
