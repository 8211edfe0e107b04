"""Small models and data shared by the tests."""

import jax

from jvae.likelihoods import bernoulli
from jvae.model import make_vae
from jvae.nets import make_nets


def tiny_vae(posterior, latent_shape=(4,), data_shape=(8, 8, 1), likelihood=None, hidden=(32,)):
    lik = likelihood or bernoulli()
    enc, dec = make_nets("mlp", posterior=posterior, likelihood=lik, latent_shape=latent_shape,
                         data_shape=data_shape, hidden=hidden)
    return make_vae(enc, dec, posterior, lik, latent_shape)


def random_images(n=16, shape=(8, 8, 1), seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, *shape))
