"""The default audio architecture: residual dilated 1-D convolutions with a temporal latent.

A clip ``(T, 1)`` is encoded to per-frame posterior parameters for a latent of
shape ``(T / hop, latent_channels)`` and decoded back to per-sample likelihood
parameters ``(T, 1)``. Each encoder stage is a stack of residual units with
growing dilation followed by a strided convolution that divides the length by
the stage's stride; the decoder mirrors it with transposed convolutions, as in
SoundStream (Zeghidour et al., 2021, arXiv:2107.03312) and EnCodec (Défossez
et al., 2022, arXiv:2210.13438), whose residual unit is WaveNet's dilated
convolution (van den Oord et al., 2016, arXiv:1609.03499) in a pre-activation
residual block.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jvae.base import Array, Likelihood, Posterior
from jvae.layers import convolution
from jvae.layers.heads import ParamHead, activation_by_name
from jvae.layers.pqmf import PQMF
from jvae.layers.upsample import transposed_conv

__all__ = ["AudioArchitecture", "AudioDecoder", "AudioEncoder", "Conv1d", "ConvTranspose1d",
           "DownConv1d", "Head1d", "PQMFAnalysis", "PQMFSynthesis", "SignalHead", "ResidualUnit1d",
           "UpConv1d", "audio_architecture", "audio_specs", "conv1d", "make_audio_nets",
           "MAX_GEMM_PATCH"]


# Taps of ParamHead's convolution on 1-D features (jvae.layers.heads).
HEAD_KERNEL = 9


def _same_pads(kernel: int, dilation: int, stride: int) -> tuple[int, int]:
    # lax's "SAME" rule for a length divisible by the stride: the output is
    # length / stride and the extra padding goes after.
    total = max(dilation * (kernel - 1) + 1 - stride, 0)
    return total // 2, total - total // 2


def _patches(x: Array, taps: int, stride: int, dilation: int) -> Array:
    """im2col along the length: ``(N, L_out, taps * C)``, tap-major like the kernel."""
    pads = _same_pads(taps, dilation, stride)
    xp = jnp.pad(x, ((0, 0), pads, (0, 0)))
    out = (xp.shape[1] - dilation * (taps - 1) - 1) // stride + 1
    if taps == 1 and stride == 1:
        return xp
    return jnp.concatenate([lax.slice_in_dim(xp, t * dilation, t * dilation + stride * (out - 1) + 1,
                                             stride, axis=1) for t in range(taps)], axis=-1)


def _matmul(a: Array, w: Array) -> Array:
    # 2-D operands: XLA:CPU's dot emitter is fastest on plain matrices.
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(*a.shape[:-1], w.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv1d_gemm(x: Array, kernel: Array, stride: int, dilation: int) -> Array:
    return _conv1d_gemm_fwd(x, kernel, stride, dilation)[0]


def _conv1d_gemm_fwd(x, kernel, stride, dilation):
    patches = _patches(x, kernel.shape[0], stride, dilation)
    return _matmul(patches, kernel.reshape(-1, kernel.shape[-1])), (patches, x.shape, kernel)


def _conv1d_gemm_bwd(stride, dilation, residuals, g):
    # dW = P^T G and dP = G W^T as 2-D GEMMs; dx sends each patch column back
    # to the sample it was sliced from (the transpose of _patches: pads and adds).
    patches, x_shape, kernel = residuals
    w = kernel.reshape(-1, kernel.shape[-1])
    d_kernel = (patches.reshape(-1, patches.shape[-1]).T @ g.reshape(-1, g.shape[-1]))
    d_patches = _matmul(g, w.T)
    _, col2im = jax.vjp(lambda x: _patches(x, kernel.shape[0], stride, dilation),
                        jnp.zeros(x_shape, g.dtype))
    return col2im(d_patches)[0], d_kernel.reshape(kernel.shape)


_conv1d_gemm.defvjp(_conv1d_gemm_fwd, _conv1d_gemm_bwd)

# Widest im2col patch (taps x input channels) computed as a GEMM on CPU. Measured
# on the full-rate (bands=1) net's layers (2-core CPU, batch 16, forward + both
# gradients): XLA's convolution (XNNPACK at the top level of a program) beat
# im2col 1.1-2.2x on the 3-tap dilated convolutions (patches 48-384 wide) and
# 6x on the 16 -> 1 head, while im2col won 3.7x on the 1 -> 16 stem (7 wide)
# and 1.1-1.9x on 1x1 convolutions.
MAX_GEMM_PATCH = 32


def _use_gemm(taps: int, in_channels: int) -> bool:
    return convolution.use_gemm_convolutions() and (taps == 1 or taps * in_channels
                                                    <= MAX_GEMM_PATCH)


def conv1d(x: Array, kernel: Array, *, stride: int = 1, dilation: int = 1) -> Array:
    """``"SAME"``-padded, dilated and strided 1-D cross-correlation.

    Narrow patches (:data:`MAX_GEMM_PATCH`) run as im2col + GEMM on CPU
    (Chellapilla et al., 2006), the rest as XLA's convolution.

    Args:
      x: ``(N, L, C_in)``.
      kernel: ``(k, C_in, C_out)``, Flax's 1-D layout.
      stride: output step; ``L`` should be divisible by it.
      dilation: spacing of the kernel taps (WaveNet's dilation).

    Returns:
      ``(N, ceil(L / stride), C_out)``, what ``lax.conv_general_dilated`` with
      ``rhs_dilation=(dilation,)`` and ``"SAME"`` padding computes.
    """
    if _use_gemm(kernel.shape[0], kernel.shape[1]):
        return _conv1d_gemm(x, kernel, stride, dilation)
    pads = _same_pads(kernel.shape[0], dilation, stride)
    return lax.conv_general_dilated(x, kernel, (stride,), (pads,), rhs_dilation=(dilation,),
                                    dimension_numbers=("NHC", "HIO", "NHC"))


class Conv1d(nn.Module):
    """Drop-in for ``nn.Conv(features, (k,), strides, padding="SAME", kernel_dilation)``.

    Attributes:
      features: output channels.
      kernel_size: taps.
      stride: downsampling factor.
      dilation: tap spacing.
      kernel_init: the kernel's initializer (Flax's default).
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init,
                            (self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        y = conv1d(x, kernel.astype(x.dtype), stride=self.stride, dilation=self.dilation)
        return y + bias.astype(x.dtype)


class ConvTranspose1d(nn.Module):
    """Drop-in for ``nn.ConvTranspose(features, (k,), (stride,), padding="SAME")``.

    Computed by polyphase decomposition (:func:`jvae.layers.upsample.transposed_conv`)
    on every backend: on the default net's 1-D layers it ran 1.1-1.3x faster
    on CPU than the one-GEMM form :class:`~jvae.layers.upsample.ConvTranspose`
    uses there.

    Attributes:
      features: output channels.
      kernel_size: taps.
      stride: upsampling factor.
    """

    features: int
    kernel_size: int
    stride: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return transposed_conv(x, kernel.astype(x.dtype), (self.stride,)) + bias.astype(x.dtype)


class ResidualUnit1d(nn.Module):
    """``x + conv1x1(act(conv_k,dilated(act(x))))``: one WaveNet-style dilated residual unit.

    The 1x1 convolution starts at zero, so every unit starts as the identity
    (SkipInit, De & Smith, 2020, arXiv:2002.10444): without normalization
    layers, a stack of units otherwise grows the signal at each unit.

    Attributes:
      channels: input and output channels.
      dilation: tap spacing of the ``kernel``-tap convolution.
      kernel: taps of the dilated convolution.
      activation: a name from :data:`~jvae.layers.heads.ACTIVATIONS`.
    """

    channels: int
    dilation: int = 1
    kernel: int = 3
    activation: str = "elu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation_by_name(self.activation)
        h = Conv1d(self.channels, self.kernel, dilation=self.dilation, name="conv")(act(x))
        return x + Conv1d(self.channels, 1, kernel_init=nn.initializers.zeros_init(),
                          name="mix")(act(h))


class DownConv1d(nn.Module):
    """``conv(act(x))`` with ``2 * stride`` taps and stride ``stride``: length / stride.

    Attributes:
      features: output channels.
      stride: downsampling factor.
      activation: a name from :data:`~jvae.layers.heads.ACTIVATIONS`.
    """

    features: int
    stride: int
    activation: str = "elu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation_by_name(self.activation)
        return Conv1d(self.features, 2 * self.stride, stride=self.stride, name="conv")(act(x))


class UpConv1d(nn.Module):
    """``conv_transpose(act(x))`` with ``2 * stride`` taps: length x stride.

    Attributes:
      features: output channels.
      stride: upsampling factor.
      activation: a name from :data:`~jvae.layers.heads.ACTIVATIONS`.
    """

    features: int
    stride: int
    activation: str = "elu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation_by_name(self.activation)
        return ConvTranspose1d(self.features, 2 * self.stride, self.stride, name="conv")(act(x))


class Head1d(nn.Module):
    """``conv(act(x))`` with ``kernel`` taps, length kept: the nets' last layer as a spec token.

    Attributes:
      features: output channels.
      kernel: taps.
      activation: a name from :data:`~jvae.layers.heads.ACTIVATIONS`.
    """

    features: int
    kernel: int
    activation: str = "elu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation_by_name(self.activation)
        return Conv1d(self.features, self.kernel, name="conv")(act(x))


class SignalHead(nn.Module):
    """Per-sample distribution parameters from ``(B, T, C)`` features, quiet at initialization.

    One ``HEAD_KERNEL``-tap convolution per parameter (as
    :class:`~jvae.layers.heads.ParamHead` on 1-D features), its kernel drawn
    ``init_scale`` times smaller in variance than LeCun's: with the default
    init a decoder's first output is about 0.5 RMS, 20-40 dB louder than
    speech clips, and training first spends its steps turning it down.

    Attributes:
      shapes: ``((name, (T, channels)), ...)``.
      constrain: maps the raw dict to distribution parameters.
      init_scale: variance scale of the kernels' initializer.
    """

    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    constrain: Callable[[dict[str, Array]], dict[str, Array]]
    init_scale: float = 1e-2

    @nn.compact
    def __call__(self, h: Array) -> dict[str, Array]:
        init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")
        return self.constrain({name: Conv1d(shape[-1], HEAD_KERNEL, kernel_init=init,
                                            name=name)(h) for name, shape in self.shapes})


class PQMFAnalysis(nn.Module):
    """``(B, T, 1) -> (B, T / M, M)``: the signal as ``M`` PQMF sub-bands (no parameters;
    ``M = 1`` is the identity). The ``PQMF_bands`` spec token."""

    bands: int

    def __call__(self, x: Array) -> Array:
        return PQMF(self.bands).analysis(x) if self.bands > 1 else x


class PQMFSynthesis(nn.Module):
    """``(B, T / M, M) -> (B, T, 1)``: sub-bands back to the signal (the ``IPQMF_bands``
    spec token)."""

    bands: int

    def __call__(self, x: Array) -> Array:
        return PQMF(self.bands).synthesis(x) if self.bands > 1 else x


class AudioArchitecture(NamedTuple):
    """Widths and strides of an :class:`AudioEncoder` / :class:`AudioDecoder` pair.

    Attributes:
      channels: ``len(strides) + 1`` widths, finest first: encoder stage ``i``
        runs its residual units at ``channels[i]`` and downsamples to
        ``channels[i + 1]``; the decoder runs the same stages backwards.
      strides: downsampling factor of each stage.
      dilations: dilations of the residual units of every stage.
      kernel: taps of the dilated convolutions.
      stem_kernel: taps of the first encoder and decoder convolutions.
      activation: a name from :data:`~jvae.layers.heads.ACTIVATIONS`.
      bands: sub-bands of the PQMF (:mod:`jvae.layers.pqmf`) the nets see and
        emit instead of the waveform (1: the waveform itself). ``M`` bands
        replace the full-rate layers, the costliest, by a fixed near-perfect
        filter bank, and every stage runs at ``1/M`` of the rate (RAVE,
        Caillon & Esling, 2021, arXiv:2111.05011).
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel: int = 3
    stem_kernel: int = 7
    activation: str = "elu"
    bands: int = 1

    @property
    def hop(self) -> int:
        """Samples of the signal per latent frame: the bands times the strides."""
        return self.bands * math.prod(self.strides)


def _strides(hop: int) -> tuple[int, ...]:
    # Factors of 4 keep the stages few (each costs its residual units); an odd
    # power of two gets its factor 2 at the full rate, the costliest stage.
    if hop < 1 or hop & (hop - 1):
        raise ValueError(f"hop must be a power of two, got {hop}")
    strides = [4] * (int(math.log2(hop)) // 2)
    return tuple([2] * (int(math.log2(hop)) % 2) + strides)


def audio_architecture(length: int, *, hop: int = 128, bands: int = 8, base_channels: int = 32,
                       max_channels: int = 128, min_frames: int = 4,
                       **kw) -> AudioArchitecture:
    """The default architecture for clips of ``length`` samples.

    The hop sets the latent frame rate (128 samples: 16 ms at 8 kHz), so it
    does not grow with the clip; it shrinks (halving) only for clips shorter
    than ``min_frames`` frames.

    Args:
      length: clip length in samples.
      hop: samples per latent frame, a power of two: ``bands`` times the
        strides (factored into strides of 4 and at most one 2).
      bands: PQMF sub-bands (a power of two; 1: the nets see the waveform).
        Eight bands replace the full-rate layers, the costliest on a CPU, by
        a fixed filter bank (``benchmarks/README.md``).
      base_channels: channels of the first stage, doubled at each stage.
      max_channels: cap on the doubling (the cost of a stage grows with the
        square of its width).
      min_frames: fewest latent frames before the hop is reduced.
      **kw: other :class:`AudioArchitecture` fields.

    Returns:
      An :class:`AudioArchitecture`.
    """
    while hop > 1 and length < min_frames * hop:
        hop //= 2
    bands = max(min(bands, hop), 1)
    strides = _strides(hop // bands)
    channels = tuple(min(base_channels * 2 ** i, max_channels) for i in range(len(strides) + 1))
    return AudioArchitecture(channels, strides, bands=bands, **kw)


def audio_specs(arch: AudioArchitecture, latent_channels: int, *, in_channels: int = 1,
                posterior_params: int = 2, likelihood_params: int = 1
                ) -> tuple[list[str], list[str]]:
    """The encoder and decoder of ``arch`` as layer specs (:mod:`jvae.layers.spec`).

    The specs compute what :class:`AudioEncoder` and :class:`AudioDecoder`
    compute before their heads' ``constrain``, with each head's per-parameter
    convolutions stacked along the channels (``Head1d``); a starting point
    for writing a variant by hand. Only ELU nets can be written so.

    Args:
      arch: widths and strides.
      latent_channels: latent channels per frame.
      in_channels: channels of the signal.
      posterior_params: parameters the posterior emits per latent element
        (2 for a Normal's loc and scale).
      likelihood_params: parameters the likelihood emits per sample.

    Returns:
      ``(encoder_spec, decoder_spec)``.
    """
    ch, k, sk, m = arch.channels, arch.kernel, arch.stem_kernel, arch.bands
    if m > 1 and (in_channels != 1 or likelihood_params != 1):
        raise ValueError(f"{m} PQMF bands take mono clips and one likelihood parameter per "
                         f"sample; got {in_channels} channels and {likelihood_params} parameters")
    unit = (lambda c: [f"RU1d_{c}_{d}_{k}" for d in arch.dilations])
    enc = [f"PQMF_{m}"] if m > 1 else []
    enc.append(f"C1d_{in_channels * m}_{ch[0]}_{sk}_1_{sk // 2}")
    for s, stride in enumerate(arch.strides):
        enc += unit(ch[s]) + [f"Down1d_{ch[s]}_{ch[s + 1]}_{stride}"]
    enc.append(f"Head1d_{ch[-1]}_{posterior_params * latent_channels}_{HEAD_KERNEL}")
    dec = [f"C1d_{latent_channels}_{ch[-1]}_{sk}_1_{sk // 2}"]
    for s in reversed(range(len(arch.strides))):
        dec += [f"Up1d_{ch[s + 1]}_{ch[s]}_{arch.strides[s]}"] + unit(ch[s])
    dec.append(f"Head1d_{ch[0]}_{likelihood_params * in_channels * m}_{HEAD_KERNEL}")
    if m > 1:
        dec.append(f"IPQMF_{m}")
    return enc, dec


def _check_signal(shape: Sequence[int], hop: int, what: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"audio nets take signals of per-example shape (length, channels), got "
                         f"{tuple(shape)}; load mono clips as (T, 1)")
    if shape[0] % hop:
        raise ValueError(f"{what}: a length of {shape[0]} samples is not divisible by the total "
                         f"stride {hop}; choose a chunk size that is a multiple of {hop} "
                         "(--chunk-size) or smaller strides")
    return int(shape[0]), int(shape[1])


class AudioEncoder(nn.Module):
    """``(B, T, C)`` -> per-frame posterior parameters for a ``(T / hop, latent_channels)`` latent.

    Attributes:
      posterior: the family whose parameters the head emits.
      latent_shape: ``(frames, latent_channels)``.
      arch: widths and strides.
    """

    posterior: Posterior
    latent_shape: tuple[int, int]
    arch: AudioArchitecture

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        arch = self.arch
        _check_signal(x.shape[1:], arch.hop, "AudioEncoder")
        x = PQMFAnalysis(arch.bands)(x)
        act = activation_by_name(arch.activation)
        h = Conv1d(arch.channels[0], arch.stem_kernel, name="stem")(x)
        for s, stride in enumerate(arch.strides):
            c_in, c_out = arch.channels[s], arch.channels[s + 1]
            for j, d in enumerate(arch.dilations):
                h = ResidualUnit1d(c_in, d, arch.kernel, arch.activation, name=f"s{s}_unit{j}")(h)
            h = DownConv1d(c_out, stride, arch.activation, name=f"s{s}_down")(h)
        h = act(h)
        if cond is not None:
            h = jnp.concatenate([h, jnp.broadcast_to(cond.reshape(cond.shape[0], 1, -1).astype(
                h.dtype), (*h.shape[:2], math.prod(cond.shape[1:])))], axis=-1)
        return ParamHead.for_posterior(self.posterior, self.latent_shape, name="head")(h)


class AudioDecoder(nn.Module):
    """``z (B, frames, latent_channels)`` -> per-sample likelihood parameters ``(B, T, C)``.

    Attributes:
      likelihood: the observation model whose parameters the head emits.
      data_shape: ``(T, C)``.
      arch: widths and strides (the encoder's; the decoder runs them backwards).
    """

    likelihood: Likelihood
    data_shape: tuple[int, int]
    arch: AudioArchitecture

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        arch = self.arch
        _check_signal(self.data_shape, arch.hop, "AudioDecoder")
        act = activation_by_name(arch.activation)
        if cond is not None:
            z = jnp.concatenate([z, jnp.broadcast_to(cond.reshape(cond.shape[0], 1, -1).astype(
                z.dtype), (*z.shape[:2], math.prod(cond.shape[1:])))], axis=-1)
        h = Conv1d(arch.channels[-1], arch.stem_kernel, name="stem")(z)
        for s in reversed(range(len(arch.strides))):
            c_in, stride = arch.channels[s], arch.strides[s]
            h = UpConv1d(c_in, stride, arch.activation, name=f"s{s}_up")(h)
            for j, d in enumerate(arch.dilations):
                h = ResidualUnit1d(c_in, d, arch.kernel, arch.activation, name=f"s{s}_unit{j}")(h)
        length, channels = self.data_shape
        band_shape = (length // arch.bands, channels * arch.bands)
        shapes = tuple(self.likelihood.param_shapes(band_shape).items())
        synthesis = PQMFSynthesis(arch.bands)
        return SignalHead(shapes, lambda raw: self.likelihood.constrain(
            {k: synthesis(v) for k, v in raw.items()}), name="head")(act(h))


def make_audio_nets(*, posterior: Posterior, likelihood: Likelihood, data_shape: Sequence[int],
                    latent_channels: int = 16, arch: AudioArchitecture | None = None
                    ) -> tuple[AudioEncoder, AudioDecoder, tuple[int, int]]:
    """Builds the default audio encoder/decoder pair and its temporal latent shape.

    Args:
      posterior: posterior family.
      likelihood: observation model.
      data_shape: per-example ``(T, C)``.
      latent_channels: latent channels per frame.
      arch: widths and strides; None: :func:`audio_architecture` of ``T``.

    Returns:
      ``(encoder, decoder, latent_shape)`` with ``latent_shape = (T / hop, latent_channels)``.

    Raises:
      ValueError: ``data_shape`` is not ``(T, C)`` or ``T`` is not divisible by the hop.
    """
    data_shape = tuple(int(d) for d in data_shape)
    if len(data_shape) != 2:
        _check_signal(data_shape, 1, "make_audio_nets")
    arch = arch or audio_architecture(data_shape[0])
    length, channels = _check_signal(data_shape, arch.hop, "make_audio_nets")
    if arch.bands > 1:
        per_sample = {k: v[-1] for k, v in likelihood.param_shapes(data_shape).items()}
        if channels != 1 or set(per_sample.values()) != {1}:
            raise ValueError(f"{arch.bands} PQMF bands need mono clips (T, 1) and a likelihood "
                             f"with one parameter per sample (gaussian, gaussian_learned); got "
                             f"data {data_shape} and {likelihood.name} parameters {per_sample}")
    latent_shape = (length // arch.hop, int(latent_channels))
    return (AudioEncoder(posterior, latent_shape, arch),
            AudioDecoder(likelihood, data_shape, arch), latent_shape)
