"""The PatchGAN discriminator of pix2pix and latent diffusion's autoencoders.

``NLayerDiscriminator`` (Isola et al., 2017, arXiv:1611.07004; the one
``LPIPSWithDiscriminator`` of Rombach et al., 2022 trains against) classifies
overlapping patches rather than whole images: 4x4 convolutions, ``layers``
of them with stride 2 and channels ``channels * min(2^n, 8)``, one more with
stride 1, then a 4x4 convolution to one logit per patch. With 3 strided
layers each logit sees a 70x70 patch. Every layer but the first is followed by
batch normalization over the batch's statistics (the discriminator is only
ever run on training batches, so no running averages are kept: under
``jax.jit`` over a mesh the statistics are those of the global batch, so one
device and eight compute the same) and a leaky ReLU (slope 0.2).

Weights start as pix2pix's: convolution kernels ``N(0, 0.02)``, normalization
scales ``N(1, 0.02)``, biases 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import Conv

from jvae.base import Array, Discriminator, PyTree

__all__ = ["PatchGAN", "patchgan_discriminator", "receptive_field", "output_size"]


class _BatchNorm(nn.Module):
    """Normalizes each channel over the batch and space; learned scale and bias."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", lambda k, s: 1.0 + 0.02 * jax.random.normal(k, s), (c,))
        bias = self.param("bias", nn.initializers.zeros_init(), (c,))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class PatchGAN(nn.Module):
    """``(B, H, W, C)`` images in [0, 1] -> ``(B, h, w, 1)`` patch logits.

    Attributes:
      layers: stride-2 convolutions (3: 70x70 patches).
      channels: channels of the first convolution.
    """

    layers: int = 3
    channels: int = 64

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pad = ((1, 1), (1, 1))
        # The nets of latent diffusion see [-1, 1]; jvae's pixels are in [0, 1].
        h = 2.0 * x - 1.0
        h = nn.leaky_relu(Conv(self.channels, (4, 4), (2, 2), pad, name="conv_0")(h), 0.2)
        for n in range(1, self.layers + 1):
            stride = 2 if n < self.layers else 1
            conv = Conv(self.channels * min(2 ** n, 8), (4, 4), (stride, stride), pad,
                        use_bias=False, name=f"conv_{n}")
            h = nn.leaky_relu(_BatchNorm(name=f"norm_{n}")(conv(h)), 0.2)
        return Conv(1, (4, 4), (1, 1), pad, name="logits")(h)

    def init_weights(self, key: Array, example: Array) -> PyTree:
        """pix2pix's initialization (``N(0, 0.02)`` kernels) for an example batch."""
        params = self.init(key, example)["params"]
        leaves, tree = jax.tree_util.tree_flatten_with_path(params)
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        out = []
        for (path, leaf), k in zip(leaves, keys):
            name = getattr(path[-1], "key", "")
            out.append(0.02 * jax.random.normal(k, leaf.shape, leaf.dtype) if name == "kernel"
                       else leaf)
        return jax.tree.unflatten(tree, out)


def patchgan_discriminator(layers: int = 3, channels: int = 64) -> Discriminator:
    """The :class:`PatchGAN` as a :class:`~jvae.base.Discriminator`.

    Args:
      layers: stride-2 convolutions.
      channels: channels of the first convolution.
    """
    if layers < 1 or channels < 1:
        raise ValueError(f"a PatchGAN needs layers >= 1 and channels >= 1, got {layers}, {channels}")
    module = PatchGAN(layers, channels)
    return Discriminator(module.init_weights, lambda params, x: module.apply({"params": params}, x))


def output_size(size: int, layers: int = 3) -> int:
    """Patch logits along an image side of ``size`` pixels (0 or less: the image is too small)."""
    for _ in range(layers):
        size = (size + 2 - 4) // 2 + 1 if size >= 2 else 0
    return size - 2


def receptive_field(layers: int = 3) -> int:
    """Pixels on a side that one patch logit sees (70 for 3 layers)."""
    field = 1
    # Back from the logit: two stride-1 4x4 convs, then ``layers`` stride-2 ones.
    for stride in [1, 1] + [2] * layers:
        field = (field - 1) * stride + 4
    return field
