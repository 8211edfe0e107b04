"""The fused clipped Adam against the optax chain it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jvae.training.optim import clipped_adam, finite_global_norm, skip_counts, skip_if_not_finite


def _grads(i):
    k1, k2 = jax.random.split(jax.random.key(i))
    g = {"w": 3.0 * jax.random.normal(k1, (5, 4)), "b": jax.random.normal(k2, (4,))}
    if i % 2:  # NaN entries and a norm far above the clip threshold
        g["w"] = g["w"].at[1, 2].set(jnp.nan) * 10.0
    return g


@pytest.mark.parametrize("lr", [1e-2, optax.linear_schedule(1e-2, 1e-3, 4)])
def test_matches_optax_chain(lr):
    params = {"w": jnp.ones((5, 4)), "b": jnp.zeros((4,))}
    ref = optax.chain(optax.zero_nans(), optax.clip_by_global_norm(1.0),
                      optax.adam(lr, b1=0.9, b2=0.99))
    ours = clipped_adam(lr, b1=0.9, b2=0.99, clip_norm=1.0)
    p_ref, p_ours = params, params
    s_ref, s_ours = ref.init(params), ours.init(params)
    for i in range(6):
        u_ref, s_ref = ref.update(_grads(i), s_ref, p_ref)
        u_ours, s_ours = jax.jit(ours.update)(_grads(i), s_ours, p_ours)
        for a, b in zip(jax.tree.leaves(u_ref), jax.tree.leaves(u_ours)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8)
        p_ref, p_ours = optax.apply_updates(p_ref, u_ref), optax.apply_updates(p_ours, u_ours)
    assert int(s_ours.count) == 6


def test_finite_global_norm_ignores_nans():
    g = {"a": jnp.array([3.0, jnp.nan]), "b": jnp.array([[4.0]])}
    np.testing.assert_allclose(finite_global_norm(g), 5.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clipped_adam(clip_norm=0.0)


@pytest.mark.parametrize("make", [
    lambda: clipped_adam(1e-2, b1=0.9, b2=0.99),
    lambda: skip_if_not_finite(optax.chain(optax.clip_by_global_norm(1.0),
                                           optax.adam(1e-2, b1=0.9, b2=0.99))),
])
def test_non_finite_steps_are_skipped_whole_and_counted(make):
    """A bad step changes nothing but the counters: the trajectory equals one without it."""
    params = {"w": jnp.ones((5, 4)), "b": jnp.zeros((4,))}
    opt = make()
    update = jax.jit(opt.update)
    good = [jax.tree.map(lambda g: jnp.nan_to_num(g), _grads(i)) for i in (0, 2, 4)]
    inf_grads = jax.tree.map(lambda g: g.at[0].set(jnp.inf), good[1])
    # With bad steps (a NaN loss, an infinite gradient entry) between good ones ...
    s, p = opt.init(params), params
    seq = [(good[0], 1.0), (good[1], jnp.nan), (inf_grads, 2.0), (good[1], 1.0),
           (good[2], jnp.inf)]
    counters = []
    for g, loss in seq:
        u, s = update(g, s, p, value=jnp.float32(loss))
        p = optax.apply_updates(p, u)
        counters.append(tuple(int(c) for c in skip_counts(s)))
    # ... and without them.
    s_ref, p_ref = opt.init(params), params
    for g in good[:2]:
        u, s_ref = update(g, s_ref, p_ref, value=jnp.float32(1.0))
        p_ref = optax.apply_updates(p_ref, u)
    assert counters == [(0, 0), (1, 1), (2, 2), (2, 0), (3, 1)]
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref)):
        np.testing.assert_array_equal(a, b)
    assert skip_counts(optax.adam(1e-3).init(params)) is None


def test_train_step_skips_a_nan_batch():
    from jvae.app.config import make_config
    from jvae.train_state import make_update_fn
    from jvae.training.experiment import DataSpec, build, init_state
    experiment = build(make_config({"hidden": (8,), "latent_dim": 2}), DataSpec((4, 4, 1)))
    x = np.random.default_rng(0).random((4, 4, 4, 1), dtype=np.float32)
    state = init_state(experiment, jax.random.key(0), {"image": x})
    step = jax.jit(make_update_fn(experiment.objective, experiment.optimizer))
    corrupt = x.copy()
    corrupt[0] = np.nan
    bad, metrics = step(state, {"image": corrupt})
    assert float(metrics["skipped_steps"]) == 1.0 and float(metrics["loss"]) == 0.0
    for a, b in zip(jax.tree.leaves(bad.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    assert int(bad.step) == 1 and int(bad.opt_state.count) == 0
    good, metrics = step(bad, {"image": x})
    assert float(metrics["skipped_steps"]) == 0.0 and np.isfinite(float(metrics["loss"]))
    assert int(good.opt_state.count) == 1 and int(good.opt_state.consecutive_skips) == 0
