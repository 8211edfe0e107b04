"""Composable loss terms: the ELBO as a composition, KL warm-up, scale-free sparsity."""

import jax
import jax.numpy as jnp
import numpy as np

from jvae.devices.parallel import data_mesh
from jvae.distributions.posteriors import normal_posterior
from jvae.objectives import elbo
from jvae.terms import (
    compose,
    decoder_l2,
    elbo_terms,
    latent_sparsity,
    linear_warmup,
    neg_elbo_metric,
    reconstruction,
)
from jvae.train_state import create_train_state, make_optimizer, make_train_step

from helpers import random_images, tiny_vae


def test_elbo_is_the_composition_of_recon_and_kl():
    vae = tiny_vae(normal_posterior())
    x = random_images()
    params = jax.jit(vae.init)(jax.random.key(0), x)
    batch, key = {"image": x}, jax.random.key(1)
    core, state = jax.jit(elbo(vae, beta=3.0, num_samples=2).terms)(params, batch, key, ())
    assert state == () and elbo(vae).init() == ()
    # By hand, from the same draws: recon = -mean_s log p(x|z_s), KL in closed form.
    @jax.jit
    def by_hand(params):
        post = vae.encode(params, x)
        z = vae.posterior.sample(key, post, 2)
        lik = jax.vmap(lambda zs: vae.decode(params, zs))(z)
        return -vae.likelihood.log_prob(lik, x).mean(0), vae.posterior.kl(post)
    recon, kl = by_hand(params)
    np.testing.assert_allclose(core["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(core["neg_elbo"], recon + kl, rtol=1e-5)
    np.testing.assert_allclose(core["loss"], recon + 3.0 * kl, rtol=1e-5)
    # Adding a term changes the loss by exactly its weighted value.
    extended = compose(vae, {**elbo_terms(beta=3.0), "l2": (0.5, decoder_l2())}, num_samples=2,
                       derived=neg_elbo_metric)
    ext, _ = jax.jit(extended.terms)(params, batch, key, extended.init())
    sq = sum(jnp.sum(w ** 2) for w in jax.tree.leaves(params["decoder"]) if w.ndim >= 2)
    np.testing.assert_allclose(ext["l2"], sq, rtol=1e-5)
    np.testing.assert_allclose(ext["loss"], core["loss"] + 0.5 * sq, rtol=1e-5)


def test_kl_warmup_ramps_with_the_step_kept_in_loss_state():
    vae = tiny_vae(normal_posterior())
    x = random_images(8)
    params = jax.jit(vae.init)(jax.random.key(0), x)
    objective = compose(vae, elbo_terms(beta=linear_warmup(2.0, 4)), derived=neg_elbo_metric)
    terms = jax.jit(objective.terms)
    state = objective.init()
    for i in range(6):
        m, state = terms(params, {"image": x}, jax.random.key(i), state)
        weight = 2.0 * min(1.0, i / 4)
        np.testing.assert_allclose(m["loss"], m["recon"] + weight * m["kl"], rtol=1e-5)
        assert int(state["step"]) == i + 1


def test_sparsity_term_is_scale_free_and_tracks_the_second_moment():
    term = latent_sparsity(momentum=0.0)
    vae = tiny_vae(normal_posterior())
    x = random_images()
    params = jax.jit(vae.init)(jax.random.key(0), x)
    objective = compose(vae, {"recon": (1.0, reconstruction()), "sparsity": (1.0, term)})
    terms = jax.jit(objective.terms)
    out, state = terms(params, {"image": x}, jax.random.key(1), objective.init())
    code = vae.encode(params, x)["loc"]
    np.testing.assert_allclose(state["sparsity"]["second_moment"], (code ** 2).mean(0), rtol=1e-5)
    # Scaling every code by c leaves the penalty unchanged (the RMS scales too).
    scaled = params["encoder"]["head"]["loc"]
    params2 = jax.tree.map(lambda a: a, params)
    params2["encoder"]["head"]["loc"] = jax.tree.map(lambda a: 7.0 * a, scaled)
    out2, _ = terms(params2, {"image": x}, jax.random.key(1), objective.init())
    np.testing.assert_allclose(out2["sparsity"], out["sparsity"], rtol=1e-4)
    # A stateful term's state is updated by the train step, not only returned.
    opt = make_optimizer(1e-3)
    ts = create_train_state(vae, objective, opt, jax.random.key(0), {"image": x})
    ts, _ = make_train_step(objective, opt, mesh=data_mesh(1))(ts, {"image": x})
    assert not np.allclose(ts.loss_state["sparsity"]["second_moment"], 1.0)
