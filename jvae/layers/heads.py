"""Output heads and shared pieces of jvae's networks.

:class:`ParamHead` ends every built-in encoder and decoder: it emits exactly
the parameters a :class:`~jvae.base.Posterior` or :class:`~jvae.base.Likelihood`
asks for and applies its ``constrain``, so a network is agnostic of the
distribution family it feeds.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jvae.base import Array, Likelihood, Posterior
from jvae.layers.convolution import Conv

__all__ = ["ParamHead", "ACTIVATIONS", "activation_by_name", "with_cond"]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "tanh": nn.tanh,
    "elu": nn.elu, "leaky_relu": nn.leaky_relu, "softplus": nn.softplus,
}


def activation_by_name(name: str) -> Callable[[Array], Array]:
    """Looks up an activation by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def with_cond(h: Array, cond: Array | None) -> Array:
    """Concatenates a flattened conditioning input to flat features."""
    if cond is None:
        return h
    return jnp.concatenate([h, cond.reshape(cond.shape[0], -1).astype(h.dtype)], axis=-1)


class ParamHead(nn.Module):
    """Emits named distribution parameters from features, then constrains them.

    Flat features ``(batch, f)`` go through one Dense layer per parameter;
    spatial features ``(batch, h, w, c)`` whose ``h, w`` match the parameter's
    leading dims go through a 3x3 convolution (so decoders stay convolutional).

    Attributes:
      shapes: ``((name, per_example_shape), ...)``.
      constrain: maps the raw dict to distribution parameters.
    """

    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    constrain: Callable[[dict[str, Array]], dict[str, Array]]

    @nn.compact
    def __call__(self, h: Array) -> dict[str, Array]:
        raw = {}
        for name, shape in self.shapes:
            if h.ndim == 4 and len(shape) == 3 and h.shape[1:3] == tuple(shape[:2]):
                raw[name] = Conv(shape[-1], (3, 3), padding="SAME", name=name)(h)
            elif h.ndim == 3 and len(shape) == 2 and h.shape[1] == shape[0]:  # 1-D signals
                raw[name] = Conv(shape[-1], (9,), padding="SAME", name=name)(h)
            else:
                flat = h.reshape(h.shape[0], -1)
                raw[name] = nn.Dense(math.prod(shape), name=name)(flat).reshape(
                    (h.shape[0], *shape))
        return self.constrain(raw)

    @classmethod
    def for_posterior(cls, posterior: Posterior, latent_shape: Sequence[int], **kw) -> "ParamHead":
        """A head emitting ``posterior``'s parameters for ``latent_shape``."""
        return cls(tuple(posterior.param_shapes(tuple(latent_shape)).items()),
                   posterior.constrain, **kw)

    @classmethod
    def for_likelihood(cls, likelihood: Likelihood, data_shape: Sequence[int], **kw) -> "ParamHead":
        """A head emitting ``likelihood``'s parameters for ``data_shape``."""
        return cls(tuple(likelihood.param_shapes(tuple(data_shape)).items()),
                   likelihood.constrain, **kw)
