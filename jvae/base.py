"""The contracts every part of jvae is written against.

As optax's ``base`` module does for gradient transformations, this module
holds only types: a :class:`Posterior` and a :class:`Likelihood` (families as
NamedTuples of pure functions), a :class:`VAE` (an encoder/decoder pair bound to
them), an :class:`Objective` (per-example loss terms), and the :class:`Forward`
pass and :class:`Term` an objective is composed of; plus the error type every
user-facing failure derives from. Every other module imports downward from here.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]
Params = dict[str, Array]

# Batch entry holding each example's number of real elements along its first
# data axis (a clip padded with silence to the batch's length); absent: all real.
LENGTH_KEY = "length"

__all__ = ["Array", "PyTree", "Batch", "Params", "LENGTH_KEY", "JvaeError", "ConfigError",
           "Posterior", "Likelihood", "Prior", "VAE", "Objective", "Forward", "Term", "Weight",
           "Discriminator"]


class JvaeError(Exception):
    """A failure the user can fix: the message names the problem and the fix.

    Command-line entry points print it as one line and exit with
    ``exit_code`` (2: bad input or settings), never with a traceback.
    """

    exit_code: int = 2


class ConfigError(JvaeError, ValueError):
    """A setting that cannot be used; the message names the key and the fix."""


class Posterior(NamedTuple):
    """A posterior family and its prior, as pure functions.

    Attributes:
      name: short identifier, also used by the CLI.
      param_shapes: ``latent_shape -> {name: shape}``, the per-example shape of
        each unconstrained parameter the encoder head must emit.
      constrain: raw head outputs -> distribution parameters.
      sample: ``(key, params, num_samples) -> z`` of shape
        ``(num_samples, batch, *latent_shape)``, reparameterized.
      log_prob: ``(params, z) -> (num_samples, batch)`` log q(z|x).
      kl: ``params -> (batch,)`` analytic KL(q(z|x) || p(z)).
      mean: ``params -> (batch, *latent_shape)`` posterior mean.
      prior_sample: ``(key, latent_shape, n) -> (n, *latent_shape)``; a family
        with shared parameters takes them as a fourth argument (see
        :func:`sample_prior`).
      prior_log_prob: ``(z, latent_shape) -> z.shape[:-len(latent_shape)]``.
      analytic_kl: whether ``kl`` is a closed form. When False (flows), ``kl``
        raises and objectives use the Monte Carlo estimate
        ``log q(z|x) - log p(z)`` on the samples they draw (see :func:`kl_estimate`).
      sample_and_log_prob: optional ``(key, params, num_samples) -> (z, log q(z|x))``
        computed in one pass (a flow pushes samples forward and accumulates its
        log-determinants rather than inverting); None means
        ``sample`` followed by ``log_prob``.
      init_shared: optional ``(key, latent_shape) -> pytree`` of parameters
        shared by all examples (a flow's conditioner weights, a VQ codebook).
        :func:`~jvae.model.make_vae` stores them under ``params["posterior"]``
        and ``encode`` hands them to the family as ``params["shared"]``.
    """

    name: str
    param_shapes: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]]
    constrain: Callable[[Params], Params]
    sample: Callable[[Array, Params, int], Array]
    log_prob: Callable[[Params, Array], Array]
    kl: Callable[[Params], Array]
    mean: Callable[[Params], Array]
    prior_sample: Callable[[Array, tuple[int, ...], int], Array]
    prior_log_prob: Callable[[Array, tuple[int, ...]], Array]
    analytic_kl: bool = True
    sample_and_log_prob: Callable[[Array, Params, int], tuple[Array, Array]] | None = None
    init_shared: Callable[[Array, tuple[int, ...]], Any] | None = None


class Likelihood(NamedTuple):
    """An observation model as pure functions.

    Attributes:
      name: short identifier, also used by the CLI.
      param_shapes: ``data_shape -> {name: shape}`` the decoder head must emit.
      constrain: raw head outputs -> likelihood parameters.
      log_prob: ``(params, x) -> params' leading axes``: log p(x|z) summed over
        the ``x.ndim - 1`` data dimensions; ``x`` broadcasts over leading
        sample axes of ``params``.
      mean: ``params -> E[x|z]``, used for reconstructions and samples.
      log_prob_elements: ``(params, x) -> (..., D)``, the per-element
        log-probabilities over the ``D`` flattened data elements (their sum is
        ``log_prob``), so a padded batch can count only its valid elements; None
        for a likelihood that does not factorize over elements.
    """

    name: str
    param_shapes: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]]
    constrain: Callable[[Params], Params]
    log_prob: Callable[[Params, Array], Array]
    mean: Callable[[Params], Array]
    log_prob_elements: Callable[[Params, Array], Array] | None = None


class Prior(NamedTuple):
    """A prior p(z) with trainable parameters of its own, replacing the family's fixed one.

    Its parameters live in ``params["prior"]``; its functions receive the whole
    model and its parameters, so a prior may run the model's own networks (the
    VampPrior encodes its pseudo-inputs). :func:`jvae.distributions.priors.log_prior`
    and :func:`~jvae.distributions.priors.draw_prior` route every consumer to it.

    Attributes:
      name: short identifier.
      init: ``(key, x, latent_shape) -> pytree``, its initial parameters;
        ``x`` is an example batch ``(B, *data_shape)`` (only its shape and dtype count).
      log_prob: ``(vae, params, z, key) -> z.shape[:-len(latent_shape)]``:
        ``log p(z)``, or for a prior with latent variables of its own
        (``exact=False``) a one-sample importance estimate of it drawn with ``key``.
      sample: ``(vae, params, key, n) -> (n, *latent_shape)`` draws from p(z).
      exact: whether ``log_prob`` is the exact log-density. When False its
        expectation lower-bounds ``log p(z)``, so every ELBO and importance-weighted
        bound built on it is still a bound on ``log p(x)``.
      init_from_data: optional ``(key, prior_params, images) -> prior_params``,
        re-initializing the prior from training data (the VampPrior's pseudo-inputs).
    """

    name: str
    init: Callable[[Array, Array, tuple[int, ...]], PyTree]
    log_prob: Callable[..., Array]
    sample: Callable[..., Array]
    exact: bool = True
    init_from_data: Callable[[Array, PyTree, Any], PyTree] | None = None


class VAE(NamedTuple):
    """An encoder/decoder pair with its posterior family and likelihood.

    Attributes:
      init: ``(key, x, cond=None) -> params`` with ``params`` a dict holding
        ``"encoder"`` and ``"decoder"`` subtrees (and ``"posterior"`` for a
        family with shared parameters, see ``Posterior.init_shared``; ``"prior"``
        for a learned prior).
      encode: ``(params, x, cond=None) -> posterior parameters``.
      decode: ``(params, z, cond=None) -> likelihood parameters``.
      posterior: the :class:`~jvae.distributions.posteriors.Posterior` family.
      likelihood: the :class:`~jvae.distributions.likelihoods.Likelihood`.
      latent_shape: per-example latent shape.
      prior: a learned :class:`Prior` replacing the posterior family's fixed
        ``prior_log_prob``/``prior_sample``, or None (the family's own).
    """

    init: Callable[..., PyTree]
    encode: Callable[..., dict[str, Array]]
    decode: Callable[..., dict[str, Array]]
    posterior: Posterior
    likelihood: Likelihood
    latent_shape: tuple[int, ...]
    prior: Prior | None = None


class Objective(NamedTuple):
    """A loss as pure functions.

    Attributes:
      init: ``() -> loss_state``, the objective's own state (``()`` if none).
      terms: ``(params, batch, key, loss_state) -> (terms, loss_state)`` where
        ``terms`` maps names to per-example arrays of shape ``(batch,)`` and
        contains ``"loss"``.
    """

    init: Callable[[], PyTree]
    terms: Callable[[PyTree, Batch, Array, PyTree], tuple[dict[str, Array], PyTree]]


class Forward(NamedTuple):
    """One encode/sample/decode pass, shared by all terms.

    Attributes:
      vae: the model.
      params: model parameters.
      x: the batch's data ``(B, *data_shape)``.
      cond: the conditioning input or None.
      mask: ``(B,)`` 1 for real rows, 0 for padding, or None (all real).
      post: posterior parameters (per example, plus ``"shared"`` if the family has any).
      z: posterior samples ``(S, B, *latent_shape)``.
      log_q: ``log q(z|x)`` of the samples, ``(S, B)``.
      log_pz: ``log p(z)`` of the samples, ``(S, B)`` (for a learned prior with
        latent variables of its own, a one-sample estimate, see :class:`Prior`).
      lik: likelihood parameters for every sample, ``(S, B, ...)``.
      log_px: ``log p(x|z)``, ``(S, B)``; only valid elements count (see ``valid``).
      valid: ``(B, T)`` 1 for the real elements along the data's first axis, 0
        for padding (a clip shorter than the batch's length is padded with
        silence), or None (every element real). Built from the batch's
        ``"length"`` entry by :func:`jvae.terms.masked.valid_mask`.
      key: a PRNG key independent of the draws of ``z``, for terms that draw
        randomness of their own (prior samples for an MMD, a permutation of the
        codes); None where the pass was built without one.
      shared: scratch of this one pass for values several terms compute from it
        (beta-TCVAE's pairwise densities,
        :func:`jvae.terms.composition.shared_value`), or None. A term
        that reuses the first term's traced value instead of recomputing it
        leaves one copy in the program, so autodiff sums the terms' cotangents
        and differentiates it once.
    """

    vae: VAE
    params: PyTree
    x: Array
    cond: Array | None
    mask: Array | None
    post: dict
    z: Array
    log_q: Array
    log_pz: Array
    lik: dict
    log_px: Array
    valid: Array | None = None
    key: Array | None = None
    shared: dict | None = None


class Term(NamedTuple):
    """One additive piece of an objective.

    Attributes:
      init: ``vae -> state`` (``()`` for a stateless term).
      apply: ``(forward, state) -> (value, metrics, state)`` with ``value`` the
        per-example term ``(B,)`` and ``metrics`` a dict of extra per-example
        arrays to report (often empty).
    """

    init: Callable[[VAE], PyTree]
    apply: Callable[[Forward, PyTree], tuple[Array, dict[str, Array], PyTree]]


class Discriminator(NamedTuple):
    """A discriminator network as pure functions (for an adversarial term).

    Attributes:
      init: ``(key, example_images) -> params``.
      apply: ``(params, images) -> logits`` (any shape with the batch first).
    """

    init: Callable[[jax.Array, jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array], jax.Array]


# A weight is a constant or a schedule ``step -> weight`` (step: int32 scalar).
Weight = float | Callable[[Array], Array]
