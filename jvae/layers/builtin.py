"""The built-in encoders and decoders (MLP, 2-D and 1-D convolutional), with jvae's call contract.

The contract, which any user module (Linen or NNX) can follow:

* an encoder maps ``x`` of shape ``(batch, *data_shape)`` (and optionally a
  conditioning array ``cond`` of shape ``(batch, ...)``) to a dict of posterior
  parameters, e.g. ``{"loc": (batch, 20), "scale": (batch, 20)}``;
* a decoder maps ``z`` of shape ``(batch, *latent_shape)`` (and optionally
  ``cond``) to a dict of likelihood parameters, e.g. ``{"logits": (batch, 28, 28, 1)}``.

jvae's own networks end in :class:`ParamHead`, which emits exactly the
parameters a :class:`~jvae.distributions.posteriors.Posterior` or
:class:`~jvae.distributions.likelihoods.Likelihood` asks for and applies its ``constrain``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn

from jvae.base import Array, Likelihood, Posterior
from jvae.layers.convolution import Conv
from jvae.layers.heads import ACTIVATIONS, ParamHead, activation_by_name, with_cond
from jvae.layers.upsample import ConvTranspose

__all__ = ["ParamHead", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder",
           "Conv1DEncoder", "Conv1DDecoder",
           "activation_by_name", "ACTIVATIONS", "make_nets"]

class MLPEncoder(nn.Module):
    """x -> flatten -> [Dense -> activation] * len(hidden) -> posterior head.

    Attributes:
      posterior: the family whose parameters the head emits.
      latent_shape: per-example latent shape, e.g. ``(20,)``.
      hidden: hidden layer widths (``(400,)`` gives 784-400-20).
      activation: a name from :data:`ACTIVATIONS`.
    """

    posterior: Posterior
    latent_shape: tuple[int, ...]
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        act = activation_by_name(self.activation)
        h = with_cond(x.reshape(x.shape[0], -1), cond)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        return ParamHead.for_posterior(self.posterior, self.latent_shape, name="head")(h)


class MLPDecoder(nn.Module):
    """z -> [Dense -> activation] * len(hidden) -> likelihood head.

    Attributes:
      likelihood: the observation model whose parameters the head emits.
      data_shape: per-example data shape, e.g. ``(28, 28, 1)``.
      hidden: hidden layer widths.
      activation: a name from :data:`ACTIVATIONS`.
    """

    likelihood: Likelihood
    data_shape: tuple[int, ...]
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        act = activation_by_name(self.activation)
        h = with_cond(z.reshape(z.shape[0], -1), cond)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        # A flat head keeps the MLP a pure stack of Dense layers (784 outputs).
        return ParamHead.for_likelihood(self.likelihood, self.data_shape, name="head")(h)


class ConvEncoder(nn.Module):
    """Strided 3x3 convolutions (each halves H and W), then Dense, then the head.

    Attributes:
      posterior: the family whose parameters the head emits.
      latent_shape: per-example latent shape.
      channels: output channels of each stride-2 convolution.
      hidden: width of the Dense layer before the head.
      activation: a name from :data:`ACTIVATIONS`.
    """

    posterior: Posterior
    latent_shape: tuple[int, ...]
    channels: tuple[int, ...] = (32, 64)
    hidden: int = 256
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        if x.ndim != 4:
            raise ValueError(f"ConvEncoder expects images (batch, H, W, C), got shape {x.shape}")
        act = activation_by_name(self.activation)
        h = x
        for i, c in enumerate(self.channels):
            # jvae.layers.convolution's Conv: nn.Conv's parameters and outputs, im2col on CPU.
            h = act(Conv(c, (3, 3), strides=(2, 2), padding="SAME", name=f"Conv_{i}")(h))
        h = with_cond(h.reshape(h.shape[0], -1), cond)
        h = act(nn.Dense(self.hidden)(h))
        return ParamHead.for_posterior(self.posterior, self.latent_shape, name="head")(h)


class ConvDecoder(nn.Module):
    """Dense to a coarse feature map, transposed convolutions up to full size, head.

    Each transposed convolution doubles H and W, so H and W must be divisible
    by ``2 ** len(channels)`` (28x28 with two layers: 7 -> 14 -> 28).

    Attributes:
      likelihood: the observation model whose parameters the head emits.
      data_shape: ``(H, W, C)``.
      channels: channels of the feature maps, coarsest first.
      hidden: width of the Dense layer after the latent.
      activation: a name from :data:`ACTIVATIONS`.
    """

    likelihood: Likelihood
    data_shape: tuple[int, int, int]
    channels: tuple[int, ...] = (64, 32)
    hidden: int = 256
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        height, width, _ = self.data_shape
        factor = 2 ** len(self.channels)
        if height % factor or width % factor:
            raise ValueError(f"ConvDecoder with {len(self.channels)} upsampling layers needs "
                             f"H and W divisible by {factor}, got data shape {self.data_shape}")
        act = activation_by_name(self.activation)
        h = with_cond(z.reshape(z.shape[0], -1), cond)
        h = act(nn.Dense(self.hidden)(h))
        hh, ww = height // factor, width // factor
        h = act(nn.Dense(hh * ww * self.channels[0])(h)).reshape(-1, hh, ww, self.channels[0])
        for i, c in enumerate(self.channels):
            # jvae.layers.upsample's ConvTranspose: Flax's parameters and outputs, but a
            # kernel gradient XLA:CPU has fast kernels for. Named as Flax would.
            h = act(ConvTranspose(c, (3, 3), (2, 2), name=f"ConvTranspose_{i}")(h))
        return ParamHead.for_likelihood(self.likelihood, self.data_shape, name="head")(h)


class Conv1DEncoder(nn.Module):
    """Strided 1-D convolutions (each divides the length by ``stride``), Dense, head.

    For audio chunks ``(batch, length, 1)``, as in WaveNet-style autoencoders'
    strided front ends.

    Attributes:
      posterior: the family whose parameters the head emits.
      latent_shape: per-example latent shape.
      channels: output channels of each strided convolution.
      hidden: width of the Dense layer before the head.
      activation: a name from :data:`ACTIVATIONS`.
      kernel: convolution width.
      stride: downsampling factor of each convolution.
    """

    posterior: Posterior
    latent_shape: tuple[int, ...]
    channels: tuple[int, ...] = (16, 32, 64, 64)
    hidden: int = 256
    activation: str = "relu"
    kernel: int = 9
    stride: int = 4

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        if x.ndim != 3:
            raise ValueError(f"Conv1DEncoder expects signals (batch, length, C), got {x.shape}")
        act = activation_by_name(self.activation)
        h = x
        for c in self.channels:
            h = act(nn.Conv(c, (self.kernel,), strides=(self.stride,), padding="SAME")(h))
        h = with_cond(h.reshape(h.shape[0], -1), cond)
        h = act(nn.Dense(self.hidden)(h))
        return ParamHead.for_posterior(self.posterior, self.latent_shape, name="head")(h)


class Conv1DDecoder(nn.Module):
    """Dense to a short feature sequence, strided transposed 1-D convolutions, head.

    The length must be divisible by ``stride ** len(channels)``.

    Attributes:
      likelihood: the observation model whose parameters the head emits.
      data_shape: ``(length, C)``.
      channels: channels of the feature sequences, coarsest first.
      hidden: width of the Dense layer after the latent.
      activation: a name from :data:`ACTIVATIONS`.
      kernel: convolution width.
      stride: upsampling factor of each transposed convolution.
    """

    likelihood: Likelihood
    data_shape: tuple[int, int]
    channels: tuple[int, ...] = (64, 64, 32, 16)
    hidden: int = 256
    activation: str = "relu"
    kernel: int = 9
    stride: int = 4

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        length = self.data_shape[0]
        factor = self.stride ** len(self.channels)
        if length % factor:
            raise ValueError(f"Conv1DDecoder with {len(self.channels)} layers of stride "
                             f"{self.stride} needs a length divisible by {factor}, got "
                             f"{length}; change --chunk-size")
        act = activation_by_name(self.activation)
        h = with_cond(z.reshape(z.shape[0], -1), cond)
        h = act(nn.Dense(self.hidden)(h))
        short = length // factor
        h = act(nn.Dense(short * self.channels[0])(h)).reshape(-1, short, self.channels[0])
        for c in self.channels:
            h = act(nn.ConvTranspose(c, (self.kernel,), strides=(self.stride,), padding="SAME")(h))
        return ParamHead.for_likelihood(self.likelihood, self.data_shape, name="head")(h)


def make_nets(kind: str, *, posterior: Posterior, likelihood: Likelihood,
              latent_shape: tuple[int, ...], data_shape: tuple[int, ...],
              activation: str = "relu", hidden: Sequence[int] = (400,),
              **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    """Builds a matching (encoder, decoder) pair by name.

    Args:
      kind: ``"mlp"`` or ``"conv"`` (2-D for images ``(H, W, C)``, 1-D for
        signals ``(length, C)``).
      posterior: posterior family for the encoder head.
      likelihood: observation model for the decoder head.
      latent_shape: per-example latent shape.
      data_shape: per-example data shape.
      activation: activation name.
      hidden: MLP hidden widths (for ``conv``, the first entry is the Dense width).
      **kwargs: extra module fields (e.g. ``channels`` for conv nets).

    Returns:
      ``(encoder, decoder)`` Linen modules.
    """
    hidden = tuple(int(h) for h in hidden)
    if kind == "mlp":
        return (MLPEncoder(posterior, latent_shape, hidden, activation),
                MLPDecoder(likelihood, data_shape, tuple(reversed(hidden)), activation))
    if kind == "conv" and len(data_shape) == 2:  # 1-D signals (length, channels)
        width = hidden[0] if hidden else 256
        channels = tuple(kwargs.get("channels", Conv1DEncoder.channels))
        return (Conv1DEncoder(posterior, latent_shape, channels, width, activation),
                Conv1DDecoder(likelihood, tuple(data_shape), tuple(reversed(channels)), width,
                              activation))
    if kind == "conv":
        if len(data_shape) != 3:
            raise ValueError(f"conv nets need image data (H, W, C), got shape {data_shape}")
        width = hidden[0] if hidden else 256
        channels = tuple(kwargs.get("channels", (32, 64)))
        return (ConvEncoder(posterior, latent_shape, channels, width, activation),
                ConvDecoder(likelihood, tuple(data_shape), tuple(reversed(channels)), width,
                            activation))
    raise ValueError(f"unknown net {kind!r}; choose 'mlp' or 'conv'")
