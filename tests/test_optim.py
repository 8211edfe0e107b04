"""The fused clipped Adam against the optax chain it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jvae.optim import clipped_adam, finite_global_norm


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
