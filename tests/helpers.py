"""Small models and data shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np

from jvae.distributions.likelihoods import bernoulli
from jvae.model import make_vae
from jvae.nets import make_nets


def tiny_vae(posterior, latent_shape=(4,), data_shape=(8, 8, 1), likelihood=None, hidden=(32,)):
    lik = likelihood or bernoulli()
    enc, dec = make_nets("mlp", posterior=posterior, likelihood=lik, latent_shape=latent_shape,
                         data_shape=data_shape, hidden=hidden)
    return make_vae(enc, dec, posterior, lik, latent_shape)


def random_images(n=16, shape=(8, 8, 1), seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, *shape))


def assert_same_layer(ref, ours, x, atol=1e-5):
    """``ours`` has ``ref``'s parameters (names, shapes, initial values), outputs and gradients.

    Gradients are those of ``sum(sin(layer(x)))`` with respect to the
    parameters and the input, so every output element weighs differently.
    """
    params = ref.init(jax.random.key(1), x)
    mine = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(mine)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mine)):
        np.testing.assert_array_equal(a, b)  # same initializers, same values
    np.testing.assert_allclose(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x),
                               rtol=atol, atol=atol)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))  # noqa: E731
    g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def run_cli(argv, capsys):
    """Runs a ``jvae`` mode in-process: ``(exit code, captured out/err)``; flag errors exit
    via argparse."""
    from jvae.app.cli import main
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()
