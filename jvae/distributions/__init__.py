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
* :mod:`~jvae.distributions.vmf`: von Mises-Fisher latents on the hypersphere with
  a uniform prior (S-VAE): Wood's sampler, Bessel ratios, the exact KL.
* :mod:`~jvae.distributions.bessel`: ``log I_v`` and ``I_{v+1} / I_v`` for a fixed
  order, without loops.
* :mod:`~jvae.distributions.priors`: learned priors (the VampPrior, a second
  stochastic layer) and the one door to p(z), ``log_prior``/``draw_prior``.
* :mod:`~jvae.distributions.likelihoods`: Bernoulli, Gaussian and the
  discretized logistic mixture (bits/dim).
"""

from jvae.distributions.bessel import SERIES_BELOW, log_bessel_ive_and_ratio, log_bessel_series
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
from jvae.distributions.priors import (
    PRIOR_KEY_TAG,
    VAMP_INITS,
    GaussianMLP,
    Prior,
    draw_prior,
    hierarchical_prior,
    init_prior_from_data,
    log_prior,
    prior_key,
    pseudo_inputs,
    vamp_prior,
)
from jvae.distributions.vmf import (
    VMF_MAX_ROUNDS,
    log_sphere_area,
    mean_resultant_length,
    vmf_kl_uniform,
    vmf_log_normalizer,
    vmf_posterior,
    vmf_sample,
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
    "GaussianMLP",
    "Likelihood",
    "NORMAL_SCALES",
    "PRIOR_KEY_TAG",
    "Posterior",
    "Prior",
    "SERIES_BELOW",
    "VAMP_INITS",
    "VMF_MAX_ROUNDS",
    "bernoulli",
    "bits_per_dim",
    "code_indices",
    "codebook_usage",
    "coupling_masks",
    "dirichlet_posterior",
    "discretized_logistic_mixture",
    "draw_prior",
    "flow_posterior",
    "gaussian",
    "hierarchical_prior",
    "init_prior_from_data",
    "kl_estimate",
    "laplace",
    "log_bessel_ive_and_ratio",
    "log_bessel_series",
    "log_prior",
    "log_sphere_area",
    "masked_log_prob",
    "mean_resultant_length",
    "normal_posterior",
    "point_posterior",
    "prior_key",
    "pseudo_inputs",
    "quantize",
    "sample_and_log_prob",
    "sample_prior",
    "vamp_prior",
    "vmf_kl_uniform",
    "vmf_log_normalizer",
    "vmf_posterior",
    "vmf_sample",
    "vq_posterior",
]
