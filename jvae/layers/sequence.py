"""Recurrent (LSTM/GRU) encoders and decoders for sequence data.

Data of per-example shape ``(T, *rest)`` is read as ``T`` steps of
``prod(rest)`` features; MNIST images ``(28, 28, 1)`` become 28 rows of 28
pixels. The latent is a flat vector. Decoders emit the likelihood's parameters
for the full data shape, so a Bernoulli likelihood and the CLI's image grids
work unchanged.

The decoder's initial recurrent state is a learned function of ``z`` in every
mode; the modes differ in what the cell reads at step ``t`` (Bowman et al.,
2016, arXiv:1511.06349 discuss these choices for sentence VAEs):

* ``repeat_latent``: ``z`` at every step;
* ``concat_output_latent``: ``[z, y_{t-1}]``;
* ``output_as_input``: ``y_{t-1}`` only, so ``z`` enters through the initial
  state alone.

``y_{t-1}`` is the model's *own* previous prediction, the likelihood's mean
(pixel probabilities for a Bernoulli likelihood), with ``y_{-1} = 0``. Training
therefore runs the decoder free (no teacher forcing): it is trained exactly as
it generates, and the three modes differ only in their inputs. Gradients flow
through the fed-back predictions.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jvae.base import Array
from jvae.distributions.likelihoods import Likelihood
from jvae.distributions.posteriors import Posterior
from jvae.layers.heads import ParamHead, with_cond

__all__ = ["DECODER_MODES", "RNN_CELLS", "RNNDecoder", "RNNEncoder", "make_rnn_nets",
           "sequence_layout"]

DECODER_MODES = ("repeat_latent", "concat_output_latent", "output_as_input")
RNN_CELLS = ("lstm", "gru")


def _make_cell(kind: str, features: int, name: str | None = None) -> nn.RNNCellBase:
    if kind == "lstm":
        return nn.OptimizedLSTMCell(features, name=name)
    if kind == "gru":
        return nn.GRUCell(features, name=name)
    raise ValueError(f"unknown rnn cell {kind!r}; choose one of {', '.join(RNN_CELLS)}")


def sequence_layout(data_shape: Sequence[int]) -> tuple[int, int]:
    """``(steps, features)`` of data with per-example shape ``(T, *rest)``.

    Raises:
      ValueError: for data with fewer than two dimensions.
    """
    data_shape = tuple(int(d) for d in data_shape)
    if len(data_shape) < 2:
        raise ValueError("sequence nets need data of shape (steps, features...), got data "
                         f"shape {data_shape}")
    return data_shape[0], math.prod(data_shape[1:])


class RNNEncoder(nn.Module):
    """Runs a recurrent cell over the steps; its last output feeds the posterior head.

    Attributes:
      posterior: the posterior family.
      latent_shape: per-example latent shape.
      cell: ``"lstm"`` or ``"gru"``.
      hidden: recurrent state size.
    """

    posterior: Posterior
    latent_shape: tuple[int, ...]
    cell: str = "lstm"
    hidden: int = 256

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        steps, features = sequence_layout(x.shape[1:])
        seq = x.reshape(x.shape[0], steps, features)
        outputs = nn.RNN(_make_cell(self.cell, self.hidden), name="rnn")(seq)
        h = with_cond(outputs[:, -1], cond)
        return ParamHead.for_posterior(self.posterior, self.latent_shape, name="head")(h)


class _DecoderStep(nn.Module):
    """One decoder step: ``((state, y_prev), context) -> ((state, y), raw params)``."""

    cell: str
    hidden: int
    mode: str
    likelihood: Likelihood
    features: int

    @nn.compact
    def __call__(self, carry, context):
        state, y_prev = carry
        if self.mode == "repeat_latent":
            inputs = context
        elif self.mode == "concat_output_latent":
            inputs = jnp.concatenate([context, y_prev], axis=-1)
        else:
            inputs = y_prev
        state, h = _make_cell(self.cell, self.hidden, name="cell")(state, inputs)
        shapes = self.likelihood.param_shapes((self.features,))
        raw = {k: nn.Dense(self.features, name=k)(h) for k in shapes}
        # Feed back the prediction itself (the likelihood's mean), not data.
        y = self.likelihood.mean(self.likelihood.constrain(raw)).astype(y_prev.dtype)
        return (state, y), raw


class RNNDecoder(nn.Module):
    """Unrolls a recurrent cell for ``T`` steps to the likelihood's parameters.

    Attributes:
      likelihood: the observation model.
      data_shape: per-example data shape ``(T, *rest)``.
      cell: ``"lstm"`` or ``"gru"``.
      hidden: recurrent state size.
      mode: one of :data:`DECODER_MODES` (see the module docstring).
    """

    likelihood: Likelihood
    data_shape: tuple[int, ...]
    cell: str = "lstm"
    hidden: int = 256
    mode: str = "repeat_latent"

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        if self.mode not in DECODER_MODES:
            raise ValueError(f"unknown decoder mode {self.mode!r}; choose one of "
                             f"{', '.join(DECODER_MODES)}")
        steps, features = sequence_layout(self.data_shape)
        batch = z.shape[0]
        context = with_cond(z.reshape(batch, -1), cond)
        # The initial state (an LSTM's (c, h), a GRU's h) is a learned function of z.
        init = [nn.tanh(nn.Dense(self.hidden, name=f"init_{i}")(context))
                for i in range(2 if self.cell == "lstm" else 1)]
        state = tuple(init) if self.cell == "lstm" else init[0]
        y0 = jnp.zeros((batch, features), context.dtype)
        scan = nn.scan(_DecoderStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=nn.broadcast, length=steps)
        _, raw = scan(self.cell, self.hidden, self.mode, self.likelihood, features,
                      name="step")((state, y0), context)
        # Scanned outputs are time-major: (T, B, F) -> (B, *data_shape).
        raw = {k: jnp.swapaxes(v, 0, 1).reshape(batch, *self.data_shape) for k, v in raw.items()}
        return self.likelihood.constrain(raw)


def make_rnn_nets(*, posterior: Posterior, likelihood: Likelihood,
                  latent_shape: tuple[int, ...], data_shape: tuple[int, ...], cell: str = "lstm",
                  hidden: int = 256, mode: str = "repeat_latent") -> tuple[RNNEncoder, RNNDecoder]:
    """Builds a matching recurrent (encoder, decoder) pair.

    Args:
      posterior: posterior family for the encoder head.
      likelihood: observation model for the decoder.
      latent_shape: per-example latent shape.
      data_shape: per-example data shape ``(T, *rest)``.
      cell: ``"lstm"`` or ``"gru"``.
      hidden: recurrent state size of both networks.
      mode: decoder input mode, one of :data:`DECODER_MODES`.

    Returns:
      ``(encoder, decoder)`` Linen modules.

    Raises:
      ValueError: unknown cell or mode, non-positive ``hidden``, or data with
        fewer than two dimensions.
    """
    if cell not in RNN_CELLS:
        raise ValueError(f"unknown rnn cell {cell!r}; choose one of {', '.join(RNN_CELLS)}")
    if mode not in DECODER_MODES:
        raise ValueError(f"unknown decoder mode {mode!r}; choose one of "
                         f"{', '.join(DECODER_MODES)}")
    if hidden < 1:
        raise ValueError(f"rnn hidden size must be positive, got {hidden}")
    sequence_layout(data_shape)
    return (RNNEncoder(posterior, tuple(latent_shape), cell, hidden),
            RNNDecoder(likelihood, tuple(data_shape), cell, hidden, mode))
