"""Uniform noise for dynamic binarization: ``jax.random.uniform``'s values, cheaper on CPU.

Binarizing a batch afresh every step (``1[u < x]``) draws one uniform per
pixel inside the train loop. ``jax.random.uniform`` hashes a counter per value
with Threefry-2x32 (Salmon et al., 2011, "Parallel random numbers: as easy as
1, 2, 3"); on XLA:CPU, JAX lowers that hash as a loop over its five groups of
rounds, each group a pass over the whole array, which costs the MNIST VAE's
step about a tenth of its time (0.44 ms for a 100 x 784 batch). Written out
as plain integer arithmetic, the twenty rounds fuse into one elementwise
kernel. :func:`uniform_noise` is that kernel, and it computes exactly JAX's
algorithm: with a Threefry key and JAX's (default) partitionable counters it
returns ``jax.random.uniform(key, shape, dtype)`` bit for bit, so a run's
batches, and its results, do not change. Any other key or setting takes
``jax.random.uniform`` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jvae.base import Array

__all__ = ["uniform_noise"]

# Threefry-2x32's rotation constants and key-schedule parity (Salmon et al., 2011, table 4).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(v: Array, r: int) -> Array:
    return lax.shift_left(v, np.uint32(r)) | lax.shift_right_logical(v, np.uint32(32 - r))


def _threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The 20-round Threefry-2x32 hash of the counter pairs ``(x1, x2)`` under key ``(k1, k2)``."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        # Key injection after every four rounds, with the group's counter.
        x1 = x1 + ks[(group + 1) % 3]
        x2 = x2 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x1, x2


def _is_threefry(key: Array) -> bool:
    return (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
            and str(jax.random.key_impl(key)) == "threefry2x32"
            and bool(jax.config.jax_threefry_partitionable))


def uniform_noise(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """``jax.random.uniform(key, shape, dtype)`` in [0, 1), bit for bit, in one fused kernel.

    Value ``i`` (row-major) hashes the 64-bit counter ``i`` (JAX's partitionable
    Threefry counters: the high word, then the low word) and keeps the XOR of
    the hash's two words; the top 23 bits become the mantissa of a float in
    [1, 2), minus 1.

    Args:
      key: a typed PRNG key (``jax.random.key``).
      shape: the output's shape.
      dtype: float32; any other dtype, key implementation or counter
        setting is drawn by ``jax.random.uniform``.

    Returns:
      Uniform draws of ``shape`` and ``dtype``.
    """
    shape = tuple(shape)
    size = math.prod(shape)
    if jnp.dtype(dtype) != jnp.float32 or not _is_threefry(key) or size >= 2 ** 32:
        return jax.random.uniform(key, shape, dtype)
    data = jax.random.key_data(key)
    low = lax.iota(jnp.uint32, size).reshape(shape)
    bits1, bits2 = _threefry2x32(data[0], data[1], jnp.zeros_like(low), low)
    mantissa = lax.shift_right_logical(bits1 ^ bits2, np.uint32(32 - 23))
    one = np.array(1.0, np.float32).view(np.uint32)
    return lax.bitcast_convert_type(mantissa | one, jnp.float32) - jnp.float32(1.0)
