"""The binarization noise: ``jax.random.uniform``'s bits from one fused kernel."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jvae.devices.parallel import data_mesh
from jvae.training.noise import uniform_noise


def test_values_are_jax_uniform_bit_for_bit():
    for seed, shape in ((0, ()), (1, (3, 5, 2)), (2 ** 31 + 5, (100, 28, 28, 1))):
        key = jax.random.fold_in(jax.random.key(seed), 17)
        ours = jax.jit(uniform_noise, static_argnums=1)(key, shape)
        assert ours.dtype == jnp.float32 and ours.shape == shape
        np.testing.assert_array_equal(np.asarray(ours),
                                      np.asarray(jax.random.uniform(key, shape)))


def test_a_batch_sharded_over_eight_devices_draws_the_same_bits():
    mesh = data_mesh()
    assert mesh.size == 8
    sharding = NamedSharding(mesh, P("data"))
    key = jax.random.key(3)

    @jax.jit
    def draw(key):
        return jax.lax.with_sharding_constraint(uniform_noise(key, (64, 9)), sharding)

    np.testing.assert_array_equal(np.asarray(draw(key)),
                                  np.asarray(jax.random.uniform(key, (64, 9))))


def test_the_hash_is_threefry_2x32_on_its_published_vectors():
    # Salmon et al. (2011)'s known-answer vectors for Threefry-2x32, 20 rounds.
    from jvae.training.noise import _threefry2x32
    u32 = np.uint32
    cases = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
             ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
             ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    for key, count, expected in cases:
        out = _threefry2x32(u32(key[0]), u32(key[1]), jnp.array([count[0]], jnp.uint32),
                            jnp.array([count[1]], jnp.uint32))
        assert (int(out[0][0]), int(out[1][0])) == expected


def test_other_keys_and_dtypes_draw_from_jax_random():
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(np.asarray(uniform_noise(rbg, (5, 3))),
                                  np.asarray(jax.random.uniform(rbg, (5, 3))))
    key = jax.random.key(4)
    half = uniform_noise(key, (6,), jnp.bfloat16)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(half, np.float32),
                                  np.asarray(jax.random.uniform(key, (6,), jnp.bfloat16),
                                             np.float32))
