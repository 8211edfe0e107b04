"""Maximum mean discrepancy between the codes of a batch and draws from the prior.

``MMD_k(P, Q)^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` for ``x, x' ~ P`` and
``y, y' ~ Q`` (Gretton et al., 2012, "A kernel two-sample test", JMLR 13);
:func:`mmd_u` is its unbiased U-statistic on ``n`` and ``m`` draws:

    MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
              - 2/(n m) sum_{i, j} k(x_i, y_j).

It can be slightly negative; its expectation is 0 exactly when ``P = Q`` (for a
characteristic kernel). The kernels (:data:`MMD_KERNELS`), with ``C = 2 d sigma^2``
for ``d`` latent dimensions and the prior's variance ``sigma^2``, as WAE sets it
(Tolstikhin et al., 2018, arXiv:1711.01558, experiments):

* ``imq``: the inverse multiquadratics ``k(x, y) = C / (C + ||x - y||^2)``, whose
  heavy tails keep a gradient for codes far from the prior's mass (WAE-MMD);
* ``rbf``: ``k(x, y) = exp(-||x - y||^2 / C)``.

:func:`mmd_to_prior` is the term of InfoVAE (Zhao et al., 2017,
arXiv:1706.02262) and WAE-MMD: the MMD between the forward pass's codes
``z ~ q(z|x)`` (one code per example and sample) and as many prior draws, the
same for every example of the batch.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jvae.base import Array, Term
from jvae.distributions.priors import draw_prior
from jvae.terms.composition import stateless

__all__ = ["MMD_KERNELS", "imq_kernel", "rbf_kernel", "kernel_matrix", "mmd_u", "mmd_to_prior"]


def imq_kernel(sq_dist: Array, c: float | Array) -> Array:
    """``C / (C + ||x - y||^2)`` of the squared distances."""
    return c / (c + sq_dist)


def rbf_kernel(sq_dist: Array, c: float | Array) -> Array:
    """``exp(-||x - y||^2 / C)`` of the squared distances."""
    return jnp.exp(-sq_dist / c)


MMD_KERNELS: dict[str, Callable[[Array, float | Array], Array]] = {
    "imq": imq_kernel, "rbf": rbf_kernel}


def kernel_matrix(x: Array, y: Array, kernel: str = "imq", scale: float = 1.0) -> Array:
    """``k(x_i, y_j)`` for rows ``x`` ``(n, d)`` and ``y`` ``(m, d)``, ``C = 2 d scale``.

    Distances are taken from the differences, not ``|x|^2 + |y|^2 - 2 x.y``,
    which loses the small ones (and their gradients) to cancellation.
    """
    if kernel not in MMD_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(MMD_KERNELS)}")
    if not scale > 0:
        raise ValueError(f"the kernel's scale must be positive, got {scale}")
    sq = jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)
    return MMD_KERNELS[kernel](sq, 2.0 * x.shape[-1] * scale)


def _off_diagonal_mean(k: Array, w: Array) -> Array:
    """``sum_{i != j} w_i w_j k_ij / (n (n - 1))`` with ``n = sum_i w_i``."""
    n = jnp.sum(w)
    total = jnp.sum(w[:, None] * w[None, :] * k) - jnp.sum(jnp.square(w) * jnp.diagonal(k))
    return total / jnp.maximum(n * (n - 1.0), 1.0)


def mmd_u(x: Array, y: Array, *, kernel: str = "imq", scale: float = 1.0,
          x_mask: Array | None = None, y_mask: Array | None = None) -> Array:
    """The unbiased estimate of ``MMD^2`` between the rows of ``x`` and ``y`` (module docstring).

    Args:
      x: ``(n, *shape)`` draws of P (flattened to ``(n, d)``).
      y: ``(m, *shape)`` draws of Q.
      kernel: a name of :data:`MMD_KERNELS`.
      scale: ``sigma^2`` of ``C = 2 d sigma^2``.
      x_mask, y_mask: ``(n,)`` / ``(m,)`` 1 for draws that count, 0 for padding; None: all.

    Returns:
      A scalar.
    """
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    y = y.reshape(y.shape[0], -1).astype(jnp.float32)
    wx = jnp.ones(x.shape[0]) if x_mask is None else x_mask.astype(jnp.float32)
    wy = jnp.ones(y.shape[0]) if y_mask is None else y_mask.astype(jnp.float32)
    kxx = kernel_matrix(x, x, kernel, scale)
    kyy = kernel_matrix(y, y, kernel, scale)
    kxy = kernel_matrix(x, y, kernel, scale)
    cross = jnp.sum(wx[:, None] * wy[None, :] * kxy) / jnp.maximum(jnp.sum(wx) * jnp.sum(wy), 1.0)
    return _off_diagonal_mean(kxx, wx) + _off_diagonal_mean(kyy, wy) - 2.0 * cross


def mmd_to_prior(kernel: str = "imq", scale: float = 1.0) -> Term:
    """``MMD_u^2`` between the pass's codes and prior draws, the same value for every example.

    For each of the pass's ``S`` samples, the ``B`` codes ``z_s`` (padded rows
    left out) against ``B`` fresh prior draws (drawn with the pass's ``key``);
    the mean over the ``S`` estimates. A constant per example, so the batch's
    mean is the estimate itself, as in the papers' losses.

    Args:
      kernel: ``"imq"`` or ``"rbf"``.
      scale: the prior's variance ``sigma^2`` in ``C = 2 d sigma^2`` (1 for N(0, I)).
    """
    if kernel not in MMD_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(MMD_KERNELS)}")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"the kernel's scale must be a positive number, got {scale}")

    def value(fwd):
        if fwd.key is None:
            raise ValueError("the MMD term draws prior samples with the forward pass's key; "
                             "build the pass with jvae.terms.composition.forward")
        samples, batch = fwd.z.shape[:2]
        vae = fwd.vae
        prior = draw_prior(vae, fwd.key, samples * batch, fwd.params).reshape(fwd.z.shape)
        estimates = jax.vmap(lambda z, p: mmd_u(z, p, kernel=kernel, scale=scale,
                                                x_mask=fwd.mask))(fwd.z, prior)
        return jnp.broadcast_to(jnp.mean(estimates), (batch,))
    return stateless(value)
