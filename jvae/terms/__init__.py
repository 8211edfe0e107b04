"""Loss terms, the pieces objectives are composed of (:mod:`jvae.objectives` holds the families).

* :mod:`~jvae.terms.composition`: the shared forward pass, :func:`compose` of
  weighted terms, weight schedules.
* :mod:`~jvae.terms.standard`: reconstruction, KL, the IWAE bound, SSIM,
  code sparsity, decoder L2, the ELBO's terms.
* :mod:`~jvae.terms.masked`: batch reductions that skip padded rows.
* :mod:`~jvae.terms.similarity`: differentiable SSIM.
* :mod:`~jvae.terms.vq`: the VQ codebook and commitment losses.
"""

from jvae.terms.composition import (
    Forward,
    Term,
    Weight,
    compose,
    forward,
    linear_warmup,
    stateless,
)
from jvae.terms.masked import (
    masked_mean,
    masked_sums,
)
from jvae.terms.similarity import (
    gaussian_window,
    ssim,
)
from jvae.terms.standard import (
    decoder_l2,
    elbo_terms,
    iwae_bound,
    kl_divergence,
    latent_sparsity,
    log_mean_exp,
    neg_elbo_metric,
    reconstruction,
    ssim_loss,
)
from jvae.terms.vq import (
    vq_codebook_loss,
    vq_commitment_loss,
)

__all__ = [
    "Forward",
    "Term",
    "Weight",
    "compose",
    "decoder_l2",
    "elbo_terms",
    "forward",
    "gaussian_window",
    "iwae_bound",
    "kl_divergence",
    "latent_sparsity",
    "linear_warmup",
    "log_mean_exp",
    "masked_mean",
    "masked_sums",
    "neg_elbo_metric",
    "reconstruction",
    "ssim",
    "ssim_loss",
    "stateless",
    "vq_codebook_loss",
    "vq_commitment_loss",
]
