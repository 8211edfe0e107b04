"""A Gaussian mixture with full covariances, fitted by expectation-maximisation.

``p(z) = sum_k w_k N(z; mu_k, Sigma_k)``, fitted to maximise the mean
log-likelihood of the codes (Dempster, Laird & Rubin, 1977; Bishop, 2006,
section 9.2.2). Each iteration:

* E-step: responsibilities ``r_nk = w_k N(z_n; mu_k, Sigma_k) / p(z_n)``;
* M-step: ``N_k = sum_n r_nk``, ``w_k = N_k / N``, ``mu_k = sum_n r_nk z_n / N_k``,
  ``Sigma_k = sum_n r_nk (z_n - mu_k)(z_n - mu_k)^T / N_k + reg I``.

Each iteration cannot lower the log-likelihood (the covariance floor ``reg``
aside, which keeps every ``Sigma_k`` invertible when a component holds fewer
points than dimensions); iterations stop when the mean log-likelihood gains
less than ``tol`` or after ``max_iter``. The components start from k-means++
seeding (Arthur & Vassilvitskii, 2007): the first centre is a uniformly drawn
code, each next one a code drawn with probability proportional to its squared
distance to the nearest centre so far; every code then belongs to its nearest
centre, and a first M-step turns those hard assignments into the initial
weights, means and covariances (scikit-learn's ``init_params="k-means++"``).

The codes are standardised first (:func:`~jvae.training.samplers.base.standardizer`):
EM is unchanged by an affine map of the data but for the floor ``reg``, which
then reads as a fraction of each dimension's variance. Pythae's GMM sampler
(10 components, full covariances) is scikit-learn's ``GaussianMixture``; here
the same model is a jitted JAX program (``lax.while_loop``), so it also runs
on an accelerator and its ``sample`` and ``log_prob`` are pure functions.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jvae.base import Array
from jvae.training.samplers.base import Sampler, SamplerError, standardizer

__all__ = ["gaussian_mixture", "kmeans_plusplus", "fit_mixture", "mixture_log_prob"]

# Keeps an empty component's count positive (scikit-learn adds the same).
_EPS = 10 * float(jnp.finfo(jnp.float32).eps)


def kmeans_plusplus(key: Array, x: Array, k: int) -> Array:
    """``k`` centres ``(k, D)`` among the rows of ``x`` by k-means++ seeding.

    Args:
      key: PRNG key.
      x: ``(N, D)`` points.
      k: number of centres (at most ``N``).
    """
    n = x.shape[0]
    first, rest = jax.random.split(key)
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[jax.random.randint(first, (), 0, n)])
    d2 = jnp.sum((x - centres[0]) ** 2, axis=1)

    def add(i, carry):
        centres, d2 = carry
        # Drawn with probability d2 / sum(d2); a point already chosen has d2 = 0.
        logits = jnp.where(d2 > 0, jnp.log(jnp.maximum(d2, 1e-30)), -jnp.inf)
        logits = jnp.where(jnp.any(d2 > 0), logits, 0.0)  # all points alike: any of them
        pick = x[jax.random.categorical(jax.random.fold_in(rest, i), logits)]
        return centres.at[i].set(pick), jnp.minimum(d2, jnp.sum((x - pick) ** 2, axis=1))

    centres, _ = jax.lax.fori_loop(1, k, add, (centres, d2))
    return centres


def _component_log_pdf(x: Array, mean: Array, tril: Array) -> Array:
    """``log N(x; mean, L L^T)`` of ``(N, D)`` rows for one component."""
    y = solve_triangular(tril, (x - mean).T, lower=True)  # (D, N)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(tril)))
    return -0.5 * (jnp.sum(y ** 2, axis=0) + log_det + x.shape[1] * math.log(2 * math.pi))


def mixture_log_prob(params: dict[str, Array], x: Array, *, joint: bool = False) -> Array:
    """``log p(x)`` ``(N,)`` under ``{"log_weights", "means", "scale_tril"}``, or with
    ``joint`` the ``(N, K)`` terms ``log w_k + log N(x; mu_k, Sigma_k)``."""
    # One component at a time: memory of (N, D), not (K, N, D).
    per = jax.lax.map(lambda c: _component_log_pdf(x, c[0], c[1]),
                      (params["means"], params["scale_tril"]))  # (K, N)
    joint_lp = per.T + params["log_weights"]
    return joint_lp if joint else jax.nn.logsumexp(joint_lp, axis=1)


def _m_step(x: Array, resp: Array, reg: float) -> dict[str, Array]:
    """Weights, means and Cholesky factors of the covariances from responsibilities."""
    counts = resp.sum(0) + _EPS  # (K,)
    means = (resp.T @ x) / counts[:, None]

    def covariance(args):
        r, mu, c = args
        d = x - mu
        return (d * r[:, None]).T @ d / c + reg * jnp.eye(x.shape[1], dtype=x.dtype)

    cov = jax.lax.map(covariance, (resp.T, means, counts))
    return {"log_weights": jnp.log(counts / counts.sum()), "means": means,
            "scale_tril": jnp.linalg.cholesky(cov)}


def fit_mixture(key: Array, x: Array, num_components: int, *, max_iter: int = 500,
                tol: float = 1e-3, reg: float = 1e-6) -> tuple[dict[str, Array], Array]:
    """Fits a full-covariance Gaussian mixture to ``x`` by EM (see the module's docstring).

    Args:
      key: PRNG key of the k-means++ seeding.
      x: ``(N, D)`` data, ``N >= num_components``.
      num_components: ``K``.
      max_iter: most EM iterations.
      tol: stop once an iteration raises the mean log-likelihood by less.
      reg: added to each covariance's diagonal.

    Returns:
      ``(params, trace)``: ``{"log_weights" (K,), "means" (K, D), "scale_tril" (K, D, D)}``
      and the mean log-likelihood before each iteration's M-step ``(max_iter,)``, NaN after
      the last iteration run (``trace[i]`` is that of the parameters after ``i`` M-steps
      following the k-means++ one).
    """
    x = jnp.asarray(x, jnp.float32)
    centres = kmeans_plusplus(key, x, num_components)
    # ||x - c||^2 up to the row's own ||x||^2: no (N, K, D) array.
    nearest = jnp.argmin(jnp.sum(centres ** 2, axis=1) - 2.0 * x @ centres.T, axis=1)
    params = _m_step(x, jax.nn.one_hot(nearest, num_components, dtype=x.dtype), reg)
    trace = jnp.full((max_iter,), jnp.nan, jnp.float32)

    def cond(carry):
        _, i, gain, _ = carry
        return (i < max_iter) & (gain >= tol)

    def body(carry):
        params, i, _, trace = carry
        joint = mixture_log_prob(params, x, joint=True)
        log_px = jax.nn.logsumexp(joint, axis=1)
        ll = log_px.mean()
        resp = jnp.exp(joint - log_px[:, None])
        gain = jnp.where(i > 0, ll - trace[jnp.maximum(i - 1, 0)], jnp.inf)
        return _m_step(x, resp, reg), i + 1, gain, trace.at[i].set(ll)

    params, _, _, trace = jax.lax.while_loop(
        cond, body, (params, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, jnp.float32), trace))
    return params, trace


@functools.lru_cache(maxsize=16)
def _gaussian_mixture(num_components: int, max_iter: int, tol: float, reg: float) -> Sampler:
    @jax.jit
    def fit(key, latents):
        if latents.shape[0] < num_components:
            raise SamplerError(f"a mixture of {num_components} components needs at least as "
                               f"many codes, got {latents.shape[0]}; lower the components")
        std = standardizer(latents)
        u = (latents - std["shift"]) / std["scale"]
        params, trace = fit_mixture(key, u, num_components, max_iter=max_iter, tol=tol, reg=reg)
        return {**std, **params, "trace": trace}

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state, key, n):
        k_comp, k_eps = jax.random.split(key)
        comp = jax.random.categorical(k_comp, state["log_weights"], shape=(n,))
        eps = jax.random.normal(k_eps, (n, state["means"].shape[1]))
        u = state["means"][comp] + jnp.einsum("nij,nj->ni", state["scale_tril"][comp], eps)
        return u * state["scale"] + state["shift"]

    @jax.jit
    def log_prob(state, z):
        u = (jnp.asarray(z, jnp.float32) - state["shift"]) / state["scale"]
        return mixture_log_prob(state, u) - jnp.sum(jnp.log(state["scale"]))

    options = {"num_components": num_components, "max_iter": max_iter, "tol": tol, "reg": reg}
    return Sampler("gmm", options, fit, sample, log_prob)


def gaussian_mixture(num_components: int = 10, *, max_iter: int = 500, tol: float = 1e-3,
                     reg: float = 1e-6) -> Sampler:
    """A full-covariance Gaussian mixture fitted by EM (Pythae's default: 10 components).

    Args:
      num_components: ``K``.
      max_iter: most EM iterations.
      tol: convergence threshold on the gain of the mean log-likelihood (nats).
      reg: covariance floor added to the diagonal, in units of each dimension's variance.

    Returns:
      A :class:`~jvae.training.samplers.base.Sampler`; its state holds the
      standardisation (``shift``, ``scale``), ``log_weights``, ``means``,
      ``scale_tril`` (Cholesky factors of the covariances) and the EM ``trace``
      (:func:`fit_mixture`).
    """
    if num_components < 1 or max_iter < 1 or not tol > 0 or not reg >= 0:
        raise SamplerError(f"a mixture needs num_components >= 1, max_iter >= 1, tol > 0 and "
                           f"reg >= 0; got {num_components}, {max_iter}, {tol}, {reg}")
    return _gaussian_mixture(int(num_components), int(max_iter), float(tol), float(reg))
