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
from jvae.train_state import (TrainState, create_train_state, make_eval_step, make_optimizer,
                              make_train_step)

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
    "TrainState", "create_train_state", "make_eval_step", "make_optimizer", "make_train_step",
]
