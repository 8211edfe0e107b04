"""Total correlation of the aggregate posterior: beta-TCVAE's estimators and FactorVAE's critic.

The aggregate posterior ``q(z) = (1/N) sum_n q(z|x_n)`` over a training set of
``N`` examples splits the average KL of the ELBO (Chen et al., 2018,
arXiv:1802.04942) into

    E_x KL(q(z|x) || p(z)) = I_q(x; z)                          (index-code MI)
                           + KL(q(z) || prod_j q(z_j))           (total correlation)
                           + sum_j KL(q(z_j) || p(z_j))          (dimension-wise KL)

* beta-TCVAE weighs the three with ``alpha``, ``beta`` and ``gamma``; ``log q(z)``
  and ``log q(z_j)`` of a code ``z_i ~ q(z|x_i)`` are estimated from the batch
  of ``M`` posteriors (:func:`aggregate_log_densities`), by the paper's
  minibatch-weighted sampling

      log q(z_i)   ~ log sum_j q(z_i | x_j) - log(N M),
      log q(z_ij)  ~ log sum_k q(z_ij | x_k) - log(N M),

  or the minibatch-stratified sampling of its appendix, which weighs ``q(z_i|x_i)``
  by ``1/N``, one other row (the next) by ``(N - M + 1) / (N (M - 1))`` and the
  remaining ``M - 2`` by ``1 / (M - 1)`` (the weights sum to 1). Per sample the
  three pieces add up to ``log q(z|x) - log p(z)``, the single-sample KL estimate,
  whatever the estimator: with ``alpha = beta = gamma = 1`` the loss is the
  single-sample estimate of the negative ELBO. MSS's estimate of ``q(z_i)`` is
  unbiased over random batches; the paper's MWS normalization ``1/(N M)`` weighs
  the batch by ``1/N`` in all, so its ``log q(z)`` is a lower bound in
  expectation, shifted by constants in ``N`` and ``M`` that change no gradient.
* FactorVAE (Kim & Mnih, 2018, arXiv:1802.05983) estimates the total correlation
  with a discriminator ``D`` trained to tell codes ``z ~ q(z)`` from codes whose
  dimensions were each shuffled across the batch (:func:`permute_dims`, draws of
  ``prod_j q(z_j)``): ``TC ~ E_q(z)[log D(z) / (1 - D(z))]``, ``D``'s logit
  (:func:`discriminator_tc`). The discriminator and its Adam state are the term's
  state, as :mod:`jvae.terms.adversarial` keeps latent diffusion's PatchGAN: in the
  train state, checkpointed and resumed with it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jvae.base import Array, Discriminator, Forward, Term, Weight
from jvae.terms.adversarial import AdversarialState, discriminator_optimizer
from jvae.terms.composition import shared_value, stateless
from jvae.terms.masked import masked_mean

__all__ = ["TC_ESTIMATORS", "log_importance_weights", "aggregate_log_densities",
           "batch_mutual_information", "batch_total_correlation", "batch_dimensionwise_kl",
           "tc_decomposition", "permute_dims", "discriminator_tc", "FACTORVAE_LR"]

# Minibatch-weighted and minibatch-stratified sampling (Chen et al., 2018).
TC_ESTIMATORS = ("mws", "mss")

# The discriminator's Adam learning rate in Kim & Mnih (2018), betas (0.5, 0.9).
FACTORVAE_LR = 1e-4


def log_importance_weights(batch_size: int, mask: Array | None = None,
                           dataset_size: int | None = None, estimator: str = "mws") -> Array:
    """``log w[i, j]``, the weight of ``q(z_i | x_j)`` in the estimate of ``q(z_i)``.

    Args:
      batch_size: rows ``B`` of the batch.
      mask: ``(B,)`` 1 for real rows, 0 for padding (which must come last, as
        :func:`jvae.data.batches` pads); None: every row is real.
      dataset_size: ``N``, the examples ``q(z)`` averages over. None (a model
        restored without its data) treats the batch as the data set, ``N = M``;
        a batch larger than ``N`` (an evaluation batch) counts as ``N = M``.
      estimator: ``"mws"`` or ``"mss"`` (see the module docstring).

    Returns:
      ``(B, B)`` log-weights; ``-inf`` in the columns of padded rows.
    """
    if estimator not in TC_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                         f"{', '.join(TC_ESTIMATORS)}")
    real = jnp.ones((batch_size,), bool) if mask is None else mask > 0
    m = jnp.sum(real).astype(jnp.float32)
    n = m if dataset_size is None else jnp.maximum(jnp.float32(dataset_size), m)
    if estimator == "mws":
        w = jnp.broadcast_to(1.0 / (n * m), (batch_size, batch_size))
    else:
        i = jnp.arange(batch_size)[:, None]
        j = jnp.arange(batch_size)[None, :]
        others = jnp.maximum(m - 1.0, 1.0)
        # The row after i (cyclically, among the M real rows) is the stratum's draw.
        stratum = (i + 1) % jnp.maximum(m, 1.0).astype(jnp.int32)
        w = jnp.where(j == i, 1.0 / n,
                      jnp.where(j == stratum, (n - m + 1.0) / (n * others), 1.0 / others))
    return jnp.where(real[None, :], jnp.log(w), -jnp.inf)


@jax.custom_vjp
def aggregate_log_densities(z: Array, loc: Array, scale: Array,
                            log_w: Array) -> tuple[Array, Array]:
    """Batch estimates of ``log q(z_i)`` and ``sum_j log q(z_ij)`` for diagonal normal posteriors.

    Args:
      z: codes ``(S, B, D)``, ``z[s, i] ~ q(z | x_i)``.
      loc, scale: the posteriors' parameters ``(B, D)``.
      log_w: ``(B, B)`` from :func:`log_importance_weights`.

    Returns:
      ``(log_qz, log_prod_marginals)``, each ``(S, B)``:
      ``log sum_j w_ij q(z_i | x_j)`` and ``sum_d log sum_j w_ij q(z_id | x_jd)``.

    The gradient is written out (:func:`_aggregate_bwd`): with
    ``u = (z_i - loc_j) / scale_j`` and ``c`` the cotangent of the pairwise
    log-density, ``c = g_i softmax_j(joint) + h_i softmax_j(marginal)``, it is
    ``dz_i = -sum_j c u / scale_j``, ``dloc_j = sum_i c u / scale_j`` and
    ``dscale_j = sum_i c (u^2 - 1) / scale_j``: three reductions over one
    ``(S, B, B, D)`` product, where autodiff's transpose of the broadcasts and
    of the two log-sum-exps makes several more passes over tensors of that size.
    """
    return _aggregate_fwd(z, loc, scale, log_w)[0]


def _aggregate_fwd(z, loc, scale, log_w):
    # (S, B_i, B_j, D): log N(z_id; loc_jd, scale_jd).
    diff = (z[:, :, None, :] - loc[None, None]) / scale[None, None]
    pair = -0.5 * jnp.square(diff) - jnp.log(scale)[None, None] - 0.5 * math.log(2 * math.pi)
    joint = jnp.sum(pair, axis=-1) + log_w
    marginal = pair + log_w[..., None]
    log_qz = jax.nn.logsumexp(joint, axis=2)
    log_marginals = jax.nn.logsumexp(marginal, axis=2)
    log_prod = jnp.sum(log_marginals, axis=-1)
    return (log_qz, log_prod), (diff, scale, joint, log_qz, marginal, log_marginals)


def _aggregate_bwd(residuals, cotangents):
    diff, scale, joint, log_qz, marginal, log_marginals = residuals
    g, h = cotangents
    weight_joint = g[..., None] * jnp.exp(joint - log_qz[..., None])               # (S, B, B)
    weight_marginal = h[..., None, None] * jnp.exp(marginal - log_marginals[:, :, None])
    c = weight_joint[..., None] + weight_marginal                                   # (S, B, B, D)
    t = c * diff / scale[None, None]
    dz = -jnp.sum(t, axis=2)
    dloc = jnp.sum(t, axis=(0, 1))
    dscale = jnp.sum(c * (jnp.square(diff) - 1.0), axis=(0, 1)) / scale
    dlog_w = jnp.sum(weight_joint + jnp.sum(weight_marginal, axis=-1), axis=0)
    return dz, dloc, dscale, dlog_w


aggregate_log_densities.defvjp(_aggregate_fwd, _aggregate_bwd)


def _pieces(fwd: Forward, estimator: str, dataset_size: int | None):
    """``(log q(z|x), log q(z), sum_j log q(z_j), log p(z))`` of the pass's samples, ``(S, B)``.

    Computed once per pass however many terms ask (:func:`~jvae.terms.composition.shared_value`).
    """
    return shared_value(fwd, ("total_correlation", estimator, dataset_size),
                        lambda: _compute_pieces(fwd, estimator, dataset_size))


def _compute_pieces(fwd: Forward, estimator: str, dataset_size: int | None):
    if fwd.vae.posterior.name != "normal" or set(fwd.post) - {"loc", "scale"}:
        raise ValueError("the total-correlation estimators need a diagonal normal posterior "
                         f"(no flow), got {fwd.vae.posterior.name!r}")
    batch = fwd.post["loc"].shape[0]
    loc = fwd.post["loc"].reshape(batch, -1).astype(jnp.float32)
    scale = fwd.post["scale"].reshape(batch, -1).astype(jnp.float32)
    z = fwd.z.reshape(*fwd.z.shape[:2], -1).astype(jnp.float32)
    log_w = log_importance_weights(batch, fwd.mask, dataset_size, estimator)
    log_qz, log_prod = aggregate_log_densities(z, loc, scale, log_w)
    return fwd.log_q, log_qz, log_prod, fwd.log_pz


def batch_mutual_information(estimator: str = "mws", dataset_size: int | None = None) -> Term:
    """The index-code mutual information, ``mean_s log q(z_s|x) - log q(z_s)`` per example."""

    def value(fwd):
        log_q, log_qz, _, _ = _pieces(fwd, estimator, dataset_size)
        return jnp.mean(log_q - log_qz, axis=0)
    return stateless(value)


def batch_total_correlation(estimator: str = "mws", dataset_size: int | None = None) -> Term:
    """The total correlation, ``mean_s log q(z_s) - sum_j log q(z_sj)`` per example."""

    def value(fwd):
        _, log_qz, log_prod, _ = _pieces(fwd, estimator, dataset_size)
        return jnp.mean(log_qz - log_prod, axis=0)
    return stateless(value)


def batch_dimensionwise_kl(estimator: str = "mws", dataset_size: int | None = None) -> Term:
    """The dimension-wise KL, ``mean_s sum_j log q(z_sj) - log p(z_s)`` per example."""

    def value(fwd):
        _, _, log_prod, log_pz = _pieces(fwd, estimator, dataset_size)
        return jnp.mean(log_prod - log_pz, axis=0)
    return stateless(value)


def tc_decomposition(*, alpha: Weight = 1.0, beta: Weight = 1.0, gamma: Weight = 1.0,
                     estimator: str = "mws",
                     dataset_size: int | None = None) -> dict[str, tuple[Weight, Term]]:
    """beta-TCVAE's weighted KL: ``{"mi": (alpha, ...), "tc": (beta, ...), "dwkl": (gamma, ...)}``.

    The three terms share one pairwise density computation, differentiated once
    (:func:`~jvae.terms.composition.shared_value`).
    """
    if estimator not in TC_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                         f"{', '.join(TC_ESTIMATORS)}")
    if dataset_size is not None and dataset_size < 1:
        raise ValueError(f"dataset_size must be positive, got {dataset_size}")
    return {"mi": (alpha, batch_mutual_information(estimator, dataset_size)),
            "tc": (beta, batch_total_correlation(estimator, dataset_size)),
            "dwkl": (gamma, batch_dimensionwise_kl(estimator, dataset_size))}


def permute_dims(key: Array, z: Array, mask: Array | None = None) -> Array:
    """Each latent dimension shuffled across the batch, independently (Kim & Mnih's permute_dims).

    Args:
      key: PRNG key.
      z: codes ``(B, *latent_shape)``.
      mask: ``(B,)`` 1 for real rows, 0 for padding, or None: real rows draw
        from real rows only (padding last, as :func:`jvae.data.batches` pads).

    Returns:
      Codes of ``z``'s shape: column ``d`` of row ``i`` is column ``d`` of row
      ``pi_d(i)``, a uniform random permutation per dimension.
    """
    batch = z.shape[0]
    flat = z.reshape(batch, -1)
    u = jax.random.uniform(key, (flat.shape[1], batch))
    if mask is not None:
        u = jnp.where(mask[None, :] > 0, u, 2.0 + u)
    order = jnp.argsort(u, axis=-1)
    return jnp.take_along_axis(flat, order.T, axis=0).reshape(z.shape)


def discriminator_tc(discriminator: Discriminator, latent_shape: tuple[int, ...], *,
                     optimizer: optax.GradientTransformation | None = None,
                     seed: int = 0) -> Term:
    """FactorVAE's total-correlation term: the mean logit of a critic on the codes.

    The value per example is ``mean_s logit D(z_s)``, ``log D/(1 - D)`` of its
    codes with the critic held fixed (the gradient reaches the encoder through
    ``z``). On the same batch the critic then takes one optimizer step on the
    cross-entropy ``(softplus(-D(z)) + softplus(D(z~))) / 2`` between the codes
    and their dimension-wise shuffle ``z~`` (:func:`permute_dims`, drawn with the
    pass's ``key``), codes held fixed. Kim & Mnih shuffle a second batch; here
    the one batch serves both, as :mod:`jvae.terms.adversarial` does.

    Args:
      discriminator: e.g. :func:`jvae.layers.latent_discriminator.mlp_discriminator`.
      latent_shape: per-example latent shape (for the initialization).
      optimizer: the critic's (default: Adam at :data:`FACTORVAE_LR`, betas
        (0.5, 0.9), the paper's).
      seed: seed of the critic's initialization.

    Returns:
      A :class:`~jvae.base.Term` with state
      :class:`~jvae.terms.adversarial.AdversarialState`; metric ``tc_d_loss``.
    """
    optimizer = optimizer or discriminator_optimizer(FACTORVAE_LR)
    example = jnp.zeros((2, *latent_shape), jnp.float32)

    def init(vae):
        params = discriminator.init(jax.random.key(seed), example)
        return AdversarialState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def logits(params, z):
        return jax.vmap(lambda zs: discriminator.apply(params, zs))(z.astype(jnp.float32))

    def apply(fwd: Forward, state: AdversarialState):
        if fwd.key is None:
            raise ValueError("the FactorVAE critic shuffles codes with the forward pass's key; "
                             "build the pass with jvae.terms.composition.forward")
        d_params = jax.lax.stop_gradient(state.params)
        value = jnp.mean(logits(d_params, fwd.z), axis=0)
        codes = jax.lax.stop_gradient(fwd.z)
        keys = jax.random.split(fwd.key, codes.shape[0])
        shuffled = jax.vmap(lambda k, zs: permute_dims(k, zs, fwd.mask))(keys, codes)

        def d_loss(params):
            per = 0.5 * (jax.nn.softplus(-logits(params, codes))
                         + jax.nn.softplus(logits(params, shuffled)))
            return masked_mean(jnp.mean(per, axis=0), fwd.mask)

        loss, grads = jax.value_and_grad(d_loss)(d_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, d_params)
        new = AdversarialState(optax.apply_updates(d_params, updates), opt_state, state.step + 1)
        return value, {"tc_d_loss": jnp.broadcast_to(loss, value.shape)}, new

    return Term(init, apply)
