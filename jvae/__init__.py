"""jvae: variational autoencoders in JAX and Flax.

Pure-function models, objectives and a jitted, data-parallel train step::

    from jvae import make_vae, elbo, make_optimizer, create_train_state, make_train_step
"""

from jvae.checkpoint import Checkpointer
from jvae.config import Config, ConfigError, make_config
from jvae.data import DataError, batches, load_dataset, read_idx
from jvae.generate import make_reconstructor, make_sampler
from jvae.likelihoods import Likelihood, bernoulli, gaussian
from jvae.model import VAE, make_vae
from jvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, ParamHead, make_nets
from jvae.objectives import Objective, elbo
from jvae.parallel import data_mesh, replicate, shard_batch
from jvae.posteriors import Posterior, dirichlet_posterior, normal_posterior
from jvae.sequence import RNNDecoder, RNNEncoder, make_rnn_nets
from jvae.spec import SpecError, SpecNet, parse_spec
from jvae.spec_nets import (SpecDecoder, SpecEncoder, available_architectures, load_architecture,
                            make_spec_nets)
from jvae.train_state import (TrainState, create_train_state, make_eval_step, make_optimizer,
                              make_train_step)
from jvae.flows import flow_posterior
from jvae.logistic import discretized_logistic_mixture
from jvae.posteriors import point_posterior
from jvae.ssim import ssim
from jvae.terms import Forward, Term, compose, elbo_terms, linear_warmup
from jvae.vq import vq_posterior
from jvae.zoo import autoencoder, beta_vae, cvae, iwae, vq_vae
from jvae.epoch import binarize_key, epoch_order, make_train_epoch, put_dataset
from jvae.optim import clipped_adam
from jvae.precision import mixed_precision
from jvae.train_state import make_update_fn
from jvae.upsample import ConvTranspose

__version__ = "0.1.0"

__all__ = [
    "Checkpointer",
    "Config", "ConfigError", "make_config",
    "DataError", "batches", "load_dataset", "read_idx",
    "make_reconstructor", "make_sampler",
    "Likelihood", "bernoulli", "gaussian",
    "VAE", "make_vae",
    "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "ParamHead", "make_nets",
    "Objective", "elbo",
    "data_mesh", "replicate", "shard_batch",
    "Posterior", "dirichlet_posterior", "normal_posterior",
    "RNNDecoder", "RNNEncoder", "make_rnn_nets",
    "SpecError", "SpecNet", "parse_spec",
    "SpecDecoder", "SpecEncoder", "available_architectures", "load_architecture",
    "make_spec_nets",
    "TrainState", "create_train_state", "make_eval_step", "make_optimizer", "make_train_step",
    "flow_posterior", "discretized_logistic_mixture", "point_posterior", "ssim",
    "Forward", "Term", "compose", "elbo_terms", "linear_warmup", "vq_posterior",
    "autoencoder", "beta_vae", "cvae", "iwae", "vq_vae",
    "binarize_key", "epoch_order", "make_train_epoch", "put_dataset",
    "clipped_adam", "mixed_precision",
    "make_update_fn", "ConvTranspose",
]
