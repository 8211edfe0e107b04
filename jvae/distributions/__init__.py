"""Distributions of a VAE: posterior families with their priors, and likelihoods.

Each family is a NamedTuple of pure functions (:class:`~jvae.base.Posterior`,
:class:`~jvae.base.Likelihood`), in the shape of optax's ``GradientTransformation``.

* :mod:`~jvae.distributions.posteriors`: Normal, Dirichlet and point (autoencoder)
  posteriors; reparameterized samples, prior draws, the KL in closed form or
  its Monte Carlo estimate.
* :mod:`~jvae.distributions.flows`: a Normal pushed through spline or affine
  coupling layers.
* :mod:`~jvae.distributions.vq`: vector-quantized latents (straight-through),
  codebook usage.
* :mod:`~jvae.distributions.likelihoods`: Bernoulli, Gaussian and the
  discretized logistic mixture (bits/dim).
"""

from jvae.distributions.flows import (
    COUPLINGS,
    CouplingConditioner,
    coupling_masks,
    flow_posterior,
)
from jvae.distributions.likelihoods import (
    Likelihood,
    bernoulli,
    bits_per_dim,
    discretized_logistic_mixture,
    gaussian,
    laplace,
    masked_log_prob,
)
from jvae.distributions.posteriors import (
    DIRICHLET_REPARAMS,
    NORMAL_SCALES,
    Posterior,
    dirichlet_posterior,
    kl_estimate,
    normal_posterior,
    point_posterior,
    sample_and_log_prob,
    sample_prior,
)
from jvae.distributions.vq import (
    code_indices,
    codebook_usage,
    quantize,
    vq_posterior,
)

__all__ = [
    "COUPLINGS",
    "CouplingConditioner",
    "DIRICHLET_REPARAMS",
    "Likelihood",
    "NORMAL_SCALES",
    "Posterior",
    "bernoulli",
    "bits_per_dim",
    "code_indices",
    "codebook_usage",
    "coupling_masks",
    "dirichlet_posterior",
    "discretized_logistic_mixture",
    "flow_posterior",
    "gaussian",
    "kl_estimate",
    "laplace",
    "masked_log_prob",
    "normal_posterior",
    "point_posterior",
    "quantize",
    "sample_and_log_prob",
    "sample_prior",
    "vq_posterior",
]
