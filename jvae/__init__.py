"""jvae: variational autoencoders in JAX and Flax.

Pure-function models, composable objectives and a jitted, data-parallel train step::

    import jvae
    vae = jvae.make_vae(encoder, decoder, jvae.normal_posterior(), jvae.bernoulli(), (16,))
    objective, optimizer = jvae.elbo(vae), jvae.make_optimizer(1e-3)
    state = jvae.create_train_state(vae, objective, optimizer, jax.random.key(0), batch)
    state, metrics = jvae.make_train_step(objective, optimizer)(state, batch)

This namespace holds the names research code uses; everything else is
reachable through the package of its role, each exporting its names:
``jvae.distributions`` (posteriors, flows, VQ, likelihoods), ``jvae.terms``
(loss terms), ``jvae.layers`` (networks), ``jvae.datasets``, ``jvae.devices``,
``jvae.training`` and the application ``jvae.app`` (the ``jvae`` command).
The front doors ``jvae.nets``, ``jvae.objectives``, ``jvae.data``,
``jvae.train_state`` and ``jvae.train`` gather each area's main names.
"""

from jvae.base import Forward, Term, Weight
from jvae.data import batches, load_dataset
from jvae.devices import data_mesh, replicate
from jvae.distributions import bernoulli, dirichlet_posterior, gaussian, normal_posterior
from jvae.model import make_vae
from jvae.nets import ParamHead
from jvae.objectives import elbo
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
