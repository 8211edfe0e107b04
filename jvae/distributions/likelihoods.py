"""Observation models p(x|z) as NamedTuples of pure functions.

A decoder ends in a head that emits the unconstrained parameters named by
``param_shapes(data_shape)``; ``constrain`` turns them into the likelihood's
parameters. ``log_prob`` sums over the data dimensions and keeps every leading
axis (posterior samples, batch), so the result is in nats per example.

:func:`bernoulli` and :func:`gaussian` model each value on its own;
:func:`discretized_logistic_mixture` is the discretized logistic mixture for
8-bit images (PixelCNN++ style). Each sub-pixel value ``k in {0, ..., 255}``
(seen as ``x = k / 255`` in [0, 1] and rescaled to ``y = 2x - 1`` in [-1, 1])
gets the probability mass that a mixture of logistics puts on its bin
(Salimans et al., 2017, arXiv:1701.05517):

    P(k) = sum_m pi_m [sigma((y + h - mu_m) / s_m) - sigma((y - h - mu_m) / s_m)]

with half bin width ``h = 1 / 255``; the edge bins absorb the tails
(``y = -1`` takes everything below ``-1 + h``, ``y = 1`` everything above
``1 - h``), so the 256 probabilities sum to 1 exactly. Log-likelihoods are of a
discrete distribution, so ``-log p(x) / (D ln 2)`` is the bits per dimension
reported for RGB image models (:func:`bits_per_dim`). Channels are modelled
independently given z (no within-pixel autoregression as in PixelCNN++).
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from jvae.base import Array, Likelihood

__all__ = ["Likelihood", "masked_log_prob", "bernoulli", "gaussian", "laplace",
           "discretized_logistic_mixture", "bits_per_dim"]


def _flat_data(a: Array, data_ndim: int) -> Array:
    """Merges the trailing ``data_ndim`` axes into one (a free reshape).

    Elementwise math on ``(..., 28, 28, 1)`` arrays is slower on XLA:CPU than
    on ``(..., 784)``: its loops vectorize the innermost axis, here of size 1.
    """
    return a.reshape(*a.shape[:a.ndim - data_ndim], -1)


def _summed(elements):
    """``log_prob`` from per-element log-probabilities: their sum over the data."""
    return lambda params, x: jnp.sum(elements(params, x), axis=-1)


def masked_log_prob(likelihood: Likelihood, params, x: Array, valid: Array | None) -> Array:
    """``log p(x|z)`` summed over the valid elements of ``x`` only.

    Args:
      likelihood: the observation model.
      params: its parameters, ``(..., B, *data_shape)``-shaped leaves.
      x: data ``(B, T, ...)``.
      valid: ``(B, T)`` 1 for real elements along the first data axis, 0 for
        padding; None counts every element (plain ``log_prob``).

    Returns:
      Log-likelihoods with the leading axes of ``params`` (samples, batch).

    Raises:
      ValueError: ``valid`` is given but the likelihood has no per-element form.
    """
    if valid is None:
        return likelihood.log_prob(params, x)
    if likelihood.log_prob_elements is None:
        raise ValueError(f"the {likelihood.name} likelihood has no per-element log-probabilities, "
                         "so padded clips cannot be masked out of it")
    per_element = likelihood.log_prob_elements(params, x)
    mask = jnp.broadcast_to(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x.shape)
    mask = mask.reshape(x.shape[0], -1).astype(per_element.dtype)
    return jnp.sum(per_element * mask, axis=-1)


def bernoulli() -> Likelihood:
    """Bernoulli likelihood parameterized by logits.

    ``log p(x|z) = sum_d x_d * l_d - softplus(l_d)``, which equals
    ``log Bernoulli(x; sigmoid(l))`` for binary x and is the usual
    cross-entropy for grey-scale x in [0, 1] (as in Kingma & Welling, 2014).

    Returns:
      A :class:`Likelihood`.
    """

    def elements(params, x):
        n = x.ndim - 1
        logits, x = _flat_data(params["logits"], n), _flat_data(x, n)
        return x * logits - jax.nn.softplus(logits)

    return Likelihood("bernoulli", lambda shape: {"logits": tuple(shape)}, lambda raw: raw,
                      _summed(elements), lambda p: jax.nn.sigmoid(p["logits"]), elements)


def gaussian(scale: float = 1.0, learn_scale: bool = False, min_scale: float = 1e-3) -> Likelihood:
    """Diagonal Gaussian likelihood N(x; mu(z), sigma^2).

    Args:
      scale: the fixed standard deviation when ``learn_scale`` is False.
      learn_scale: if True the decoder also emits a per-pixel scale
        ``softplus(raw) + min_scale``.
      min_scale: floor on a learned scale.

    Returns:
      A :class:`Likelihood`.
    """
    if scale <= 0:
        raise ValueError(f"Gaussian likelihood scale must be positive, got {scale}")

    def param_shapes(shape):
        shapes = {"loc": tuple(shape)}
        if learn_scale:
            shapes["scale"] = tuple(shape)
        return shapes

    def constrain(raw):
        if learn_scale:
            return {"loc": raw["loc"], "scale": jax.nn.softplus(raw["scale"]) + min_scale}
        return {"loc": raw["loc"]}

    def elements(params, x):
        n = x.ndim - 1
        loc = _flat_data(params["loc"], n)
        sigma = (_flat_data(params["scale"], n) if "scale" in params
                 else jnp.asarray(scale, loc.dtype))
        return distrax.Normal(loc, sigma).log_prob(_flat_data(x, n))

    return Likelihood("gaussian", param_shapes, constrain, _summed(elements), lambda p: p["loc"],
                      elements)


def laplace(scale: float = 0.5) -> Likelihood:
    """Laplace likelihood ``Laplace(x; mu(z), b)``: the L1 reconstruction in nats.

    ``-log p(x|z) = sum_d |x_d - mu_d| / b + log(2 b)``, so its gradient is the
    L1 distance's divided by ``b``, and the ELBO stays a bound in nats. The
    autoencoders of latent diffusion (Rombach et al., 2022, arXiv:2112.10752)
    train on ``|x - mu| / exp(s) + s`` with a learned log-scale ``s`` starting at
    0 on images in [-1, 1]: on jvae's [0, 1] pixels that start is ``b = 0.5``.

    Args:
      scale: the fixed scale ``b`` (in the data's units).

    Returns:
      A :class:`Likelihood`.
    """
    if scale <= 0:
        raise ValueError(f"Laplace likelihood scale must be positive, got {scale}")

    def elements(params, x):
        n = x.ndim - 1
        loc = _flat_data(params["loc"], n)
        b = jnp.asarray(scale, loc.dtype)
        return -jnp.abs(_flat_data(x, n) - loc) / b - jnp.log(2 * b)

    return Likelihood("laplace", lambda shape: {"loc": tuple(shape)}, lambda raw: {"loc": raw["loc"]},
                      _summed(elements), lambda p: p["loc"], elements)


def _log_bin_mass(y: Array, loc: Array, log_scale: Array, half_width: float) -> Array:
    """log P(bin centred at y) under one logistic, stable in every regime."""
    inv_s = jnp.exp(-log_scale)
    a = inv_s * (y - loc + half_width)      # upper edge, standardized
    b = inv_s * (y - loc - half_width)      # lower edge
    # log(sigma(a) - sigma(b)) = a + log(1 - e^(b - a)) - softplus(a) - softplus(b),
    # exact for a > b and free of the cancellation in sigma(a) - sigma(b).
    inner = a + jnp.log(-jnp.expm1(b - a)) - jax.nn.softplus(a) - jax.nn.softplus(b)
    lowest = -jax.nn.softplus(-a)            # log sigma(a): the bin of 0 takes the lower tail
    highest = -jax.nn.softplus(b)            # log(1 - sigma(b)): the bin of 255 the upper tail
    return jnp.where(y < -1 + half_width, lowest, jnp.where(y > 1 - half_width, highest, inner))


def discretized_logistic_mixture(num_components: int = 5, num_bins: int = 256,
                                 min_log_scale: float = -7.0) -> Likelihood:
    """A per-sub-pixel mixture of discretized logistics on ``num_bins`` levels.

    The decoder emits, for data of shape ``(..., C)``, arrays of shape
    ``(..., C * M)`` named ``logits`` (mixture weights), ``loc`` (in the [-1, 1]
    scale) and ``log_scale`` (floored at ``min_log_scale``), with ``M =
    num_components``; keeping the channel axis last lets convolutional decoders
    emit them with a convolution.

    Args:
      num_components: mixture components ``M`` (1: a single discretized logistic).
      num_bins: number of levels (256 for 8-bit data); data must be ``k / (num_bins - 1)``.
      min_log_scale: floor on the log-scales.

    Returns:
      A :class:`~jvae.distributions.likelihoods.Likelihood` named ``logistic_mixture``.
    """
    if num_components < 1 or num_bins < 2:
        raise ValueError(f"need num_components >= 1 and num_bins >= 2, got {num_components}, "
                         f"{num_bins}")
    m = num_components
    half_width = 1.0 / (num_bins - 1)

    def param_shapes(shape):
        shape = tuple(shape)
        out = (*shape[:-1], shape[-1] * m)
        return {"logits": out, "loc": out, "log_scale": out}

    def constrain(raw):
        return {"logits": raw["logits"], "loc": raw["loc"],
                "log_scale": jnp.maximum(raw["log_scale"], min_log_scale)}

    def split(a):
        return a.reshape(*a.shape[:-1], a.shape[-1] // m, m)

    def elements(params, x):
        y = (2.0 * x - 1.0)[..., None]
        log_w = jax.nn.log_softmax(split(params["logits"]), axis=-1)
        lp = _log_bin_mass(y, split(params["loc"]), split(params["log_scale"]), half_width)
        return _flat_data(jax.nn.logsumexp(log_w + lp, axis=-1), x.ndim - 1)

    def mean(params):
        w = jax.nn.softmax(split(params["logits"]), axis=-1)
        y = jnp.sum(w * split(params["loc"]), axis=-1)
        return jnp.clip((y + 1.0) / 2.0, 0.0, 1.0)

    return Likelihood("logistic_mixture", param_shapes, constrain, _summed(elements), mean,
                      elements)


def bits_per_dim(nats_per_example: float, num_dims: int) -> float:
    """Converts a discrete negative log-likelihood in nats per example to bits/dim."""
    return float(nats_per_example) / (num_dims * jnp.log(2.0).item())
