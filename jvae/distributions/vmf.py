"""Von Mises-Fisher latents on the unit hypersphere (the S-VAE of Davidson et al., 2018).

A code ``z`` lies on the sphere ``S^{d-1} = {z in R^d : ||z|| = 1}``; the
posterior is ``q(z|x) = vMF(mu(x), kappa(x))`` with density

    vMF(z; mu, kappa) = C_d(kappa) exp(kappa mu^T z),
    C_d(kappa) = kappa^{d/2-1} / ((2 pi)^{d/2} I_{d/2-1}(kappa)),

(``I_v`` the modified Bessel function of the first kind) with respect to the
sphere's surface measure, and the prior is the uniform distribution on the
sphere, ``p(z) = 1 / |S^{d-1}|`` with area ``|S^{d-1}| = 2 pi^{d/2} / Gamma(d/2)``
(Davidson et al., 2018, "Hyperspherical Variational Auto-Encoders",
arXiv:1804.00891). The KL divergence has a closed form (derived in the paper):

    KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|,
    A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E_q[mu^T z],

independent of ``mu``. ``A_d`` (the mean resultant length) and ``log I_{d/2-1}``,
as the exponentially scaled ``log ive_v(k) = log I_v(k) - k``, come from
:mod:`jvae.distributions.bessel` (loop-free for the order fixed by ``d``), finite
from ``kappa`` near 0 to ``kappa`` of 1e5 and beyond, where ``I_v`` itself
overflows float32; the KL's derivative is the closed form ``kappa A_d'(kappa)``.

Sampling follows the paper's reparameterized sampler:
the component ``w = mu^T z`` is drawn with Wood's (1994) rejection sampler,
whose proposal ``w = (1 - (1 + b) eps) / (1 - (1 - b) eps)``,
``eps ~ Beta((d-1)/2, (d-1)/2)``, is a smooth function of ``kappa`` (through
``b``); a direction ``v`` uniform on ``S^{d-2}`` completes the sample
``(w, sqrt(1 - w^2) v)`` of ``vMF(e_1, kappa)``, and an orthogonal map taking
``e_1`` to ``mu`` (a Householder reflection) moves it to ``vMF(mu, kappa)``.
Gradients flow through the accepted proposal with ``eps`` held fixed: the
reparameterization part ``g_rep`` of the paper's gradient ``g_rep + g_cor``
(after Naesseth et al., 2017, on reparameterized rejection samplers). The
correction term ``g_cor`` of the rejection step (a score-function term, which
would need the loss's value inside the sampler) is left out, as in the
authors' reference implementations; the gradient in
``kappa`` of an expectation is then biased low: ``dE[w]/dkappa`` comes out
8% under its exact value at ``kappa = 10`` for ``d = 10`` (3.5% for ``d = 20``,
under 2.5% at ``kappa <= 2`` and ``kappa >= 100`` for both), but up to half of
it on the circle (``d = 2``, ``kappa = 2``). The KL's gradient is exact (a
closed form), and so is the gradient in ``mu``. On ``S^2`` (``d = 3``) the
CDF of ``w`` inverts in closed form, and ``w`` is drawn that way: an exact
reparameterization with no rejection step (:func:`_inverse_cdf_w3`).

The last latent axis is the sphere's ambient dimension ``d``: a latent of shape
``(d,)`` is one code on ``S^{d-1}``; any leading axes (a spatial or per-frame
latent ``(h, w, d)``) are independent vMFs whose log-densities and KLs are
summed.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jvae.base import Array, Posterior
from jvae.distributions.bessel import SERIES_BELOW, log_bessel_ive_and_ratio, log_bessel_series

__all__ = ["vmf_posterior", "log_sphere_area", "mean_resultant_length", "vmf_log_normalizer",
           "vmf_kl_uniform", "vmf_sample", "VMF_MAX_ROUNDS"]

# Rounds of Wood's sampler before the last proposals are kept as they are. Its
# acceptance rate is above 0.65 for every d and kappa (it falls towards 2/3 as
# kappa grows), so 64 rounds leave a proposal unaccepted with probability below
# 1e-29; the cap only ends the loop on non-finite input (a NaN kappa accepts nothing).
VMF_MAX_ROUNDS = 64


def log_sphere_area(d: int) -> float:
    """``log |S^{d-1}| = log(2 pi^{d/2} / Gamma(d/2))``, the log surface area of the unit
    sphere in ``R^d`` (``2 pi`` for the circle, ``4 pi`` for ``S^2``)."""
    if d < 2:
        raise ValueError(f"a hypersphere needs an ambient dimension d >= 2, got {d}")
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def mean_resultant_length(kappa: Array, d: int) -> Array:
    """``A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E[mu^T z]`` under ``vMF(mu, kappa)``.

    Computed as a ratio (:func:`~jvae.distributions.bessel.log_bessel_ive_and_ratio`),
    never from the functions themselves, so it stays finite where ``I_v``
    overflows; in [0, 1), ``~ kappa / d`` for small ``kappa`` and
    ``~ 1 - (d - 1) / (2 kappa)`` for large (Hankel's series, :func:`_hankel`).
    """
    return _bessel_terms(jnp.asarray(kappa), d)[1]


def vmf_log_normalizer(kappa: Array, d: int) -> Array:
    """``log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)``.

    ``log I_v(kappa)`` is taken as ``log ive_v(kappa) + kappa`` (the exponentially
    scaled function), so large ``kappa`` neither overflows nor loses the term.
    """
    kappa = jnp.asarray(kappa)
    v = 0.5 * d - 1.0
    log_ive, _ = log_bessel_ive_and_ratio(v, kappa)
    return v * jnp.log(kappa) - 0.5 * d * math.log(2.0 * math.pi) - (log_ive + kappa)


def vmf_kl_uniform(kappa: Array, d: int) -> Array:
    """``KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|``.

    Davidson et al. (2018). The two terms linear in ``kappa``
    (``kappa A_d`` and the ``-kappa`` of ``log C_d``) are combined as
    ``-kappa (1 - A_d)``, which is ``O(d)`` for large ``kappa``, instead of
    subtracting two numbers of size ``kappa``.

    The derivative is the closed form ``dKL/dkappa = kappa A_d'(kappa)`` with
    Riccati's ``A_d' = 1 - A_d^2 - (d - 1) A_d / kappa`` (from
    ``I_v' = I_{v+1} + (v / kappa) I_v``), so it needs only the ``A_d`` the
    value computed, and none of the Bessel functions' own derivatives.
    """
    return _vmf_kl_uniform(jnp.asarray(kappa), d)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _vmf_kl_uniform(kappa: Array, d: int) -> Array:
    return _kl_and_ratio(kappa, d)[0]


def _bessel_terms(kappa: Array, d: int) -> tuple[Array, Array, Array]:
    """``(log ive_{d/2-1}(kappa), A_d(kappa), 1 - A_d(kappa))``.

    Past :func:`_hankel`'s switch, ``1 - A_d`` is Hankel's series rather than a
    difference from 1: float32 holds ``A_d`` near 1 only to ``6e-8``, which the
    KL's ``kappa (1 - A_d)`` would multiply by ``kappa``.
    """
    log_ive, ratio = log_bessel_ive_and_ratio(0.5 * d - 1.0, kappa)
    coefficients, switch = _hankel(d)
    large = kappa > switch
    gap = jnp.where(large, _power_series(coefficients, 1.0 / kappa), 1.0 - ratio)
    return log_ive, jnp.where(large, 1.0 - gap, ratio), gap


def _kl_and_ratio(kappa: Array, d: int) -> tuple[Array, Array]:
    v = 0.5 * d - 1.0
    log_ive, ratio, gap = _bessel_terms(kappa, d)
    kl = (-kappa * gap + v * jnp.log(kappa) - log_ive
          - 0.5 * d * math.log(2.0 * math.pi) + log_sphere_area(d))
    # For small kappa the same KL is kappa A_d - log(Gamma(d/2) (2/kappa)^v I_v(kappa)):
    # the constants cancel exactly, leaving two small terms instead of O(1) ones.
    small = kappa * ratio - log_bessel_series(v, kappa)
    return jnp.where(kappa < SERIES_BELOW, small, kl), ratio


@_vmf_kl_uniform.defjvp
def _vmf_kl_uniform_jvp(d, primals, tangents):
    (kappa,), (dkappa,) = primals, tangents
    kl, ratio = _kl_and_ratio(kappa, d)
    # kappa (1 - A^2) and (d - 1) A agree to within O(d^2 / kappa): past the switch
    # their difference is all rounding, and the derivative of Hankel's series takes over.
    coefficients, switch = _hankel(d)
    direct = kappa * (1.0 - ratio) * (1.0 + ratio) - (d - 1.0) * ratio
    series = _power_series(tuple((k + 1) * a for k, a in enumerate(coefficients)), 1.0 / kappa)
    return kl, jnp.where(kappa > switch, series, direct) * dkappa


def _power_series(coefficients: tuple[float, ...], t: Array) -> Array:
    """``sum_k coefficients[k-1] t^k`` (Horner)."""
    total = jnp.zeros_like(t)
    for c in reversed(coefficients):
        total = t * (c + total)
    return total


@functools.lru_cache(maxsize=None)
def _hankel(d: int, terms: int = 16) -> tuple[tuple[float, ...], float]:
    """``a_k`` of ``A_d(kappa) ~ 1 - sum_k a_k kappa^-k`` for large ``kappa``, and where it
    takes over.

    Hankel's expansion of the Bessel ratio solves Riccati's equation
    ``A' = 1 - A^2 - (d - 1) A / kappa`` term by term: ``a_1 = (d - 1) / 2`` and
    ``a_{n+1} = ((n - d + 1) a_n + sum_{i+j=n+1} a_i a_j) / 2``; term by term,
    ``kappa A_d' ~ sum_k k a_k kappa^-k``. Up to ``terms`` terms are kept (fewer
    where a coefficient would leave float32's range), and the series is used
    from the smallest ``kappa`` (at least 16) at which the last term of the
    derivative's series is below ``1e-7`` of its first.
    """
    c = d - 1.0
    a = [c / 2.0]
    for n in range(1, terms):
        nxt = ((n - c) * a[n - 1] + sum(a[i] * a[n - 1 - i] for i in range(n))) / 2.0
        if abs((n + 1) * nxt) > 1e30:
            break
        a.append(nxt)
    switch = 16.0
    while abs(len(a) * a[-1]) / switch ** (len(a) - 1) > 1e-7 * abs(a[0]):
        switch *= 1.25
    return tuple(a), switch


def _wood_b(kappa: Array, d: int) -> Array:
    """Wood's ``b = (sqrt(4 kappa^2 + (d-1)^2) - 2 kappa) / (d - 1)``, in the form without
    cancellation: ``(d - 1) / (2 kappa + sqrt(4 kappa^2 + (d - 1)^2))``."""
    return (d - 1.0) / (2.0 * kappa + jnp.sqrt(4.0 * kappa ** 2 + (d - 1.0) ** 2))


def _accepted_eps(key: Array, kappa: Array, d: int) -> Array:
    """The Beta noise ``eps`` of Wood's (1994) rejection sampler that each element accepts.

    Wood accepts the proposal ``w(eps)`` when
    ``kappa w + (d - 1) log(1 - x0 w) - c >= log u``, ``u ~ U(0, 1)``, with
    ``x0 = (1 - b) / (1 + b)`` and ``c = kappa x0 + (d - 1) log(1 - x0^2)``.
    With ``t = 1 - (1 - b) eps`` that is, exactly,
    ``2 kappa b (1 / (1 + b) - eps / t) + (d - 1) log((1 + b) / (2 t)) >= log u``,
    which has no difference of large numbers at large ``kappa`` (where ``w``
    and ``x0`` both approach 1). Every element draws until it accepts: a
    ``lax.while_loop`` over rounds, each drawing for all elements and keeping
    the first accepted draw. ``kappa`` enters without gradient: the accepted
    ``eps`` is the noise the sample is a differentiable function of.
    """
    kappa = jax.lax.stop_gradient(kappa)
    b = _wood_b(kappa, d)

    def round_(state):
        i, eps, done = state
        # One normal draw per round serves both variates, which keeps the loop body to
        # one random-bits kernel (each compiles slowly on XLA:CPU): Beta(h, h) with
        # h = (d - 1) / 2 is X / (X + Y) for chi-squares X, Y of d - 1 degrees of
        # freedom (this also keeps small eps, large kappa, exact), and a chi-square
        # of 2 degrees of freedom is Exp(1/2), so log u = -chi2_2 / 2 for u ~ U(0, 1).
        g = jnp.square(jax.random.normal(jax.random.fold_in(key, i),
                                         (*kappa.shape, 2 * d), kappa.dtype))
        x, y = g[..., :d - 1].sum(-1), g[..., d - 1:2 * d - 2].sum(-1)
        prop = x / (x + y)
        log_u = -0.5 * (g[..., -2] + g[..., -1])
        t = 1.0 - (1.0 - b) * prop
        test = 2.0 * kappa * b * (1.0 / (1.0 + b) - prop / t) + (d - 1.0) * jnp.log(
            (1.0 + b) / (2.0 * t))
        take = (test >= log_u) & ~done
        return i + 1, jnp.where(take, prop, eps), done | take

    def more(state):
        i, _, done = state
        return (i < VMF_MAX_ROUNDS) & ~jnp.all(done)

    start = (jnp.zeros((), jnp.int32), jnp.full(kappa.shape, 0.5, kappa.dtype),
             jnp.zeros(kappa.shape, bool))
    _, eps, _ = jax.lax.while_loop(more, round_, start)
    return eps


def _wood_w(eps: Array, kappa: Array, d: int) -> tuple[Array, Array]:
    """``(w, sqrt(1 - w^2))`` of Wood's proposal ``w = (1 - (1 + b) eps) / (1 - (1 - b) eps)``.

    Differentiable in ``kappa`` (through ``b``) for fixed ``eps``. The second
    value is computed as ``2 sqrt(b) sqrt(eps (1 - eps)) / (1 - (1 - b) eps)``
    (``1 - w^2 = 4 b eps (1 - eps) / (1 - (1 - b) eps)^2``), exact where
    ``w`` rounds to 1.
    """
    b = _wood_b(kappa, d)
    eps = jnp.clip(eps, jnp.finfo(eps.dtype).tiny, 1.0)
    t = 1.0 - (1.0 - b) * eps
    w = (1.0 - (1.0 + b) * eps) / t
    return w, 2.0 * jnp.sqrt(b) * jnp.sqrt(eps * (1.0 - eps)) / t


def _inverse_cdf_w3(u: Array, kappa: Array) -> tuple[Array, Array]:
    """``(w, sqrt(1 - w^2))`` of ``vMF(e_1, kappa)`` on ``S^2`` by inverting its CDF.

    On ``S^2`` the density of ``w`` is ``kappa e^{kappa w} / (2 sinh kappa)``, whose
    CDF inverts in closed form: ``w = 1 + log(u + (1 - u) e^{-2 kappa}) / kappa``
    for ``u ~ U(0, 1)``, an exact reparameterization without a rejection step
    (the authors' TensorFlow code takes this path for ``d = 3`` too). With
    ``s = -log(u + (1 - u) e^{-2 kappa}) / kappa = 1 - w`` in ``[0, 2]``,
    ``1 - w^2 = s (2 - s)`` keeps its precision where ``w`` rounds to 1.
    """
    u = jnp.clip(u, jnp.finfo(u.dtype).tiny, 1.0)
    s = -jnp.logaddexp(jnp.log(u), jnp.log1p(-u) - 2.0 * kappa) / kappa
    s = jnp.clip(s, jnp.finfo(s.dtype).tiny, 2.0)  # sqrt's gradient at 0 is infinite
    return 1.0 - s, jnp.sqrt(s * (2.0 - s))


def _uniform_sphere(key: Array, shape: tuple[int, ...], dtype) -> Array:
    """Uniform draws on the unit sphere along the last axis of ``shape`` (normalized
    standard Normals)."""
    g = jax.random.normal(key, shape, dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def _rotate_from_e1(x: Array, mu: Array) -> Array:
    """An orthogonal map taking ``e_1`` to ``mu``, applied to ``x`` along the last axis.

    The Householder reflection about ``u = e_1 - mu``,
    ``x - (x . u) u / (1 - mu_1)`` (``|u|^2 = 2 (1 - mu_1)``), is ill-conditioned
    when ``mu`` is near ``e_1``; there the reflection about ``u = e_1 + mu``
    (which takes ``e_1`` to ``-mu``) followed by ``x -> -x`` is used instead, so
    the divisor ``1 + |mu_1|`` is never below 1. ``vMF(e_1, kappa)`` is symmetric
    about ``e_1``, so both maps carry it to ``vMF(mu, kappa)``.
    """
    sign = jax.lax.stop_gradient(jnp.where(mu[..., :1] >= 0, 1.0, -1.0).astype(mu.dtype))
    u = sign * mu + (jnp.arange(mu.shape[-1]) == 0).astype(mu.dtype)
    return -sign * (x - jnp.sum(x * u, -1, keepdims=True) * u / (1.0 + sign * mu[..., :1]))


def vmf_sample(key: Array, mu: Array, kappa: Array, num_samples: int) -> Array:
    """``num_samples`` reparameterized draws of ``vMF(mu, kappa)``.

    Args:
      key: PRNG key.
      mu: ``(..., d)`` unit mean directions.
      kappa: ``(..., 1)`` concentrations (broadcast against ``mu``).
      num_samples: draws per distribution.

    Returns:
      ``(num_samples, ..., d)`` points on ``S^{d-1}``, differentiable in ``mu``
      and ``kappa`` (see the module's docstring).
    """
    d = mu.shape[-1]
    k_w, k_dir = jax.random.split(key)
    kappa = jnp.broadcast_to(kappa[..., 0], (num_samples, *mu.shape[:-1]))
    if d == 3:
        w, radius = _inverse_cdf_w3(jax.random.uniform(k_w, kappa.shape, kappa.dtype), kappa)
    else:
        w, radius = _wood_w(_accepted_eps(k_w, kappa, d), kappa, d)
    v = _uniform_sphere(k_dir, (*kappa.shape, d - 1), mu.dtype)
    x = jnp.concatenate([w[..., None], radius[..., None] * v], axis=-1)
    return _rotate_from_e1(x, jnp.broadcast_to(mu, x.shape))


def vmf_posterior(min_concentration: float = 1.0) -> Posterior:
    """Von Mises-Fisher posterior on ``S^{d-1}`` with the uniform prior on the sphere.

    The encoder emits a raw direction and a raw concentration, each shaped like
    the latent (so a spatial spec encoder splits its channels evenly between
    them): ``mu = loc / ||loc||`` and
    ``kappa = softplus(mean_j concentration_j) + min_concentration``, one per
    sphere. The floor follows the paper's reference code, which adds 1: it
    keeps Wood's sampler and the Bessel ratios away from ``kappa = 0``, at a
    KL of at most a fraction of a nat per sphere (0.15 nats on ``S^2`` at
    ``kappa = 1``).

    ``mean`` is the mean direction ``mu`` (the mode): ``E_q[z] = A_d(kappa) mu``
    lies inside the ball, where the decoder is never evaluated in training, so
    reconstructions, interpolations and active units use ``mu``.

    Args:
      min_concentration: the floor of ``kappa`` (positive).

    Returns:
      A :class:`~jvae.base.Posterior` named ``"vmf"``; ``latent_shape[-1] = d``.
    """
    if not min_concentration > 0:
        raise ValueError(f"min_concentration must be positive, got {min_concentration}")

    def param_shapes(latent_shape):
        if not latent_shape or latent_shape[-1] < 2:
            raise ValueError("a von Mises-Fisher latent lives on S^{d-1} with d >= 2 on its "
                             f"last axis, got latent shape {tuple(latent_shape)}")
        return {"loc": tuple(latent_shape), "concentration": tuple(latent_shape)}

    def constrain(raw):
        loc = raw["loc"]
        # A raw direction of (numerically) 0 has none: e_1 stands in, with a zero gradient
        # (the inner where keeps rsqrt's infinite gradient at 0 out of the backward pass).
        zero = jnp.sum(jnp.square(loc), -1, keepdims=True) < jnp.finfo(loc.dtype).tiny
        loc = jnp.where(zero, (jnp.arange(loc.shape[-1]) == 0).astype(loc.dtype), loc)
        mu = loc * jax.lax.rsqrt(jnp.sum(jnp.square(loc), -1, keepdims=True))
        kappa = jax.nn.softplus(jnp.mean(raw["concentration"], -1, keepdims=True))
        return {"loc": mu, "concentration": kappa + min_concentration}

    def n_spheres(params):
        return params["loc"].ndim - 2  # leading latent axes after the batch axis

    def sum_spheres(x, n):
        return x.sum(axis=tuple(range(x.ndim - n, x.ndim))) if n else x

    def sample(key, params, num_samples):
        return vmf_sample(key, params["loc"], params["concentration"], num_samples)

    def log_prob(params, z):
        mu, kappa = params["loc"], params["concentration"]
        lp = kappa[..., 0] * jnp.sum(mu * z, -1) + vmf_log_normalizer(kappa[..., 0], z.shape[-1])
        return sum_spheres(lp, n_spheres(params))

    def kl(params):
        kappa = params["concentration"][..., 0]
        return sum_spheres(vmf_kl_uniform(kappa, params["loc"].shape[-1]), n_spheres(params))

    def prior_sample(key, latent_shape, n):
        return _uniform_sphere(key, (n, *latent_shape), jnp.float32)

    def prior_log_prob(z, latent_shape):
        n = math.prod(latent_shape[:-1])
        return jnp.full(z.shape[:z.ndim - len(latent_shape)],
                        -n * log_sphere_area(latent_shape[-1]), z.dtype)

    return Posterior("vmf", param_shapes, constrain, sample, log_prob, kl,
                     lambda p: p["loc"], prior_sample, prior_log_prob)
