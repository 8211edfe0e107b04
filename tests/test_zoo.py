"""Model zoo: loss terms, flow posteriors, VQ latents, SSIM, discretized logistics, CVAE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.config import ConfigError, make_config
from jvae.flows import flow_posterior
from jvae.generate import make_reconstructor, make_sampler
from jvae.likelihoods import bernoulli
from jvae.logistic import discretized_logistic_mixture
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import elbo
from jvae.parallel import data_mesh
from jvae.posteriors import normal_posterior, sample_and_log_prob, sample_prior
from jvae.ssim import ssim
from jvae.terms import (compose, decoder_l2, elbo_terms, latent_sparsity, linear_warmup,
                        neg_elbo_metric, reconstruction)
from jvae.train_state import create_train_state, make_optimizer, make_train_step
from jvae.vq import quantize, vq_posterior
from jvae.zoo import add_condition, cvae, vq_vae


def _vae(posterior, latent_shape=(4,), data_shape=(8, 8, 1), likelihood=None, hidden=(32,)):
    lik = likelihood or bernoulli()
    enc, dec = make_nets("mlp", posterior=posterior, likelihood=lik, latent_shape=latent_shape,
                         data_shape=data_shape, hidden=hidden)
    return make_vae(enc, dec, posterior, lik, latent_shape)


def _images(n=16, shape=(8, 8, 1), seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, *shape))


def test_elbo_is_the_composition_of_recon_and_kl():
    vae = _vae(normal_posterior())
    x = _images()
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
    vae = _vae(normal_posterior())
    x = _images(8)
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
    vae = _vae(normal_posterior())
    x = _images()
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


def _random_flow(coupling, latent=2, context=3, seed=0):
    flow = flow_posterior(num_layers=3, coupling=coupling, hidden=(16,), num_bins=4,
                          spline_range=3.0, context_dim=context)
    shared = jax.jit(flow.init_shared, static_argnums=1)(jax.random.key(seed), (latent,))
    # The output layers start at zero (identity flow); perturb them so the
    # test checks a genuinely non-linear map.
    rng = np.random.default_rng(seed)
    shared = jax.tree.map(lambda a: a + 0.2 * rng.standard_normal(a.shape, np.float32), shared)
    raw = {"loc": jnp.array([[0.3, -0.2], [0.0, 0.5]])[:, :latent],
           "scale": jnp.array([[0.2, -0.4], [0.1, 0.3]])[:, :latent],
           "context": jax.random.normal(jax.random.key(seed + 2), (2, context))}
    return flow, {**flow.constrain(raw), "shared": shared}


@pytest.mark.parametrize("coupling", ["spline", "affine"])
def test_flow_log_density_is_a_correct_change_of_variables(coupling):
    flow, params = _random_flow(coupling)
    key = jax.random.key(3)
    base = normal_posterior()
    one = {k: (v if k == "shared" else v[:1]) for k, v in params.items()}  # example 0

    def f(point):  # example 0's flow at one point
        return flow.mean({**one, "loc": point[None]})[0]

    @jax.jit
    def check(p):
        z, log_q = sample_and_log_prob(flow, key, p, 5)
        z0 = base.sample(key, p, 5)
        expected = base.log_prob(p, z0)[:, 0] - jnp.linalg.slogdet(
            jax.vmap(jax.jacfwd(f))(z0[:, 0]))[1]
        return z, log_q, flow.log_prob(p, z), jax.vmap(f)(z0[:, 0]), expected
    z, log_q, log_q_inverse, pushed, expected = check(params)
    # log q from inverting the flow equals log q from pushing samples forward...
    np.testing.assert_allclose(log_q_inverse, log_q, rtol=1e-4, atol=1e-4)
    # ...and both equal log N(z0) - log|det df/dz0| with the Jacobian from autodiff.
    np.testing.assert_allclose(pushed, z[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_q[:, 0], expected, rtol=1e-4, atol=1e-4)

    # The density integrates to the probability: over a box, the integral of
    # exp(log q) equals the share of q's samples that land in it.
    lo, hi, n = -6.0, 6.0, 481
    grid = jnp.linspace(lo, hi, n)
    zz = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)

    @jax.jit
    def mass(p):
        density = jnp.exp(flow.log_prob(p, jnp.broadcast_to(zz, (zz.shape[0], 2, 2))))
        samples = flow.sample(jax.random.key(9), p, 200_000)
        inside = jnp.all((samples > lo) & (samples < hi), axis=-1).mean(0)
        return density.sum(0) * (grid[1] - grid[0]) ** 2, inside
    integral, inside = mass(params)
    assert np.all(inside > 0.7)  # the box holds most of the mass
    np.testing.assert_allclose(integral, inside, atol=5e-3)


def test_flow_kl_is_the_monte_carlo_estimate():
    flow = flow_posterior(num_layers=2, hidden=(8,), context_dim=2)
    vae = _vae(flow)
    x = _images(4)
    params = jax.jit(vae.init)(jax.random.key(0), x)
    with pytest.raises(ValueError, match="no closed-form KL"):
        flow.kl(vae.encode(params, x))
    out, _ = jax.jit(elbo(vae, num_samples=3).terms)(params, {"image": x}, jax.random.key(1), ())
    post = jax.jit(vae.encode)(params, x)
    z, log_q = jax.jit(lambda p: sample_and_log_prob(flow, jax.random.key(1), p, 3))(post)
    mc = (log_q - flow.prior_log_prob(z, (4,))).mean(0)
    np.testing.assert_allclose(out["kl"], mc, rtol=1e-5)
    # At initialization the flow is the identity: log q equals the base Normal's.
    np.testing.assert_allclose(log_q, normal_posterior().log_prob(post, z), rtol=1e-5)
    # Prior samples and reconstructions go through the flow's shared parameters.
    samples = make_sampler(vae, 6)(params, jax.random.key(1))
    recon = make_reconstructor(vae)(params, x)
    assert samples.shape == (6, 8, 8, 1) and recon.shape == x.shape
    assert np.all(np.isfinite(samples)) and np.all(np.isfinite(recon))


def test_vq_straight_through_gradient_and_codebook_update():
    codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    z_e = jnp.array([[[0.1, 0.2], [0.9, 1.3]], [[-0.8, 1.7], [0.2, -0.1]]])  # (B=2, n=2, d=2)
    z_q, idx = quantize(z_e, codebook)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 0]])
    np.testing.assert_allclose(z_q, codebook[idx])
    weights = jnp.arange(8.0).reshape(2, 2, 2)
    g = jax.grad(lambda z: jnp.sum(weights * quantize(z, codebook)[0] ** 2))(z_e)
    # Straight through: the gradient w.r.t. z_e has z_e's shape and equals the
    # gradient w.r.t. z_q (2 * w * z_q), as if quantization were the identity.
    assert g.shape == z_e.shape
    np.testing.assert_allclose(g, 2 * weights * z_q, rtol=1e-6)

    # One optimizer step: chosen codes move towards their inputs, unused ones stay.
    post = vq_posterior(num_codes=16)
    vae = _vae(post, latent_shape=(2, 2))
    x = _images(32)
    objective = vq_vae(vae, num_codes=16)
    opt = make_optimizer(1e-2)
    state = create_train_state(vae, objective, opt, jax.random.key(0), {"image": x})
    before = state.params["posterior"]["codebook"]
    p_before = vae.encode(state.params, x)
    z_e0 = np.asarray(p_before["z_e"]).reshape(-1, 2)
    used = np.asarray(jax.jit(lambda z, c: quantize(z, c)[1])(p_before["z_e"], before)).ravel()
    step = make_train_step(objective, opt, mesh=data_mesh(1), donate=False)
    new_state, metrics = step(state, {"image": x})
    after = np.asarray(new_state.params["posterior"]["codebook"])
    for k in range(16):
        if k in used:
            target = z_e0[used == k].mean(0)
            assert np.linalg.norm(after[k] - target) < np.linalg.norm(before[k] - target)
        else:
            np.testing.assert_array_equal(after[k], before[k])
    assert 1.0 <= float(metrics["vq_perplexity"]) <= 16.0
    assert new_state.loss_state["vq_codebook"]["usage"].shape == (16,)
    np.testing.assert_allclose(metrics["kl"], 2 * np.log(16), rtol=1e-6)
    # A prior sample is a uniform pick of codebook rows, decoded.
    z = sample_prior(post, jax.random.key(1), (2, 2), 6, new_state.params)
    assert all(any(np.allclose(v, r) for r in after) for v in np.asarray(z).reshape(-1, 2))
    assert make_sampler(vae, 6)(new_state.params, jax.random.key(1)).shape == (6, 8, 8, 1)


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    x = _images(3, (28, 28, 3))
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-5)
    noisy = jnp.clip(x + 0.2 * jax.random.normal(jax.random.key(1), x.shape), 0, 1)
    s = ssim(x, noisy)
    assert s.shape == (3,) and np.all(s < 0.9)
    np.testing.assert_allclose(s, ssim(noisy, x), rtol=1e-5)
    more = jnp.clip(x + 0.5 * jax.random.normal(jax.random.key(1), x.shape), 0, 1)
    assert np.all(ssim(x, more) < s)


@pytest.mark.parametrize("components", [1, 4])
def test_discretized_logistic_probabilities_over_256_bins_sum_to_one(components):
    lik = discretized_logistic_mixture(num_components=components)
    shapes = lik.param_shapes((1,))  # one sub-pixel per example
    keys = jax.random.split(jax.random.key(components), 3)
    # Six parameter sets: ordinary, very sharp and very wide components,
    # centred inside, on and beyond the edges of [-1, 1].
    raw = {name: 3.0 * jax.random.normal(k, (6, *shapes[name])) for k, name in zip(keys, shapes)}
    raw["log_scale"] = raw["log_scale"].at[1].set(-9.0).at[2].set(4.0).at[5].set(-9.0)
    raw["loc"] = raw["loc"].at[3].set(-1.0).at[4].set(1.3).at[5].set(0.5 / 255)
    params = lik.constrain(raw)
    levels = jnp.arange(256, dtype=jnp.float32) / 255.0
    logp = jax.vmap(lambda v: lik.log_prob(params, jnp.full((6, 1), v)))(levels)  # (256, 6)
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(jnp.exp(logp).sum(0), 1.0, rtol=1e-5)
    mean = lik.mean(params)
    assert mean.shape == (6, 1) and np.all((mean >= 0) & (mean <= 1))
    # Log-probabilities of images sum over their dimensions.
    img_lik = lik.param_shapes((2, 2, 3))
    assert img_lik["loc"] == (2, 2, 3 * components)


def test_cvae_samples_follow_the_label(mnist_dir):
    from jvae.data import load_mnist_idx, to_float
    raw = load_mnist_idx(mnist_dir, "train")
    data = add_condition({"image": to_float(raw["image"][:2048]), "label": raw["label"][:2048]},
                         10)
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=(4,),
                         data_shape=(28, 28, 1), hidden=(128,))
    vae = make_vae(enc, dec, post, lik, (4,))
    objective = cvae(vae, cond_key="cond")
    opt = make_optimizer(3e-3)
    batch0 = {k: v[:128] for k, v in data.items()}
    state = create_train_state(vae, objective, opt, jax.random.key(0), batch0, cond_key="cond")
    step = make_train_step(objective, opt, mesh=data_mesh(1))
    rng = np.random.default_rng(0)
    for _ in range(300):
        i = rng.choice(2048, 128, replace=False)
        state, _ = step(state, {k: v[i] for k, v in data.items()})
    # The same latent codes decoded under each label.
    z = jax.random.normal(jax.random.key(5), (16, 4))
    means = np.stack([data["image"][data["label"] == c].mean(0) for c in range(10)])
    hits = 0
    for c in range(10):
        y = jnp.asarray(np.eye(10, dtype=np.float32)[np.full(16, c)])
        img = np.asarray(vae.likelihood.mean(vae.decode(state.params, z, y))).mean(0)
        hits += int(np.argmin(((means - img) ** 2).sum(axis=(1, 2, 3))) == c)
    # Chance is 1/10; an unconditional decoder would match one class at most.
    assert hits >= 8, f"only {hits}/10 labels produced samples nearest their class mean"
    # The conditional bound -log p(x|y) is better under the true labels than shuffled ones.
    batch = {k: v[:256] for k, v in data.items()}
    wrong = {**batch, "cond": np.roll(batch["cond"], 1, axis=-1)}
    terms = jax.jit(objective.terms)
    right_bound = terms(state.params, batch, jax.random.key(1), ())[0]["neg_elbo"].mean()
    wrong_bound = terms(state.params, wrong, jax.random.key(1), ())[0]["neg_elbo"].mean()
    assert right_bound < wrong_bound - 5.0


def test_config_rejects_meaningless_combinations():
    with pytest.raises(ConfigError, match="deterministic code"):
        make_config({"model": "ae", "posterior": "dirichlet"})
    with pytest.raises(ConfigError, match="needs --posterior normal"):
        make_config({"flow_layers": 2, "posterior": "dirichlet"})
    with pytest.raises(ConfigError, match="multiple of vq_code_dim"):
        make_config({"model": "vq", "latent_dim": 10, "vq_code_dim": 4})
    with pytest.raises(ConfigError, match="no weighted KL"):
        make_config({"model": "iwae", "beta": 2.0})
    cfg = make_config({})
    assert (cfg.model, cfg.alpha, cfg.flow_layers, cfg.ssim_weight) == ("vae", 1.0, 0, 0.0)
