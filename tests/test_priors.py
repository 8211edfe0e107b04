"""Learned priors: the VampPrior and the two-stochastic-layer model against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import normal_posterior
from jvae.distributions.priors import (
    draw_prior,
    hierarchical_prior,
    log_prior,
    prior_key,
    pseudo_inputs,
    vamp_prior,
)
from jvae.evaluation import iwae_log_likelihood
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import beta_vae, iwae
from jvae.terms.composition import forward
from jvae.training.experiment import DataSpec, build, init_state

LATENT, DATA = (3,), (4, 4, 1)


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _softplus(a):
    return np.logaddexp(0.0, a)


def _mlp(p, h, act=np.tanh):
    """A Flax MLP (``Dense_i`` layers then ``head``) in NumPy; returns the hidden features."""
    i = 0
    while f"Dense_{i}" in p:
        h = act(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"])
        i += 1
    return h


def _dense(p, h):
    return h @ p["kernel"] + p["bias"]


def _encode(params, x):
    """The built-in MLP encoder's Normal q(z|x) (relu, softplus scale), in float64."""
    p = _np(params["encoder"])
    h = _mlp(p, x.reshape(len(x), -1), lambda a: np.maximum(a, 0.0))
    return _dense(p["head"]["loc"], h), _softplus(_dense(p["head"]["scale"], h)) + 1e-6


def _log_px(params, z, x):
    """Bernoulli log p(x|z) of the built-in MLP decoder, ``z (..., d)`` -> ``(...)``."""
    p = _np(params["decoder"])
    logits = _dense(p["head"]["logits"], _mlp(p, z, lambda a: np.maximum(a, 0.0)))
    x = x.reshape(len(x), -1)
    return np.sum(x * logits - _softplus(logits), -1)


def _log_normal(z, loc, scale):
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1)


def _log_mixture(z, locs, scales):
    """``log (1/K) sum_k N(z; loc_k, scale_k)`` for ``z (N, d)``, components ``(K, d)``."""
    table = _log_normal(z[:, None], locs[None], scales[None])
    m = table.max(-1, keepdims=True)
    return (m + np.log(np.mean(np.exp(table - m), -1, keepdims=True)))[:, 0]


def _with_prior(prior):
    """A tiny MLP model (Bernoulli likelihood) with ``prior``, its parameters and binary data."""
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=LATENT,
                         data_shape=DATA, hidden=(8,))
    vae = make_vae(enc, dec, post, lik, LATENT, prior)
    x = (jax.random.uniform(jax.random.key(0), (6, *DATA)) > 0.5).astype(jnp.float32)
    return vae, vae.init(jax.random.key(1), x), x


def _components(params, bounds=(0.0, 1.0)):
    u = np.clip(np.asarray(params["prior"]["pseudo_inputs"], np.float64), *bounds)
    return _encode(params, u)


def test_vamp_log_prob_is_the_mixture_of_posteriors_at_the_clipped_pseudo_inputs():
    vae, params, _ = _with_prior(vamp_prior(5))
    # Spread the pseudo-inputs past their [0, 1] range: the clipped ones are used.
    u = jax.random.uniform(jax.random.key(3), (5, *DATA), minval=-0.5, maxval=1.5)
    params = {**params, "prior": {"pseudo_inputs": u}}
    z = 1.5 * jax.random.normal(jax.random.key(4), (2, 7, *LATENT))
    ours = np.asarray(jax.jit(lambda p, z: log_prior(vae, p, z))(params, z))
    locs, scales = _components(params)
    ref = _log_mixture(np.asarray(z, np.float64).reshape(-1, 3), locs, scales).reshape(2, 7)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(pseudo_inputs(params["prior"])) <= 1.0)


def test_vamp_kl_is_the_monte_carlo_estimate_on_the_forward_draws():
    vae, params, x = _with_prior(vamp_prior(4))
    key = jax.random.key(7)
    terms, _ = jax.jit(beta_vae(vae, num_samples=3).terms)(params, {"image": x}, key, ())
    loc, scale = _encode(params, np.asarray(x, np.float64))
    # forward's draws: the Normal family's reparameterization with the same key.
    z = loc + scale * np.asarray(jax.random.normal(key, (3, *loc.shape)), np.float64)
    locs, scales = _components(params)
    log_q = _log_normal(z, loc, scale)
    log_p = _log_mixture(z.reshape(-1, 3), locs, scales).reshape(3, -1)
    np.testing.assert_allclose(terms["kl"], np.mean(log_q - log_p, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["recon"], -np.mean(_log_px(params, z, np.asarray(x)), 0),
                               rtol=1e-4, atol=1e-4)
    # Not the closed form to N(0, I), which the family alone would use.
    analytic = np.asarray(vae.posterior.kl(vae.encode(params, x)))
    assert np.max(np.abs(analytic - np.asarray(terms["kl"]))) > 0.1


def test_importance_sampled_nll_uses_the_vamp_prior():
    vae, params, x = _with_prior(vamp_prior(3))
    key, k = jax.random.key(11), 7
    out = jax.jit(lambda p, x, key: iwae_log_likelihood(vae, p, x, key, k, chunk_size=3))(
        params, x, key)
    loc, scale = _encode(params, np.asarray(x, np.float64))
    eps = np.stack([np.asarray(jax.random.normal(ki, (1, *loc.shape)))[0]
                    for ki in jax.random.split(key, k)]).astype(np.float64)
    z = loc + scale * eps
    locs, scales = _components(params)
    log_w = (_log_px(params, z, np.asarray(x)) - _log_normal(z, loc, scale)
             + _log_mixture(z.reshape(-1, 3), locs, scales).reshape(k, -1))
    m = log_w.max(0)
    ref = m + np.log(np.mean(np.exp(log_w - m), 0))
    np.testing.assert_allclose(out["log_likelihood"], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["elbo"], log_w.mean(0), rtol=1e-4, atol=1e-4)


def test_vamp_draws_follow_the_mixture():
    vae, params, _ = _with_prior(vamp_prior(3))
    z = np.asarray(jax.jit(lambda p, key: draw_prior(vae, key, 20_000, p))(
        params, jax.random.key(2)), np.float64)
    locs, scales = _components(params)
    mean = locs.mean(0)
    var = (scales ** 2 + locs ** 2).mean(0) - mean ** 2
    np.testing.assert_allclose(z.mean(0), mean, atol=4 * np.sqrt(var / len(z)).max() + 1e-3)
    np.testing.assert_allclose(z.var(0), var, rtol=0.05)


def _hierarchical_reference(params, x, key, num_samples):
    """``log p(x, h1, h2) - log q(h1, h2 | x)`` of the two-layer model, per draw, in NumPy."""
    loc, scale = _encode(params, np.asarray(x, np.float64))
    eps1 = np.asarray(jax.random.normal(key, (num_samples, *loc.shape)), np.float64)
    h1 = loc + scale * eps1
    q, p = _np(params["prior"]["inference"]), _np(params["prior"]["generative"])
    hq = _mlp(q, h1.reshape(-1, 3))
    loc2, scale2 = _dense(q["loc"], hq), _softplus(_dense(q["scale"], hq)) + 1e-6
    eps2 = np.asarray(jax.random.normal(prior_key(key), loc2.shape), np.float64)
    h2 = loc2 + scale2 * eps2
    hp = _mlp(p, h2)
    loc1, scale1 = _dense(p["loc"], hp), _softplus(_dense(p["scale"], hp)) + 1e-6
    log_joint = (_log_px(params, h1, np.asarray(x))
                 + _log_normal(h1.reshape(-1, 3), loc1, scale1).reshape(num_samples, -1)
                 + _log_normal(h2, 0.0, 1.0).reshape(num_samples, -1))
    log_q = (_log_normal(h1, loc, scale)
             + _log_normal(h2, loc2, scale2).reshape(num_samples, -1))
    return log_joint - log_q


def test_two_layer_log_weight_matches_numpy():
    vae, params, x = _with_prior(hierarchical_prior(2, (5, 4)))
    key = jax.random.key(5)
    def log_weights(p, b, k):
        fwd = forward(vae, p, b, k, num_samples=3)
        return fwd.log_px + fwd.log_pz - fwd.log_q
    ours = np.asarray(jax.jit(log_weights)(params, {"image": x}, key))
    np.testing.assert_allclose(ours, _hierarchical_reference(params, x, key, 3),
                               rtol=1e-4, atol=1e-4)
    # The IWAE loss is -log mean_k of those weights.
    ref = _hierarchical_reference(params, x, key, 3)
    terms, _ = jax.jit(iwae(vae, num_samples=3).terms)(params, {"image": x}, key, ())
    m = ref.max(0)
    np.testing.assert_allclose(terms["neg_iwae"], -(m + np.log(np.mean(np.exp(ref - m), 0))),
                               rtol=1e-4, atol=1e-4)
    h1 = draw_prior(vae, jax.random.key(0), 9, params)
    assert h1.shape == (9, *LATENT) and np.all(np.isfinite(h1))


def test_two_layer_nll_is_a_joint_importance_sample():
    """The evaluator's bound draws (h1, h2) jointly, sample i from split(key, k)[i]."""
    vae, params, x = _with_prior(hierarchical_prior(2, (5,)))
    key, k = jax.random.key(3), 5
    out = jax.jit(lambda p, x, key: iwae_log_likelihood(vae, p, x, key, k, chunk_size=2))(
        params, x, key)
    log_w = np.concatenate([_hierarchical_reference(params, x, ki, 1)
                            for ki in jax.random.split(key, k)])
    m = log_w.max(0)
    np.testing.assert_allclose(out["log_likelihood"], m + np.log(np.mean(np.exp(log_w - m), 0)),
                               rtol=1e-4, atol=1e-4)


SMALL = {"hidden": (16,), "latent_dim": 2, "lr": 3e-3}


@pytest.mark.parametrize("settings", [
    {"model": "vamp", "vamp_components": 8},
    {"model": "vae", "stochastic_layers": 2, "top_latent_dim": 2, "top_hidden": (8,)},
])
def test_a_few_train_steps_lower_the_loss(settings):
    from jvae.datasets.digits import load_digits
    from jvae.devices.parallel import data_mesh
    from jvae.train_state import make_eval_step, make_train_step
    data = load_digits("train")
    x = jnp.asarray(data["image"][:64])
    exp = build(make_config({**SMALL, **settings}), DataSpec(x.shape[1:]))
    state = init_state(exp, jax.random.key(0), {"image": x})
    step = make_train_step(exp.objective, exp.optimizer, mesh=data_mesh(1))
    evaluate = make_eval_step(exp.objective, mesh=data_mesh(1))
    batch = {"image": x, "mask": jnp.ones(len(x))}
    before = evaluate(state.params, batch, jax.random.key(9), state.loss_state)
    for _ in range(25):
        state, _ = step(state, {"image": x})
    after = evaluate(state.params, batch, jax.random.key(9), state.loss_state)
    assert float(after["loss"]) < float(before["loss"]) - 2.0, (before["loss"], after["loss"])
    assert "prior" in state.params


def test_data_init_takes_training_examples_chosen_by_the_seed():
    images = np.random.default_rng(0).uniform(size=(40, *DATA)).astype(np.float32)
    exp = build(make_config({**SMALL, "model": "vamp", "vamp_components": 6,
                             "vamp_init": "data"}), DataSpec(DATA))
    example = {"image": jnp.asarray(images[:8])}
    a = init_state(exp, jax.random.key(0), example, images=images)
    b = init_state(exp, jax.random.key(0), example, images=images)
    c = init_state(exp, jax.random.key(1), example, images=images)
    u = np.asarray(a.params["prior"]["pseudo_inputs"])
    rows = [int(np.flatnonzero((images == r).all(axis=(1, 2, 3)))[0]) for r in u]
    assert len(set(rows)) == 6
    np.testing.assert_array_equal(u, np.asarray(b.params["prior"]["pseudo_inputs"]))
    assert not np.array_equal(u, np.asarray(c.params["prior"]["pseudo_inputs"]))
    # The networks start where a random-init run's do.
    plain = init_state(exp, jax.random.key(0), example)
    for p, q in zip(jax.tree.leaves(plain.params["encoder"]), jax.tree.leaves(a.params["encoder"])):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ConfigError, match="lower --vamp-components"):
        init_state(exp, jax.random.key(0), example, images=images[:5])


def test_settings_refuse_priors_where_they_cannot_work():
    with pytest.raises(ConfigError, match="applies to --model vae or iwae"):
        make_config({"model": "cvae", "stochastic_layers": 2})
    with pytest.raises(ConfigError, match="use --posterior normal"):
        make_config({"stochastic_layers": 2, "posterior": "dirichlet"})
    with pytest.raises(ConfigError, match="use --model vamp"):
        make_config({"vamp_components": 10})
    with pytest.raises(ConfigError, match="add --stochastic-layers 2"):
        make_config({"top_latent_dim": 10})
    with pytest.raises(ValueError, match="deterministic code"):
        vae, params, _ = _with_prior(vamp_prior(2))
        draw_prior(vae._replace(posterior=vae.posterior._replace(name="point")),
                   jax.random.key(0), 2, params)
