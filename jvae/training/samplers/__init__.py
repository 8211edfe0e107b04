"""Samplers fitted to a trained model's codes, drawn in place of its prior.

``fit_sampler(name, latents, key, **options)`` fits one of :data:`SAMPLERS`
to flat codes ``(N, D)`` (:func:`posterior_codes` makes them: a draw of
``q(z|x)`` per training image) and returns a :class:`FittedSampler`.

* :mod:`~jvae.training.samplers.base`: the :class:`Sampler` contract (``fit``,
  ``sample``, ``log_prob``), standardisation, the gradient-fitting loop;
* :mod:`~jvae.training.samplers.gmm`: a full-covariance Gaussian mixture by EM;
* :mod:`~jvae.training.samplers.two_stage`: Dai & Wipf's second-stage VAE;
* :mod:`~jvae.training.samplers.maf`: a masked autoregressive flow;
* :mod:`~jvae.training.samplers.fitting`: the registry, the codes, the files.
"""

from jvae.training.samplers.base import (
    FittedSampler,
    Sampler,
    SamplerError,
    fit_by_gradient,
    split_codes,
    standardizer,
)
from jvae.training.samplers.fitting import (
    MAX_SAMPLER_DIM,
    SAMPLERS,
    fit_sampler,
    load_sampler,
    posterior_codes,
    sampler_by_name,
    sampler_from_bytes,
    sampler_to_bytes,
    save_sampler,
)
from jvae.training.samplers.gmm import (
    fit_mixture,
    gaussian_mixture,
    kmeans_plusplus,
    mixture_log_prob,
)
from jvae.training.samplers.maf import (
    ALPHA_BOUND,
    init_maf,
    made_masks,
    maf_forward,
    maf_inverse,
    maf_log_prob,
    masked_autoregressive_flow,
)
from jvae.training.samplers.two_stage import (
    SharedScaleDecoder,
    second_stage_vae,
    two_stage_vae,
)

__all__ = [
    "ALPHA_BOUND",
    "FittedSampler",
    "MAX_SAMPLER_DIM",
    "SAMPLERS",
    "Sampler",
    "SamplerError",
    "SharedScaleDecoder",
    "fit_by_gradient",
    "fit_mixture",
    "fit_sampler",
    "gaussian_mixture",
    "init_maf",
    "kmeans_plusplus",
    "load_sampler",
    "made_masks",
    "maf_forward",
    "maf_inverse",
    "maf_log_prob",
    "masked_autoregressive_flow",
    "mixture_log_prob",
    "posterior_codes",
    "sampler_by_name",
    "sampler_from_bytes",
    "sampler_to_bytes",
    "save_sampler",
    "second_stage_vae",
    "split_codes",
    "standardizer",
    "two_stage_vae",
]
