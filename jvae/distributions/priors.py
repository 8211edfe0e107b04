"""Learned priors p(z): the VampPrior and a second stochastic layer, and the one door to p(z).

A :class:`~jvae.base.Prior` has trainable parameters of its own (stored in
``params["prior"]``) and replaces the posterior family's fixed prior. Every
consumer reaches p(z) through two functions of the model, so a model with or
without a learned prior is used the same way:

* :func:`log_prior`: ``log p(z)`` for the ELBO's KL, the importance-weighted
  bounds and the evaluator's NLL (the family's ``prior_log_prob`` when the
  model has no learned prior);
* :func:`draw_prior`: draws for samples, FID and the CVAE's prior term.

The priors:

* :func:`vamp_prior`: the variational mixture of posteriors (Tomczak & Welling,
  2018, arXiv:1705.07120), ``p(z) = (1/K) sum_k q(z | u_k)`` with ``K`` learned
  pseudo-inputs ``u_k`` run through the model's own encoder;
* :func:`hierarchical_prior`: a second stochastic layer above ``z = h1``, the
  two-stochastic-layer model of Burda et al. (2015, arXiv:1509.00519, section 5):
  ``p(h1) = int p(h1|h2) p(h2) dh2`` with ``p(h2) = N(0, I)``, whose density
  is estimated with an amortized proposal ``q(h2|h1)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jvae.base import VAE, Array, ConfigError, Prior, PyTree
from jvae.distributions.posteriors import sample_prior

__all__ = ["Prior", "PRIOR_KEY_TAG", "VAMP_INITS", "log_prior", "draw_prior", "prior_key",
           "init_prior_from_data", "vamp_prior", "pseudo_inputs", "hierarchical_prior",
           "GaussianMLP"]

# fold_in tag of the key a stochastic prior draws its own latents with, given
# the key of the posterior draws (kept apart from every other stream).
PRIOR_KEY_TAG = 0x70726F72

VAMP_INITS = ("random", "data")

_LOG_2PI = math.log(2.0 * math.pi)


def prior_key(key: Array) -> Array:
    """The key of a stochastic prior's draws, derived from the posterior draws' ``key``."""
    return jax.random.fold_in(key, PRIOR_KEY_TAG)


def log_prior(vae: VAE, params: PyTree, z: Array, key: Array | None = None) -> Array:
    """``log p(z)`` of codes ``z`` of shape ``(..., *latent_shape)``, summed over latent dims.

    The model's learned prior when it has one, else its posterior family's fixed
    prior. A prior with latent variables of its own (``Prior.exact = False``)
    returns a one-sample estimate drawn with :func:`prior_key` of ``key``.

    Args:
      vae: the model.
      params: its parameters.
      z: codes with any leading axes.
      key: the key of the posterior draws ``z`` came from (needed by inexact priors).

    Returns:
      ``z.shape[:-len(latent_shape)]`` log-densities.
    """
    if vae.prior is None:
        return vae.posterior.prior_log_prob(z, vae.latent_shape)
    if key is None and not vae.prior.exact:
        raise ValueError(f"the {vae.prior.name} prior's log-density is estimated by sampling; "
                         "pass the key of the posterior draws")
    return vae.prior.log_prob(vae, params, z, None if key is None else prior_key(key))


def draw_prior(vae: VAE, key: Array, n: int, params: PyTree = None) -> Array:
    """``n`` draws ``(n, *latent_shape)`` from the model's prior (learned or the family's).

    ``params`` are the model's parameters, needed by a learned prior and by
    families with shared parameters (a VQ prior picks codebook rows).
    """
    if vae.prior is None:
        return sample_prior(vae.posterior, key, vae.latent_shape, n, params)
    if params is None or "prior" not in params:
        raise ValueError(f"the {vae.prior.name} prior needs the model's parameters "
                         "(its own live in params['prior'])")
    return vae.prior.sample(vae, params, key, n)


def init_prior_from_data(vae: VAE, params: PyTree, key: Array, images: Any) -> PyTree:
    """``params`` with the learned prior re-initialized from training data.

    A no-op (``params`` returned as given) unless the model's prior has an
    ``init_from_data`` (the VampPrior built with ``init="data"``).

    Args:
      vae: the model.
      params: its freshly initialized parameters.
      key: typed PRNG key choosing the examples.
      images: the training split's inputs ``(N, *data_shape)``: any array that
        takes integer indices (a NumPy array or memmap, a lazy folder split;
        uint8 pixels are read as ``x / 255``).
    """
    if vae.prior is None or vae.prior.init_from_data is None:
        return params
    return {**params, "prior": vae.prior.init_from_data(key, params["prior"], images)}


def _check_encodable(vae: VAE) -> None:
    if vae.posterior.name in ("point", "vq"):
        raise ValueError(f"a VampPrior is a mixture of posterior densities; the "
                         f"{vae.posterior.name} posterior is a deterministic code with none")


def pseudo_inputs(prior_params: PyTree, bounds: tuple[float, float] | None = (0.0, 1.0)) -> Array:
    """The pseudo-inputs ``u_k`` ``(K, *data_shape)``: the raw parameters clipped to
    ``bounds`` (the authors' hard-tanh; None: unclipped)."""
    u = prior_params["pseudo_inputs"]
    return u if bounds is None else jnp.clip(u, *bounds)


def vamp_prior(num_components: int = 500, *, init: str = "random",
               bounds: tuple[float, float] | None = (0.0, 1.0), init_mean: float = 0.05,
               init_std: float = 0.01) -> Prior:
    """The VampPrior: a uniform mixture of the posterior at ``K`` learned pseudo-inputs.

    ``p(z) = (1/K) sum_k q(z | u_k)`` (Tomczak & Welling, 2018,
    arXiv:1705.07120, Eq. 9), so

        log p(z) = logsumexp_k log q(z | u_k) - log K,

    with ``q`` the model's own encoder and posterior family; the pseudo-inputs
    ``u_k`` (shaped like the data) are trained with the rest of the model. The
    KL to it has no closed form: objectives estimate ``log q(z|x) - log p(z)``
    on their samples. A draw picks ``k`` uniformly, then ``z ~ q(z | u_k)``.

    The pseudo-inputs are stored raw and clipped to ``bounds`` (the hard-tanh of
    the authors' code; images in [0, 1], audio in [-1, 1]). ``init="random"``
    starts them at ``N(init_mean, init_std)`` (the authors' 0.05 and 0.01 for
    images in [0, 1]); ``init="data"`` at ``K`` training examples chosen from
    the key (:func:`init_prior_from_data`).

    Any posterior family with a density works (Normal, Dirichlet, flows); the
    encoder must take unconditioned inputs.

    Args:
      num_components: ``K``.
      init: ``"random"`` or ``"data"``.
      bounds: range of the pseudo-inputs, or None.
      init_mean: mean of the random initialization.
      init_std: its standard deviation.

    Returns:
      A :class:`~jvae.base.Prior` whose parameters are ``{"pseudo_inputs": (K, *data_shape)}``.
    """
    if num_components < 1:
        raise ValueError(f"a VampPrior needs at least 1 pseudo-input, got {num_components}")
    if init not in VAMP_INITS:
        raise ValueError(f"unknown VampPrior init {init!r}; choose one of {', '.join(VAMP_INITS)}")
    k = int(num_components)

    def init_fn(key, x, latent_shape):
        del latent_shape
        return {"pseudo_inputs": init_mean + init_std * jax.random.normal(
            key, (k, *x.shape[1:]), jnp.float32)}

    def components(vae, params):
        _check_encodable(vae)
        return vae.encode(params, pseudo_inputs(params["prior"], bounds))

    def log_prob(vae, params, z, key):
        del key
        latent = vae.latent_shape
        lead = z.shape[:z.ndim - len(latent)]
        flat = z.reshape(-1, *latent)
        # Row n of the (N, K) table is z_n under every component: the family's
        # log_prob takes (samples, batch) codes against batch-K parameters.
        tiled = jnp.broadcast_to(flat[:, None], (flat.shape[0], k, *latent))
        log_q = vae.posterior.log_prob(components(vae, params), tiled)
        return (jax.nn.logsumexp(log_q, axis=-1) - math.log(k)).reshape(lead)

    def sample(vae, params, key, n):
        _check_encodable(vae)
        k_pick, k_z = jax.random.split(key)
        idx = jax.random.randint(k_pick, (n,), 0, k)
        post = vae.encode(params, pseudo_inputs(params["prior"], bounds)[idx])
        return vae.posterior.sample(k_z, post, 1)[0]

    def from_data(key, prior_params, images):
        n = len(images)
        if n < k:
            raise ConfigError(f"vamp_init=data takes {k} distinct training examples as "
                              f"pseudo-inputs, but the split has {n}; lower --vamp-components "
                              "or use --vamp-init random")
        idx = np.asarray(jax.random.choice(key, n, (k,), replace=False))
        u = np.stack([np.asarray(images[int(i)]) for i in idx])
        # A split kept on disk may hold uint8 pixels; the model sees them in [0, 1].
        u = u.astype(np.float32) / 255.0 if u.dtype == np.uint8 else u.astype(np.float32)
        shape = prior_params["pseudo_inputs"].shape
        if u.shape != shape:
            raise ValueError(f"training examples of shape {u.shape[1:]} do not fit pseudo-inputs "
                             f"of shape {shape[1:]}")
        return {**prior_params, "pseudo_inputs": jnp.asarray(u)}

    return Prior("vamp", init_fn, log_prob, sample, exact=True,
                 init_from_data=from_data if init == "data" else None)


class GaussianMLP(nn.Module):
    """``h -> [Dense -> activation] * len(hidden) -> (loc, scale)`` of a diagonal Normal.

    The scale is ``softplus(raw) + min_scale``, as the Normal posterior's.

    Attributes:
      features: dimension of the Normal.
      hidden: hidden widths.
      activation: the nonlinearity.
      min_scale: floor of the scale.
    """

    features: int
    hidden: tuple[int, ...] = (50, 50)
    activation: Callable[[Array], Array] = jnp.tanh
    min_scale: float = 1e-6

    @nn.compact
    def __call__(self, h: Array) -> tuple[Array, Array]:
        for width in self.hidden:
            h = self.activation(nn.Dense(width)(h))
        loc = nn.Dense(self.features, name="loc")(h)
        scale = jax.nn.softplus(nn.Dense(self.features, name="scale")(h)) + self.min_scale
        return loc, scale


def _normal_log_prob(x: Array, loc: Array, scale: Array) -> Array:
    """``sum_d log N(x_d; loc_d, scale_d)`` over the last axis."""
    return jnp.sum(-0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - 0.5 * _LOG_2PI, -1)


def hierarchical_prior(top_latent_dim: int = 50, hidden: Sequence[int] = (50, 50),
                       activation: Callable[[Array], Array] = jnp.tanh) -> Prior:
    """A second stochastic layer ``h2`` above the model's latent ``h1 = z``.

    The two-stochastic-layer architecture of Burda et al. (2015,
    arXiv:1509.00519, section 5 and appendix): generative
    ``p(h2) = N(0, I)``, ``p(h1|h2) = N(mu(h2), s(h2))`` (an MLP with
    ``hidden`` reversed), then the model's decoder ``p(x|h1)``; inference
    ``q(h1|x)`` (the model's encoder) then ``q(h2|h1) = N(m(h1), r(h1))`` (an
    MLP with ``hidden``). With ``z = h1`` and

        log p^(h1) = log p(h1|h2) + log p(h2) - log q(h2|h1),  h2 ~ q(h2|h1),

    (``log_prob``, one reparameterized draw of ``h2`` per code), every bound
    built on ``log p(x|h1) + log p^(h1) - log q(h1|x)`` is the two-layer model's:
    its exponential is ``p(x, h1, h2) / q(h1, h2 | x)``, the importance weight of
    the joint proposal, so the ELBO, the IWAE bound and the evaluator's
    k-sample NLL are the paper's. ``E[log p^(h1)] <= log p(h1)``
    (``exact=False``). Draws are ancestral: ``h2 ~ N(0, I)``, ``h1 ~ p(h1|h2)``.

    The paper's model: ``--hidden 100,100 --latent-dim 100 --activation tanh``
    below, ``top_latent_dim=50``, ``hidden=(50, 50)``, tanh here. Codes of any
    latent shape are flattened for the second layer.

    Args:
      top_latent_dim: dimension of ``h2``.
      hidden: hidden widths of ``q(h2|h1)``; ``p(h1|h2)`` mirrors them.
      activation: the second layer's nonlinearity.

    Returns:
      A :class:`~jvae.base.Prior` whose parameters are
      ``{"inference": q(h2|h1)'s, "generative": p(h1|h2)'s}``.
    """
    hidden = tuple(int(h) for h in hidden)
    if top_latent_dim < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"need top_latent_dim >= 1 and positive widths, got {top_latent_dim}, "
                         f"{hidden}")

    def nets(latent_shape):
        return (GaussianMLP(top_latent_dim, hidden, activation),
                GaussianMLP(math.prod(latent_shape), hidden[::-1], activation))

    def init(key, x, latent_shape):
        del x
        q_net, p_net = nets(latent_shape)
        k_q, k_p = jax.random.split(key)
        return {"inference": q_net.init(k_q, jnp.zeros((1, math.prod(latent_shape))))["params"],
                "generative": p_net.init(k_p, jnp.zeros((1, top_latent_dim)))["params"]}

    def log_prob(vae, params, z, key):
        if vae.posterior.name == "dirichlet":
            raise ValueError("a second stochastic layer's Gaussian p(h1|h2) is a density on "
                             "R^d; a Dirichlet h1 lives on the simplex (use a normal posterior)")
        latent = vae.latent_shape
        q_net, p_net = nets(latent)
        lead = z.shape[:z.ndim - len(latent)]
        h1 = z.reshape(-1, math.prod(latent))
        loc2, scale2 = q_net.apply({"params": params["prior"]["inference"]}, h1)
        eps = jax.random.normal(key, loc2.shape, loc2.dtype)
        h2 = loc2 + scale2 * eps
        log_q2 = jnp.sum(-0.5 * jnp.square(eps) - jnp.log(scale2) - 0.5 * _LOG_2PI, -1)
        log_p2 = jnp.sum(-0.5 * jnp.square(h2) - 0.5 * _LOG_2PI, -1)
        loc1, scale1 = p_net.apply({"params": params["prior"]["generative"]}, h2)
        return (_normal_log_prob(h1, loc1, scale1) + log_p2 - log_q2).reshape(lead)

    def sample(vae, params, key, n):
        latent = vae.latent_shape
        _, p_net = nets(latent)
        k2, k1 = jax.random.split(key)
        h2 = jax.random.normal(k2, (n, top_latent_dim))
        loc1, scale1 = p_net.apply({"params": params["prior"]["generative"]}, h2)
        h1 = loc1 + scale1 * jax.random.normal(k1, loc1.shape, loc1.dtype)
        return h1.reshape(n, *latent)

    return Prior("hierarchical", init, log_prob, sample, exact=False)
