"""jvae: variational autoencoders in JAX and Flax.

Pure-function models, composable objectives and a jitted, data-parallel train step::

    import jvae
    vae = jvae.make_vae(encoder, decoder, jvae.normal_posterior(), jvae.bernoulli(), (16,))
    objective, optimizer = jvae.elbo(vae), jvae.make_optimizer(1e-3)
    state = jvae.create_train_state(vae, objective, optimizer, jax.random.key(0), batch)
    state, metrics = jvae.make_train_step(objective, optimizer)(state, batch)

This namespace holds the names research code uses; everything else is
reachable through its module (``jvae.zoo``, ``jvae.flows``, ``jvae.layers.spec``,
``jvae.experiment``, ...). The ``jvae`` command is :mod:`jvae.cli`.
"""

from jvae.base import Forward, Term, Weight
from jvae.data import batches, load_dataset
from jvae.layers.heads import ParamHead
from jvae.likelihoods import bernoulli, gaussian
from jvae.model import make_vae
from jvae.objectives import elbo
from jvae.parallel import data_mesh, replicate
from jvae.posteriors import dirichlet_posterior, normal_posterior
from jvae.terms import compose, elbo_terms, stateless
from jvae.train_state import (
                              TrainState,
                              create_train_state,
                              make_eval_step,
                              make_optimizer,
                              make_train_step,
)

__version__ = "0.1.0"

__all__ = [
    "Forward",
    "ParamHead",
    "Term",
    "TrainState",
    "Weight",
    "batches",
    "bernoulli",
    "compose",
    "create_train_state",
    "data_mesh",
    "dirichlet_posterior",
    "elbo",
    "elbo_terms",
    "gaussian",
    "load_dataset",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "make_vae",
    "normal_posterior",
    "replicate",
    "stateless",
]
