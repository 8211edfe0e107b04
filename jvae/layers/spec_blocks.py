"""The Flax modules a layer spec builds: Stable Diffusion's VAE blocks and :class:`SpecNet`.

:func:`build` parses and shape-checks a spec (:mod:`jvae.layers.spec`,
:mod:`jvae.layers.spec_shapes`) before returning its :class:`SpecNet`, so a
config mistake fails before any parameters are created.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.layers.audio import DownConv1d, Head1d, PQMFAnalysis, PQMFSynthesis, ResidualUnit1d, UpConv1d
from jvae.layers.convolution import Conv
from jvae.layers.spec import Shape, SpecError, SpecSource, load_spec
from jvae.layers.spec_shapes import check_input_shape, compile_spec, default_num_groups

__all__ = ["SpecNet", "TinyBlock", "VAEAttentionBlock", "VAEResBlock", "VAEResBlock1d", "build"]


def _conv(features: int, kernel: int, stride: int, padding: int, name: str,
          after: int | None = None, bias: bool = True) -> Conv:
    # Explicit (lo, hi) pairs rather than 'SAME' so the output size follows
    # the PyTorch formula regardless of stride. jvae.layers.convolution's Conv has
    # nn.Conv's parameters and outputs (im2col + GEMM on CPU).
    pad = (padding, padding if after is None else after)
    return Conv(
        features=features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=(pad, pad),
        use_bias=bias,
        name=name,
    )


class VAEResBlock(nn.Module):
    """Pre-activation residual block used by ``VAERB_in_out``.

    Attributes:
      in_channels: Channels of the input.
      out_channels: Channels of the output. When it differs from
        ``in_channels`` the skip path is a 1x1 convolution named ``skip``;
        otherwise the skip is the identity and has no parameters.
      groups: GroupNorm groups of both norms; None picks
        :func:`default_num_groups` of each norm's channels.
    """

    in_channels: int
    out_channels: int
    groups: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to an NHWC array."""
        groups_in = self.groups or default_num_groups(self.in_channels)
        groups_out = self.groups or default_num_groups(self.out_channels)
        h = nn.GroupNorm(num_groups=groups_in, name="norm1")(x)
        h = _conv(self.out_channels, 3, 1, 1, name="conv1")(nn.silu(h))
        h = nn.GroupNorm(num_groups=groups_out, name="norm2")(h)
        h = _conv(self.out_channels, 3, 1, 1, name="conv2")(nn.silu(h))
        skip = x
        if self.in_channels != self.out_channels:
            skip = _conv(self.out_channels, 1, 1, 0, name="skip")(x)
        return skip + h


class VAEAttentionBlock(nn.Module):
    """Single-head spatial self-attention used by ``VAEA_channels``.

    Every one of the ``H * W`` positions attends to every other one; the
    result is projected and added back to the input, so shape is preserved.

    Attributes:
      channels: Channels of the input and output.
      groups: GroupNorm groups; None picks :func:`default_num_groups`.
    """

    channels: int
    groups: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to an NHWC array."""
        b, h, w, c = x.shape
        groups = self.groups or default_num_groups(self.channels)
        y = nn.GroupNorm(num_groups=groups, name="norm")(x)
        y = y.reshape(b, h * w, c)
        # A 1x1 convolution over channels is exactly a Dense on the last axis.
        q = nn.Dense(self.channels, name="q")(y)
        k = nn.Dense(self.channels, name="k")(y)
        v = nn.Dense(self.channels, name="v")(y)
        # The logits and softmax run in float32 whatever the compute dtype (as
        # diffusers' upcast_softmax): in float16, H * W-long dot products of
        # large activations overflow, and bfloat16's 8-bit mantissa blurs
        # the weights of a long softmax.
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits / math.sqrt(self.channels), axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v)
        out = nn.Dense(self.channels, name="proj_out")(out)
        return x + out.reshape(b, h, w, c)


class TinyBlock(nn.Module):
    """TAESD's residual block, ``TAEB_in_out`` (Bohan, 2023; ``diffusers``' ``AutoencoderTinyBlock``).

    ``ReLU(conv(ReLU(conv(ReLU(conv(x))))) + skip(x))`` with 3x3 convolutions;
    ``skip`` is a bias-free 1x1 convolution when the channels change.

    Attributes:
      in_channels: Channels of the input.
      out_channels: Channels of the output.
    """

    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to an NHWC array."""
        h = nn.relu(_conv(self.out_channels, 3, 1, 1, name="conv_0")(x))
        h = nn.relu(_conv(self.out_channels, 3, 1, 1, name="conv_1")(h))
        h = _conv(self.out_channels, 3, 1, 1, name="conv_2")(h)
        skip = x
        if self.in_channels != self.out_channels:
            skip = _conv(self.out_channels, 1, 1, 0, name="skip", bias=False)(x)
        return nn.relu(h + skip)


def _conv1d(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.Conv:
    # Along the length axis of the (batch, length, 1, C) carrier; the kernel
    # has the shape a 2-D conv of width 1 would, so weights stay NHWC-ready.
    return nn.Conv(features=features, kernel_size=(kernel, 1), strides=(stride, 1),
                   padding=((padding, padding), (0, 0)), name=name)


class VAEResBlock1d(nn.Module):
    """``VAERB1d_in_out``: :class:`VAEResBlock` with length-3 convolutions."""

    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to a ``(batch, length, 1, C)`` array."""
        h = nn.GroupNorm(num_groups=default_num_groups(self.in_channels), name="norm1")(x)
        h = _conv1d(self.out_channels, 3, 1, 1, name="conv1")(nn.silu(h))
        h = nn.GroupNorm(num_groups=default_num_groups(self.out_channels), name="norm2")(h)
        h = _conv1d(self.out_channels, 3, 1, 1, name="conv2")(nn.silu(h))
        skip = x
        if self.in_channels != self.out_channels:
            skip = _conv1d(self.out_channels, 1, 1, 0, name="skip")(x)
        return skip + h


_AUDIO_BLOCKS = {
    "RU1d": lambda a, name: ResidualUnit1d(a[0], a[1], *a[2:], activation="elu", name=name),
    "Down1d": lambda a, name: DownConv1d(a[1], a[2], activation="elu", name=name),
    "Up1d": lambda a, name: UpConv1d(a[1], a[2], activation="elu", name=name),
    "Head1d": lambda a, name: Head1d(a[1], a[2], activation="elu", name=name),
    "PQMF": lambda a, name: PQMFAnalysis(a[0], name=name),
    "IPQMF": lambda a, name: PQMFSynthesis(a[0], name=name),
}


def _upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    # ``repeat`` is exact nearest-neighbour replication, unlike a resize
    # whose pixel-centre convention could shift content.
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class SpecNet(nn.Module):
    """A sequential network defined by a layer spec.

    Submodules are named ``layers_{i}`` by their position ``i`` in the
    expanded layer list; parameter-free layers (``SiLU``, ``ReLU``, ``Clamp``, ``MaxP``, ``UpS``)
    create no submodule.

    Attributes:
      spec: Layer-spec strings (see the module docstring).
      input_shape: Expected per-example input shape ``(H, W, C)``.
    """

    spec: tuple[str, ...]
    input_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network.

        Args:
          x: Input of shape ``(batch, H, W, C)`` matching ``input_shape``.

        Returns:
          The output, of shape ``(batch, *output_shape(spec, input_shape))``.

        Raises:
          ValueError: If ``x`` does not have the expected shape.
          SpecError: If the spec is malformed or shape-inconsistent.
        """
        expected = check_input_shape(self.input_shape)
        layers, _ = compile_spec(load_spec(self.spec), expected)
        signal = len(self.input_shape) == 2
        if signal and x.ndim == 3 and tuple(x.shape[1:]) == tuple(self.input_shape):
            x = x[:, :, None, :]
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                "SpecNet expects input of shape "
                f"(batch, {', '.join(map(str, expected))}) (NHWC), "
                f"got {tuple(x.shape)}"
            )
        for i, layer in enumerate(layers):
            name = f"layers_{i}"
            a = layer.args
            if layer.token == "C2d":
                x = _conv(a[1], a[2], a[3], a[4], name=name, after=a[-1])(x)
            elif layer.token == "VAERB":
                x = VAEResBlock(*a, name=name)(x)
            elif layer.token == "VAEA":
                x = VAEAttentionBlock(*a, name=name)(x)
            elif layer.token == "GN":
                x = nn.GroupNorm(num_groups=a[0], name=name)(x)
            elif layer.token == "C2dNB":
                x = _conv(a[1], a[2], a[3], a[4], name=name, bias=False)(x)
            elif layer.token == "TAEB":
                x = TinyBlock(a[0], a[1], name=name)(x)
            elif layer.token == "SiLU":
                x = nn.silu(x)
            elif layer.token == "ReLU":
                x = nn.relu(x)
            elif layer.token == "Clamp":
                x = a[0] * jnp.tanh(x / a[0])
            elif layer.token == "MaxP":
                x = nn.max_pool(x, (a[0], a[0]), strides=(a[1], a[1]), padding="VALID")
            elif layer.token == "UpS":
                x = _upsample_nearest(x, a[0])
            elif layer.token == "C1d":
                x = _conv1d(a[1], a[2], a[3], a[4], name=name)(x)
            elif layer.token == "VAERB1d":
                x = VAEResBlock1d(a[0], a[1], name=name)(x)
            elif layer.token == "MaxP1d":
                x = nn.max_pool(x, (a[0], 1), strides=(a[1], 1), padding="VALID")
            elif layer.token == "UpS1d":
                x = jnp.repeat(x, a[0], axis=1)
            elif layer.token in _AUDIO_BLOCKS:
                # jvae.layers.audio's modules on (batch, length, C), so their
                # parameters are those of the default audio nets' blocks.
                x = _AUDIO_BLOCKS[layer.token](a, name)(x[:, :, 0, :])[:, :, None, :]
            else:  # pragma: no cover - parse_spec only yields known tokens
                raise SpecError(f"unknown token {layer.token!r}")
        return x[:, :, 0, :] if signal else x


def build(spec: SpecSource, input_shape: Shape) -> SpecNet:
    """Parses and shape-checks a spec, then returns the module.

    Doing the checks here, rather than lazily in ``init``, makes config
    mistakes fail before any parameters are created or training starts.

    Args:
      spec: A list of spec strings, a JSON string, or a path to a JSON file
        (see :func:`load_spec`).
      input_shape: Per-example input shape ``(H, W, C)``.

    Returns:
      A :class:`SpecNet` ready for ``init``/``apply``.

    Raises:
      SpecError: If the spec is malformed or shape-inconsistent.
    """
    entries = load_spec(spec)
    shape = check_input_shape(input_shape)
    compile_spec(entries, shape)
    # A 1-D signal keeps its (length, C) shape: SpecNet carries it as width 1.
    return SpecNet(spec=entries, input_shape=tuple(input_shape) if len(input_shape) == 2
                   else shape)
