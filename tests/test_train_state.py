"""Optimizer chain and the data-parallel train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jvae.devices.parallel import data_mesh, replicate, shard_batch
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import dirichlet_posterior, normal_posterior
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import elbo
from jvae.train_state import create_train_state, make_eval_step, make_optimizer, make_train_step


def _params():
    return {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5, 0.5]])}


def test_nan_in_one_gradient_leaf_leaves_update_finite():
    opt = make_optimizer(1e-2)
    params = _params()
    state = opt.init(params)
    grads = {"a": jnp.array([0.1, jnp.nan, 0.3]), "b": jnp.array([[1.0, -1.0]])}
    updates, state = opt.update(grads, state, params)
    for leaf in jax.tree.leaves(updates) + jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert jnp.all(jnp.isfinite(leaf))
    # The NaN entry gets no update, the others move against their gradients.
    assert updates["a"][1] == 0.0
    assert updates["a"][0] < 0 and updates["b"][0, 1] > 0
    # Clipping before zeroing makes the global norm NaN, so every leaf becomes
    # NaN and is then zeroed: the whole step would be lost. The order matters.
    wrong = optax.chain(optax.clip_by_global_norm(1.0), optax.zero_nans(), optax.adam(1e-2))
    lost, _ = wrong.update(grads, wrong.init(params), params)
    assert all(jnp.all(leaf == 0) for leaf in jax.tree.leaves(lost))


def test_make_optimizer_is_nan_zeroing_then_clipping_then_adam_0_9_0_99():
    # Gradients far above the clip norm and with a NaN entry, over several
    # steps (Adam's first update ignores the gradient's scale, so one step
    # could not tell clipping, or b2, apart).
    reference = optax.chain(optax.zero_nans(), optax.clip_by_global_norm(1.0),
                            optax.adam(1e-2, b1=0.9, b2=0.99))
    ours = make_optimizer(1e-2)
    params = _params()
    s_ref, s_ours = reference.init(params), ours.init(params)
    for i in range(4):
        scale = 50.0 if i % 2 else 0.01  # alternating: the clipped and unclipped regimes
        grads = {"a": scale * jnp.array([3.0, jnp.nan, -4.0 + i]),
                 "b": scale * jnp.array([[1.0, -2.0]])}
        u_ref, s_ref = reference.update(grads, s_ref, params)
        u_ours, s_ours = ours.update(grads, s_ours, params)
        for a, b in zip(jax.tree.leaves(u_ref), jax.tree.leaves(u_ours)):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-8)
        params = optax.apply_updates(params, u_ours)


def _setup(posterior, kind="mlp"):
    lik = bernoulli()
    enc, dec = make_nets(kind, posterior=posterior, likelihood=lik, latent_shape=(4,),
                         data_shape=(8, 8, 1), hidden=(32,), channels=(8, 8))
    vae = make_vae(enc, dec, posterior, lik, (4,))
    objective = elbo(vae, num_samples=2)
    opt = make_optimizer(1e-2)
    x = jax.random.uniform(jax.random.key(42), (4, 32, 8, 8, 1))
    batches = [{"image": xi, "mask": jnp.ones(32)} for xi in x]
    state = create_train_state(vae, objective, opt, jax.random.key(0), batches[0])
    return objective, opt, state, batches


def _run(objective, opt, state, batches, mesh):
    step = make_train_step(objective, opt, mesh=mesh)
    state = replicate(state, mesh)
    for b in batches:
        state, metrics = step(state, shard_batch(b, mesh))
    return jax.device_get(state.params), metrics


def test_one_device_equals_eight_devices():
    assert jax.device_count() == 8, "conftest should simulate 8 CPU devices"
    for posterior, kind in ((normal_posterior(), "mlp"), (dirichlet_posterior(), "mlp")):
        objective, opt, state, batches = _setup(posterior, kind)
        p1, m1 = _run(objective, opt, state, batches, data_mesh(1))
        p8, m8 = _run(objective, opt, state, batches, data_mesh(8))
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
        # Training moved the parameters (the comparison is not vacuous).
        moved = max(float(jnp.abs(a - b).max()) for a, b in
                    zip(jax.tree.leaves(p1), jax.tree.leaves(jax.device_get(state.params))))
        assert moved > 1e-3


def test_train_step_reduces_loss_and_counts_steps():
    objective, opt, state, batches = _setup(normal_posterior())
    mesh = data_mesh()
    step = make_train_step(objective, opt, mesh=mesh)
    state = replicate(state, mesh)
    batch = shard_batch(batches[0], mesh)
    first = None
    for _ in range(30):
        state, m = step(state, batch)
        first = float(m["loss"]) if first is None else first
    assert int(state.step) == 30
    assert float(m["loss"]) < first - 5.0


def test_mask_excludes_padded_rows():
    objective, opt, state, batches = _setup(normal_posterior())
    mesh = data_mesh()
    params = replicate(state.params, mesh)
    evaluate = make_eval_step(objective, mesh=mesh)
    b = batches[0]
    half = {"image": b["image"].at[16:].set(1.0), "mask": b["mask"].at[16:].set(0.0)}
    full = {"image": b["image"][:16].repeat(2, 0), "mask": jnp.ones(32)}
    s_half = evaluate(params, shard_batch(half, mesh), jax.random.key(0))
    assert float(s_half["count"]) == 16.0
    # Same 16 real rows: the per-example mean is the same as with no padding.
    s_full = evaluate(params, shard_batch(full, mesh), jax.random.key(0))
    np.testing.assert_allclose(s_half["kl"] / 16, s_full["kl"] / 32, rtol=1e-5)
