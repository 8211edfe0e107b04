"""Stable Diffusion's VAE as a spec net: ``diffusers`` AutoencoderKL layouts and weights.

``diffusers`` saves an ``AutoencoderKL`` as a folder holding ``config.json``
and ``diffusion_pytorch_model.safetensors``. :func:`diffusers_layout` turns
its config into a jvae architecture and a map from every tensor name to a
jvae parameter; :func:`tensors_to_params` and :func:`params_to_tensors`
convert weights both ways (``jvae import-weights`` / ``export-weights``,
:mod:`jvae.app.modes.weights`, make run directories of them).

The jvae model is a spec net (:mod:`jvae.layers.spec`) that computes what
``AutoencoderKL`` computes (Rombach et al., 2022, arXiv:2112.10752): its layer
list is generated from the diffusers config (for the SD 1.x/2.x layout it is
the packaged ``sd_vae``), the posterior reads the encoder's second half of
channels as a log-variance (``posterior_scale="logvar"``) and the nets work
on images in ``[-1, 1]`` (the architecture's ``data_range``), while jvae's
data stay in ``[0, 1]``. Each tensor is mapped by name: PyTorch convolution
kernels ``(out, in, kh, kw)`` become Flax's ``(kh, kw, in, out)``, linear
weights ``(out, in)`` become ``(in, out)``, GroupNorm ``weight`` is Flax's
``scale``. Tensors are read with the ``safetensors`` package's NumPy backend:
no PyTorch is needed.

The latent scaling factor of the diffusers config (0.18215 for SD 1.x/2.x:
diffusion models see ``scaling_factor * z``) travels with the layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jvae.base import JvaeError
from jvae.layers.spec import parse_spec
from jvae.layers.spec_nets import load_architecture
from jvae.layers.spec_shapes import default_num_groups

__all__ = ["SCALING_FACTOR", "SD_CONFIG", "TINY_CONFIG", "KNOWN_LAYOUTS", "KL", "TINY", "KINDS",
           "WEIGHTS_FILE", "CONFIG_FILE", "WeightsError", "Tensor",
           "Layout", "diffusers_layout", "spec_layers", "packaged_name", "read_tensors",
           "tensors_to_params", "params_to_tensors", "leaf_paths", "matching_layouts"]

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
KL, TINY = "AutoencoderKL", "AutoencoderTiny"
KINDS = (KL, TINY)
CONFIG_FILE = "config.json"
SCALING_FACTOR = 0.18215

# The SD 1.x/2.x VAE (e.g. stabilityai/sd-vae-ft-mse), the packaged ``sd_vae``.
SD_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "sample_size": 256, "scaling_factor": SCALING_FACTOR,
    "mid_block_add_attention": True, "use_quant_conv": True, "use_post_quant_conv": True,
}
# diffusers' defaults for keys an older config.json may lack.
_DEFAULTS = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
             "norm_num_groups": 32, "act_fn": "silu", "sample_size": 32,
             "scaling_factor": SCALING_FACTOR, "mid_block_add_attention": True,
             "use_quant_conv": True, "use_post_quant_conv": True}

# diffusers' AutoencoderTiny defaults: TAESD (madebyollin/taesd), 1.22M parameters per side.
TINY_CONFIG: dict[str, Any] = {
    "_class_name": TINY, "in_channels": 3, "out_channels": 3,
    "encoder_block_out_channels": [64, 64, 64, 64], "decoder_block_out_channels": [64, 64, 64, 64],
    "act_fn": "relu", "upsample_fn": "nearest", "latent_channels": 4,
    "upsampling_scaling_factor": 2, "num_encoder_blocks": [1, 3, 3, 3],
    "num_decoder_blocks": [3, 3, 3, 1], "latent_magnitude": 3, "latent_shift": 0.5,
    "force_upcast": False, "scaling_factor": 1.0, "shift_factor": 0.0,
}

# The published autoencoders of the Stable Diffusion family, by the keys that
# set their layout and latent factors. Files are told apart by their tensors:
# sd and sdxl share one set, as do sd3 and flux, and the TAESD variants.
KNOWN_LAYOUTS: dict[str, dict[str, Any]] = {
    "sd": SD_CONFIG,
    "sdxl": {**SD_CONFIG, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
    "sd3": {**SD_CONFIG, "latent_channels": 16, "use_quant_conv": False,
            "use_post_quant_conv": False, "sample_size": 1024, "scaling_factor": 1.5305,
            "shift_factor": 0.0609, "force_upcast": True},
    "flux": {**SD_CONFIG, "latent_channels": 16, "use_quant_conv": False,
             "use_post_quant_conv": False, "sample_size": 1024, "scaling_factor": 0.3611,
             "shift_factor": 0.1159, "force_upcast": True},
    "taesd": TINY_CONFIG,
    "taesd3": {**TINY_CONFIG, "latent_channels": 16},
}

# Attention tensor names of diffusers before 0.14 (still in many checkpoints).
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class WeightsError(JvaeError, ValueError):
    """Weights or a config that cannot be imported or exported; the message says why."""


class Tensor(NamedTuple):
    """One diffusers tensor and where it lives in jvae's parameters.

    Attributes:
      name: the diffusers state-dict name, e.g. ``encoder.conv_in.weight``.
      path: keys into jvae's parameter pytree, e.g.
        ``("encoder", "net", "layers_0", "kernel")``.
      kind: ``conv`` (``(o, i, kh, kw) <-> (kh, kw, i, o)``), ``linear``
        (``(o, i) <-> (i, o)``) or ``vector`` (as is).
      shape: its shape in the diffusers state dict.
    """

    name: str
    path: tuple[str, ...]
    kind: str
    shape: tuple[int, ...] = ()


class Layout(NamedTuple):
    """A diffusers autoencoder config as a jvae architecture plus its tensor map.

    Attributes:
      architecture: a jvae architecture dict (``latent``, ``data_range``,
        ``encoder``, ``decoder`` spec lists).
      tensors: every tensor of the diffusers state dict, in its order.
      config: the diffusers config with defaults filled in.
      kind: the diffusers class, ``AutoencoderKL`` (a Normal posterior whose
        raw scale is a log-variance) or ``AutoencoderTiny`` (a deterministic
        code: jvae's ``ae`` model).
    """

    architecture: dict[str, Any]
    tensors: tuple[Tensor, ...]
    config: dict[str, Any]
    kind: str = "AutoencoderKL"

    @property
    def factor(self) -> int:
        """The nets' total stride: image size over latent size."""
        if self.kind == TINY:
            return 2 ** (len(self.config["num_encoder_blocks"]) - 1)
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])


class _Net:
    """Appends spec entries and the tensors of each to one spec net."""

    def __init__(self, part: str, groups: int):
        self.part, self.groups = part, groups
        self.spec: list[str] = []
        self.tensors: list[Tensor] = []

    def _add(self, entry: str, params: Sequence[tuple[str, str, str, tuple[int, ...]]]) -> None:
        base = (self.part, "net", f"layers_{len(self.spec)}")
        for name, key, kind, shape in params:
            self.tensors.append(Tensor(name, base + tuple(key.split("/")), kind, shape))
        self.spec.append(entry)

    def _groups_arg(self, *channels: int) -> str:
        default = all(default_num_groups(c) == self.groups for c in channels)
        return "" if default else f"_{self.groups}"

    @staticmethod
    def _conv_params(name: str, key: str, c_in: int, c_out: int, kernel: int,
                     bias: bool = True) -> list[tuple[str, str, str, tuple[int, ...]]]:
        weight = (f"{name}.weight", f"{key}kernel", "conv", (c_out, c_in, kernel, kernel))
        return [weight, (f"{name}.bias", f"{key}bias", "vector", (c_out,))] if bias else [weight]

    @staticmethod
    def _norm_params(name: str, key: str, channels: int
                     ) -> list[tuple[str, str, str, tuple[int, ...]]]:
        return [(f"{name}.weight", f"{key}scale", "vector", (channels,)),
                (f"{name}.bias", f"{key}bias", "vector", (channels,))]

    def conv(self, name: str, c_in: int, c_out: int, kernel: int, stride: int = 1,
             padding: tuple[int, int] | None = None, bias: bool = True) -> None:
        lo, hi = padding or (kernel // 2, kernel // 2)
        pad = f"{lo}" if lo == hi else f"{lo}_{hi}"
        token = "C2d" if bias else "C2dNB"  # C2dNB pads symmetrically
        self._add(f"{token}_{c_in}_{c_out}_{kernel}_{stride}_{pad}",
                  self._conv_params(name, "", c_in, c_out, kernel, bias))

    def resnet(self, name: str, c_in: int, c_out: int) -> None:
        params = (self._norm_params(f"{name}.norm1", "norm1/", c_in)
                  + self._conv_params(f"{name}.conv1", "conv1/", c_in, c_out, 3)
                  + self._norm_params(f"{name}.norm2", "norm2/", c_out)
                  + self._conv_params(f"{name}.conv2", "conv2/", c_out, c_out, 3))
        if c_in != c_out:
            params += self._conv_params(f"{name}.conv_shortcut", "skip/", c_in, c_out, 1)
        self._add(f"VAERB_{c_in}_{c_out}{self._groups_arg(c_in, c_out)}", params)

    def attention(self, name: str, channels: int) -> None:
        params = self._norm_params(f"{name}.group_norm", "norm/", channels)
        for torch_name, key in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                                ("to_out.0", "proj_out")):
            params += [(f"{name}.{torch_name}.weight", f"{key}/kernel", "linear",
                        (channels, channels)),
                       (f"{name}.{torch_name}.bias", f"{key}/bias", "vector", (channels,))]
        self._add(f"VAEA_{channels}{self._groups_arg(channels)}", params)

    def norm_silu(self, name: str, channels: int) -> None:
        self._add(f"GN_{self.groups}_{channels}", self._norm_params(name, "", channels))
        self._add("SiLU", [])

    def mid_block(self, name: str, channels: int, attention: bool) -> None:
        self.resnet(f"{name}.resnets.0", channels, channels)
        if attention:
            self.attention(f"{name}.attentions.0", channels)
        self.resnet(f"{name}.resnets.1", channels, channels)

    def tiny_block(self, name: str, c_in: int, c_out: int) -> None:
        params = []
        for i, torch_index in enumerate((0, 2, 4)):
            params += self._conv_params(f"{name}.conv.{torch_index}", f"conv_{i}/",
                                        c_in if i == 0 else c_out, c_out, 3)
        if c_in != c_out:
            params += self._conv_params(f"{name}.skip", "skip/", c_in, c_out, 1, bias=False)
        self._add(f"TAEB_{c_in}_{c_out}", params)


def _checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in, or WeightsError for a layout jvae cannot build."""
    cfg = {**_DEFAULTS, **config}
    channels = cfg.get("block_out_channels")
    if not (isinstance(channels, (list, tuple)) and channels
            and all(type(c) is int and c > 0 for c in channels)):
        raise WeightsError(f"config.json: block_out_channels must be a list of positive "
                           f"integers, got {channels!r}")
    for key, block in (("down_block_types", "DownEncoderBlock2D"),
                       ("up_block_types", "UpDecoderBlock2D")):
        types = list(cfg.get(key) or [block] * len(channels))
        if types != [block] * len(channels):
            raise WeightsError(f"config.json: {key} {types} is not supported; jvae imports "
                               f"AutoencoderKL with {len(channels)} x {block}")
    if cfg["act_fn"] != "silu":
        raise WeightsError(f"config.json: act_fn {cfg['act_fn']!r} is not supported (silu only)")
    for key in ("in_channels", "out_channels", "latent_channels", "layers_per_block",
                "norm_num_groups"):
        if not (type(cfg[key]) is int and cfg[key] > 0):
            raise WeightsError(f"config.json: {key} must be a positive integer, got {cfg[key]!r}")
    if any(c % cfg["norm_num_groups"] for c in channels):
        raise WeightsError(f"config.json: norm_num_groups={cfg['norm_num_groups']} does not "
                           f"divide every block_out_channels {list(channels)}")
    return cfg


def diffusers_layout(config: Mapping[str, Any]) -> Layout:
    """The jvae architecture and tensor map of a diffusers autoencoder config.

    ``_class_name`` picks the family: ``AutoencoderKL`` (the default, as
    diffusers reads a config without it) or ``AutoencoderTiny``
    (:func:`_tiny_layout`).

    Args:
      config: the ``config.json`` of the folder, as a dict.

    Returns:
      A :class:`Layout`.

    Raises:
      WeightsError: another class, or block types, activation or sizes jvae
        cannot build.
    """
    kind = config.get("_class_name", KL)
    if kind == TINY:
        return _tiny_layout(config)
    if kind != KL:
        raise WeightsError(f"config.json describes a {kind}; jvae imports {' and '.join(KINDS)}")
    return _kl_layout(config)


def _kl_layout(config: Mapping[str, Any]) -> Layout:
    """The jvae architecture and tensor map of an AutoencoderKL config.

    Mirrors diffusers' ``Encoder`` and ``Decoder``: ``conv_in``; per block
    ``layers_per_block`` (decoder: one more) residual blocks, then a
    downsampling conv padded ``(0, 1)`` on each axis (decoder: nearest
    upsampling by 2 and a conv) except after the last; a mid block (residual,
    attention, residual); GroupNorm, SiLU, ``conv_out``; the 1x1
    ``quant_conv`` / ``post_quant_conv`` around the latent.

    Args:
      config: the ``config.json`` of an ``AutoencoderKL`` folder, as a dict.

    Returns:
      A :class:`Layout`.

    Raises:
      WeightsError: block types, activation or sizes jvae cannot build.
    """
    cfg = _checked_config(config)
    ch, n, lat = list(cfg["block_out_channels"]), cfg["layers_per_block"], cfg["latent_channels"]
    enc, dec = _Net("encoder", cfg["norm_num_groups"]), _Net("decoder", cfg["norm_num_groups"])

    enc.conv("encoder.conv_in", cfg["in_channels"], ch[0], 3)
    c = ch[0]
    for i, out in enumerate(ch):
        for j in range(n):
            enc.resnet(f"encoder.down_blocks.{i}.resnets.{j}", c, out)
            c = out
        if i < len(ch) - 1:
            enc.conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", c, c, 3, 2, (0, 1))
    enc.mid_block("encoder.mid_block", c, cfg["mid_block_add_attention"])
    enc.norm_silu("encoder.conv_norm_out", c)
    enc.conv("encoder.conv_out", c, 2 * lat, 3)
    if cfg["use_quant_conv"]:
        enc.conv("quant_conv", 2 * lat, 2 * lat, 1)

    if cfg["use_post_quant_conv"]:
        dec.conv("post_quant_conv", lat, lat, 1)
    c = ch[-1]
    dec.conv("decoder.conv_in", lat, c, 3)
    dec.mid_block("decoder.mid_block", c, cfg["mid_block_add_attention"])
    for i, out in enumerate(reversed(ch)):
        for j in range(n + 1):
            dec.resnet(f"decoder.up_blocks.{i}.resnets.{j}", c, out)
            c = out
        if i < len(ch) - 1:
            dec._add("UpS_2", [])
            dec.conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", c, c, 3)
    dec.norm_silu("decoder.conv_norm_out", c)
    dec.conv("decoder.conv_out", c, cfg["out_channels"], 3)

    factor = 2 ** (len(ch) - 1)
    architecture = {
        "description": f"diffusers AutoencoderKL (block_out_channels {ch}, layers_per_block {n}, "
                       f"latent_channels {lat}, norm_num_groups {cfg['norm_num_groups']}): "
                       f"latent at 1/{factor} resolution; H and W divisible by {factor}",
        "latent": "spatial", "data_range": [-1, 1], "encoder": enc.spec, "decoder": dec.spec}
    return Layout(architecture, tuple(sorted(enc.tensors + dec.tensors, key=_state_dict_rank)),
                  cfg)


_TINY_LISTS = ("encoder_block_out_channels", "decoder_block_out_channels", "num_encoder_blocks",
               "num_decoder_blocks")


def _checked_tiny_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """An AutoencoderTiny config with defaults filled in, or WeightsError."""
    cfg = {**TINY_CONFIG, **config}
    for key in _TINY_LISTS:
        value = cfg[key]
        if not (isinstance(value, (list, tuple)) and value
                and all(type(c) is int and c > 0 for c in value)):
            raise WeightsError(f"config.json: {key} must be a list of positive integers, "
                               f"got {value!r}")
    for side in ("encoder", "decoder"):
        channels, blocks = cfg[f"{side}_block_out_channels"], cfg[f"num_{side}_blocks"]
        if len(channels) != len(blocks):
            raise WeightsError(f"config.json: {side}_block_out_channels and num_{side}_blocks "
                               "differ in length")
        # diffusers' own modules only fit together when the widths agree.
        if len(set(channels)) != 1:
            raise WeightsError(f"config.json: {side}_block_out_channels {list(channels)} differ; "
                               "AutoencoderTiny needs one width per side")
    for key in ("in_channels", "out_channels", "latent_channels", "upsampling_scaling_factor"):
        if not (type(cfg[key]) is int and cfg[key] > 0):
            raise WeightsError(f"config.json: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["act_fn"] != "relu" or cfg["upsample_fn"] != "nearest":
        raise WeightsError(f"config.json: act_fn {cfg['act_fn']!r} with upsample_fn "
                           f"{cfg['upsample_fn']!r} is not supported (relu and nearest only)")
    if len(cfg["num_encoder_blocks"]) != len(cfg["num_decoder_blocks"]) or \
            cfg["upsampling_scaling_factor"] != 2:
        raise WeightsError("config.json: the decoder must upsample by 2 as often as the encoder "
                           "downsamples")
    return cfg


def _tiny_layout(config: Mapping[str, Any]) -> Layout:
    """The jvae architecture and tensor map of an AutoencoderTiny (TAESD) config.

    Mirrors diffusers' ``EncoderTiny`` and ``DecoderTiny`` (Bohan, 2023,
    github.com/madebyollin/taesd). The encoder: a conv, then per level a
    bias-free stride-2 conv (not on the first) and ``num_encoder_blocks``
    :class:`~jvae.layers.spec_blocks.TinyBlock` s, then a conv to the latent
    channels. The decoder: the clamp ``3 tanh(z / 3)``, a conv and ReLU, then
    per level its blocks, a nearest upsampling by 2 and a bias-free conv (the
    last level: a conv with bias to the image channels). diffusers maps images
    from ``[-1, 1]`` to TAESD's ``[0, 1]`` and back, so the nets see jvae's
    ``[0, 1]`` images unchanged (no ``data_range``). The code is deterministic
    (a point posterior).
    """
    cfg = _checked_tiny_config(config)
    lat = cfg["latent_channels"]
    enc, dec = _Net("encoder", 1), _Net("decoder", 1)

    c = cfg["in_channels"]
    index = 0
    for i, (width, blocks) in enumerate(zip(cfg["encoder_block_out_channels"],
                                            cfg["num_encoder_blocks"])):
        if i == 0:
            enc.conv(f"encoder.layers.{index}", c, width, 3)
        else:
            enc.conv(f"encoder.layers.{index}", c, width, 3, 2, bias=False)
        c, index = width, index + 1
        for _ in range(blocks):
            enc.tiny_block(f"encoder.layers.{index}", c, c)
            index += 1
    enc.conv(f"encoder.layers.{index}", c, lat, 3)

    widths, counts = cfg["decoder_block_out_channels"], cfg["num_decoder_blocks"]
    dec._add("Clamp_3", [])
    dec.conv("decoder.layers.0", lat, widths[0], 3)
    dec._add("ReLU", [])
    c, index = widths[0], 2
    for i, (width, blocks) in enumerate(zip(widths, counts)):
        for _ in range(blocks):
            dec.tiny_block(f"decoder.layers.{index}", c, width)
            c, index = width, index + 1
        last = i == len(widths) - 1
        if not last:
            dec._add("UpS_2", [])
            index += 1
        dec.conv(f"decoder.layers.{index}", c, cfg["out_channels"] if last else c, 3,
                 bias=last)
        c, index = (cfg["out_channels"] if last else c), index + 1

    factor = 2 ** (len(cfg["num_encoder_blocks"]) - 1)
    architecture = {
        "description": f"diffusers AutoencoderTiny (TAESD; widths {widths[0]}, encoder blocks "
                       f"{list(cfg['num_encoder_blocks'])}, decoder blocks {list(counts)}, "
                       f"latent_channels {lat}): a deterministic latent at 1/{factor} "
                       f"resolution; H and W divisible by {factor}",
        "latent": "spatial", "encoder": enc.spec, "decoder": dec.spec}
    return Layout(architecture, tuple(enc.tensors + dec.tensors), cfg, TINY)


# diffusers' state-dict order (its modules' registration order): encoder, decoder,
# quant_conv, post_quant_conv; in each net the mid block follows the down/up
# blocks and lists its attention before its residual blocks.
_TOP_ORDER = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_NET_ORDER = ("conv_in.", "down_blocks.", "up_blocks.", "mid_block.attentions.",
              "mid_block.resnets.", "conv_norm_out.", "conv_out.")


def _state_dict_rank(t: Tensor) -> tuple[int, int]:
    top = next(i for i, p in enumerate(_TOP_ORDER) if t.name.startswith(p))
    inner = t.name[len(_TOP_ORDER[top]):]
    return top, next((i for i, p in enumerate(_NET_ORDER) if inner.startswith(p)), 0)


def spec_layers(spec: Sequence[str]) -> list[str]:
    """A spec's layers one per entry, in canonical form (``N*`` prefixes expanded)."""
    return [layer.format() for layer in parse_spec(list(spec))]


def packaged_name(architecture: Mapping[str, Any]) -> str | None:
    """``"sd_vae"`` when the architecture is exactly the packaged one, else None."""
    packaged = load_architecture("sd_vae")
    same = all(spec_layers(getattr(packaged, part)) == architecture[part]
               for part in ("encoder", "decoder"))
    return "sd_vae" if same and packaged.data_range == (-1.0, 1.0) else None


# --- tensors <-> parameters ------------------------------------------------------


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a safetensors file into NumPy arrays (NumPy backend, no PyTorch).

    Raises:
      WeightsError: a missing or unreadable file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} not found: --from must be a folder saved by diffusers' "
                           f"save_pretrained, holding {WEIGHTS_FILE} and {CONFIG_FILE}")
    try:
        with safe_open(str(path), framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise WeightsError(f"cannot read {path}: {e}") from None


def _modern_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames pre-0.14 attention tensors (``query`` ... ``proj_attn``) to today's."""
    out = {}
    for name, value in tensors.items():
        stem, _, leaf = name.rpartition(".")
        parent, _, module = stem.rpartition(".")
        if ".attentions." in name and module in _LEGACY_ATTENTION:
            name = f"{parent}.{_LEGACY_ATTENTION[module]}.{leaf}"
        out[name] = value
    return out


def _to_jvae(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind == "linear":
        # Old checkpoints store attention projections as 1x1 convolutions.
        return value.reshape(value.shape[:2]).T
    return value


def _to_diffusers(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return value.transpose(3, 2, 0, 1)
    if kind == "linear":
        return value.T
    return value


def _expected_shape(kind: str, jvae_shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_to_diffusers(kind, np.empty(jvae_shape, np.bool_)).shape)


def tensors_to_params(layout: Layout, tensors: Mapping[str, np.ndarray],
                      expected: Any = None, source: str = WEIGHTS_FILE) -> dict[str, Any]:
    """Maps diffusers tensors to a jvae parameter pytree (float32).

    Args:
      layout: from :func:`diffusers_layout`.
      tensors: name -> array, as read from the safetensors file.
      expected: optional pytree of jvae parameter shapes (e.g. from
        ``jax.eval_shape(vae.init, ...)``) every tensor is checked against.
      source: the file's name, for messages.

    Returns:
      ``{"encoder": ..., "decoder": ...}``.

    Raises:
      WeightsError: naming the first missing tensor, else the first extra one,
        else the first tensor of the wrong shape.
    """
    tensors = _modern_names(tensors)
    wanted = {t.name for t in layout.tensors}
    missing = [t.name for t in layout.tensors if t.name not in tensors]
    extra = [name for name in tensors if name not in wanted]
    if missing or extra:
        what = f"tensor {missing[0]!r} is missing" if missing else f"extra tensor {extra[0]!r}"
        raise WeightsError(f"{source} does not match the layout of its {CONFIG_FILE}: {what}; "
                           f"{_known_fit(tensors)}")
    params: dict[str, Any] = {}
    for t in layout.tensors:
        value = np.asarray(tensors[t.name])
        if not np.issubdtype(value.dtype, np.floating):
            raise WeightsError(f"{source}: tensor {t.name!r} has dtype {value.dtype}, not a float")
        if t.kind == "linear" and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value.reshape(value.shape[:2])
        value = np.ascontiguousarray(_to_jvae(t.kind, value.astype(np.float32)))
        if expected is not None:
            want = _lookup(expected, t.path)
            if want is None or tuple(want.shape) != value.shape:
                need = None if want is None else _expected_shape(t.kind, tuple(want.shape))
                raise WeightsError(f"{source}: tensor {t.name!r} has shape "
                                   f"{tuple(tensors[t.name].shape)}, the layout needs {need}")
        node = params
        for key in t.path[:-1]:
            node = node.setdefault(key, {})
        node[t.path[-1]] = value
    return params


def matching_layouts(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """The names of :data:`KNOWN_LAYOUTS` whose tensors (names and shapes) ``tensors`` has."""
    tensors = _modern_names(tensors)
    shapes = {name: tuple(np.shape(v)) for name, v in tensors.items()}
    found = []
    for name, config in KNOWN_LAYOUTS.items():
        layout = diffusers_layout(config)
        if set(shapes) == {t.name for t in layout.tensors} and all(
                shapes[t.name] in _shapes_of(t) for t in layout.tensors):
            found.append(name)
    return found


def _shapes_of(t: Tensor) -> tuple[tuple[int, ...], ...]:
    """The shapes diffusers may store a known layout's tensor in (old 1x1-conv attention too)."""
    return (t.shape,) if t.kind != "linear" else (t.shape, (*t.shape, 1, 1))


def _known_fit(tensors: Mapping[str, np.ndarray]) -> str:
    """One clause: which known layouts the file's tensors fit, or that they fit none."""
    fits = matching_layouts(tensors)
    if fits:
        return f"its tensors fit the {' / '.join(fits)} layout: use that model's {CONFIG_FILE}"
    return (f"nor do they fit a known layout ({', '.join(KNOWN_LAYOUTS)}); save the model "
            "again with save_pretrained")


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def params_to_tensors(layout: Layout, params: Any) -> dict[str, np.ndarray]:
    """Maps jvae parameters back to diffusers tensors (float32, contiguous).

    Raises:
      WeightsError: a parameter of the layout is missing from ``params``.
    """
    out = {}
    for t in layout.tensors:
        value = _lookup(params, t.path)
        if value is None:
            raise WeightsError(f"the run's parameters lack {'/'.join(t.path)} "
                               f"(diffusers tensor {t.name!r})")
        out[t.name] = np.ascontiguousarray(_to_diffusers(t.kind, np.asarray(value, np.float32)))
    return out


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(tree, Mapping):
        return [p for k in tree for p in leaf_paths(tree[k], prefix + (k,))]
    return [prefix]
