"""Build Flax Linen networks from compact, JSON-serialisable layer specs.

A network is described by a list of strings, one per layer, e.g.::

    ["C2d_3_64_3_1_1", "2*VAERB_64_64", "VAEA_64", "GN_32_64", "SiLU",
     "MaxP_2", "UpS_2", "C2d_64_3_3_1_1"]

Every layer works on channel-last (NHWC) arrays, which is what ``jax.lax``
convolutions expect. The available tokens are:

* ``C2d_in_out_kernel_stride_padding[_after]``: 2-D convolution with a square
  kernel and explicit zero padding: ``padding`` rows/columns before (top,
  left) and ``after`` after (bottom, right), ``after = padding`` when omitted
  (PyTorch's symmetric padding), so the output size is
  ``(H + padding + after - kernel) // stride + 1``. ``C2d_c_c_3_2_0_1`` is
  Stable Diffusion's downsampling (``diffusers``' ``Downsample2D`` pads
  ``(0, 1, 0, 1)`` and convolves with stride 2).
* ``VAERB_in_out[_groups]``: residual block ``GroupNorm -> SiLU -> conv3x3 ->
  GroupNorm -> SiLU -> conv3x3`` plus a skip connection, which is a 1x1
  convolution when ``in != out`` and the identity otherwise. Both GroupNorms
  use ``groups`` groups (it must divide ``in`` and ``out``); when omitted each
  uses :func:`default_num_groups` of its channels.
* ``VAEA_channels[_groups]``: single-head self-attention over the ``H * W``
  spatial positions with a residual connection, after a GroupNorm of
  ``groups`` groups (:func:`default_num_groups` when omitted).
* ``GN_groups_channels``: GroupNorm; ``groups`` must divide ``channels``.
* ``SiLU``: SiLU (swish) activation.
* ``MaxP_kernel_stride`` or ``MaxP_k`` (kernel = stride = k): max pooling
  without padding.
* ``UpS_factor``: nearest-neighbour upsampling by an integer factor.
* ``C2dNB_in_out_kernel_stride_padding``: ``C2d`` without a bias.
* ``TAEB_in_out``: the residual block of the tiny autoencoder TAESD
  (``diffusers``' ``AutoencoderTinyBlock``): ``ReLU(conv3x3 -> ReLU -> conv3x3
  -> ReLU -> conv3x3 + skip)``, the skip a bias-free 1x1 convolution when
  ``in != out`` and the identity otherwise. No normalisation: its receptive
  field is bounded, so tiles of an image join exactly.
* ``ReLU``: ReLU activation.
* ``Clamp_m``: the soft clamp ``m * tanh(x / m)`` (TAESD's decoder input).

For 1-D signals (per-example shape ``(length, channels)``, e.g. audio
chunks) the same layers act along the length:
``C1d_in_out_kernel_stride_padding``, ``VAERB1d_in_out`` (kernel-3 convs),
``MaxP1d_kernel_stride`` or ``MaxP1d_k``, and ``UpS1d_factor``; ``GN`` and
``SiLU`` apply unchanged. A 1-D input is carried as ``(length, 1, channels)``
internally, so shapes report a width of 1.

The blocks of jvae's default audio architecture (:mod:`jvae.layers.audio`;
SoundStream-style, Zeghidour et al., 2021, arXiv:2107.03312) are tokens too,
so an audio net can be written out layer by layer:

* ``RU1d_channels_dilation[_kernel]``: residual unit ``x + conv1x1(ELU(
  conv_kernel(ELU(x))))`` whose ``kernel``-tap convolution (3 when omitted)
  has its taps ``dilation`` samples apart, ``"SAME"``-padded: the length is kept.
* ``Down1d_in_out_stride``: ``ELU`` then a convolution of ``2 * stride`` taps
  and stride ``stride``: the length (a multiple of ``stride``) is divided by
  ``stride``.
* ``Up1d_in_out_stride``: ``ELU`` then a transposed convolution of ``2 *
  stride`` taps: the length is multiplied by ``stride``.
* ``Head1d_in_out_kernel``: ``ELU`` then a ``"SAME"``-padded convolution of
  ``kernel`` taps, the nets' last layer (the length is kept).
* ``PQMF_bands``: a mono signal ``(T, 1)`` as ``bands`` PQMF sub-bands
  ``(T / bands, bands)`` (:mod:`jvae.layers.pqmf`; no parameters).
* ``IPQMF_bands``: sub-bands ``(L, bands)`` back to the signal ``(L * bands, 1)``.

For example, a two-stage encoder for ``(T, 1)`` clips (``T`` a multiple of 8)
emitting the mean and raw scale of 8 latent channels per frame of 8 samples::

    ["C1d_1_16_7_1_3", "RU1d_16_1", "RU1d_16_3", "RU1d_16_9", "Down1d_16_32_2",
     "RU1d_32_1", "RU1d_32_3", "RU1d_32_9", "Down1d_32_64_4", "Head1d_64_16_9"]

:func:`jvae.layers.audio.audio_specs` writes the default architecture out so.

Any entry may be prefixed with ``N*`` to repeat it ``N`` times, e.g.
``"2*VAERB_256_256"``.

This module is the grammar: :func:`parse_spec` and :func:`load_spec`. Shapes
are inferred by :mod:`jvae.layers.spec_shapes`; :func:`jvae.layers.spec_blocks.build`
parses and shape-checks a spec eagerly, so a typo in a config fails before any
parameters are initialised or training starts, and returns its
:class:`~jvae.layers.spec_blocks.SpecNet`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Union

from jvae.base import JvaeError

__all__ = ["KNOWN_TOKENS", "MAX_REPEAT", "LayerSpec", "Shape", "SpecError", "SpecSource",
           "load_spec", "parse_spec"]


Shape = tuple[int, int, int]


SpecSource = Union[str, os.PathLike, Sequence[str]]


class SpecError(JvaeError, ValueError):
    """Raised when a layer spec is malformed or shape-inconsistent."""


# Argument names per token, in positional order. ``MaxP`` also accepts a
# single argument (kernel == stride); ``parse_spec`` normalises it to two so
# downstream code never has to special-case the short form. The trailing
# arguments of the tokens in ``_OPTIONAL_ARGS`` may be left out and are kept
# as written (``args`` has 5 or 6 entries for ``C2d``).
_ARG_NAMES: dict[str, tuple[str, ...]] = {
    "C2d": ("in", "out", "kernel", "stride", "padding", "after"),
    "VAERB": ("in", "out", "groups"),
    "VAEA": ("channels", "groups"),
    "GN": ("groups", "channels"),
    "SiLU": (),
    "MaxP": ("kernel", "stride"),
    "UpS": ("factor",),
    "C2dNB": ("in", "out", "kernel", "stride", "padding"),
    "TAEB": ("in", "out"),
    "ReLU": (),
    "Clamp": ("magnitude",),
    # 1-D signals (length, channels).
    "C1d": ("in", "out", "kernel", "stride", "padding"),
    "VAERB1d": ("in", "out"),
    "MaxP1d": ("kernel", "stride"),
    "UpS1d": ("factor",),
    # Blocks of the default audio architecture (jvae.layers.audio).
    "RU1d": ("channels", "dilation", "kernel"),
    "Down1d": ("in", "out", "stride"),
    "Up1d": ("in", "out", "stride"),
    "Head1d": ("in", "out", "kernel"),
    "PQMF": ("bands",),
    "IPQMF": ("bands",),
}


KNOWN_TOKENS: tuple[str, ...] = tuple(_ARG_NAMES)


# Number of trailing arguments that may be omitted.
_OPTIONAL_ARGS = {"C2d": 1, "VAERB": 1, "VAEA": 1, "RU1d": 1}


# Padding is the only argument for which zero is meaningful.
_NON_NEGATIVE_ARGS = frozenset({("C2d", "padding"), ("C2d", "after"), ("C2dNB", "padding"),
                                ("C1d", "padding")})


# A cap on ``N*`` so a stray large number in a config cannot silently build
# an enormous list (or exhaust memory) before anything else is checked.
MAX_REPEAT = 4096


# ``int()`` accepts signs, surrounding whitespace and non-ASCII digits; a spec
# should only ever contain plain decimal digits.
_INT_RE = re.compile(r"[0-9]+", re.ASCII)


class LayerSpec(NamedTuple):
    """One parsed (and repetition-expanded) layer.

    Attributes:
      token: Layer type, one of :data:`KNOWN_TOKENS`.
      args: Integer arguments in canonical positional order (``MaxP_k`` is
        stored as ``(k, k)``).
      index: Position of the entry in the original, unexpanded spec list, so
        errors and debugging point at what the user actually wrote.
      text: The original entry text, including any ``N*`` prefix.
    """

    token: str
    args: tuple[int, ...]
    index: int
    text: str

    @property
    def named_args(self) -> dict[str, int]:
        """Arguments keyed by their documented names."""
        return dict(zip(_ARG_NAMES[self.token], self.args))

    def format(self) -> str:
        """Returns the canonical spec string for this single layer.

        The result has no repetition prefix and always spells out both
        ``MaxP`` arguments; reparsing it yields the same ``token`` and
        ``args``.
        """
        return "_".join([self.token, *(str(a) for a in self.args)])


def entry_error(index: int, text: Any, message: str) -> SpecError:
    return SpecError(f"layer spec entry {index} ({text!r}): {message}")


def _digits_to_int(raw: str) -> int | None:
    if not _INT_RE.fullmatch(raw):
        return None
    try:
        return int(raw)
    except ValueError:
        # Python refuses to convert absurdly long digit strings; such a value
        # could never be a sensible layer size anyway.
        return None


def _parse_int(index: int, text: str, name: str, raw: str, minimum: int) -> int:
    value = _digits_to_int(raw)
    if value is None:
        raise entry_error(
            index, text, f"argument {name!r} must be an integer, got {raw[:40]!r}"
        )
    if value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise entry_error(
            index, text, f"argument {name!r} must be {kind}, got {value}"
        )
    return value


def _parse_entry(index: int, text: Any) -> list[LayerSpec]:
    if not isinstance(text, str):
        raise entry_error(
            index, text, f"expected a string, got {type(text).__name__}"
        )
    body = text.strip()
    if not body:
        raise entry_error(index, text, "empty entry")

    count = 1
    if "*" in body:
        count_raw, body = (part.strip() for part in body.split("*", 1))
        parsed = _digits_to_int(count_raw)
        if parsed is None:
            raise entry_error(
                index,
                text,
                "repetition count must be a positive integer, "
                f"got {count_raw[:40]!r}",
            )
        count = parsed
        if not 1 <= count <= MAX_REPEAT:
            raise entry_error(
                index,
                text,
                f"repetition count must be between 1 and {MAX_REPEAT}, got {count}",
            )
        if not body:
            raise entry_error(index, text, "nothing to repeat after '*'")
        if "*" in body:
            raise entry_error(index, text, "at most one 'N*' prefix is allowed")

    token, *raw_args = body.split("_")
    if token not in _ARG_NAMES:
        raise entry_error(
            index,
            text,
            f"unknown token {token!r}; known tokens: {', '.join(KNOWN_TOKENS)}",
        )

    names = _ARG_NAMES[token]
    if token in ("MaxP", "MaxP1d") and len(raw_args) == 1:
        names = ("kernel",)
    optional = _OPTIONAL_ARGS.get(token, 0)
    if optional and len(names) - optional <= len(raw_args) < len(names):
        names = names[: len(raw_args)]
    if len(raw_args) != len(names):
        if token in ("MaxP", "MaxP1d"):
            expected = "1 or 2 arguments (kernel[, stride])"
        elif token in _OPTIONAL_ARGS:
            full = _ARG_NAMES[token]
            required = len(full) - optional
            expected = (f"{required} or {len(full)} arguments "
                        f"({', '.join(full[:required])}[, {', '.join(full[required:])}])")
        else:
            expected = f"{len(names)} argument(s)" + (
                f" ({', '.join(names)})" if names else "")
        raise entry_error(
            index, text, f"{token} expects {expected}, got {len(raw_args)}"
        )

    args = tuple(
        _parse_int(
            index,
            text,
            name,
            raw,
            minimum=0 if (token, name) in _NON_NEGATIVE_ARGS else 1,
        )
        for name, raw in zip(names, raw_args)
    )
    if token in ("MaxP", "MaxP1d") and len(args) == 1:
        args = (args[0], args[0])

    layer = LayerSpec(token=token, args=args, index=index, text=text)
    return [layer] * count


def _decode_json(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    # ValueError also covers over-long integer literals; RecursionError comes
    # from pathologically nested brackets.
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"layer spec is not valid JSON: {exc}") from None
    return value


def parse_spec(spec: Union[str, Sequence[str]]) -> list[LayerSpec]:
    """Parses a layer spec into a flat list of layers.

    Args:
      spec: A sequence of layer-spec strings, or a JSON string encoding one.

    Returns:
      One :class:`LayerSpec` per layer, with ``N*`` repetitions expanded (all
      copies share the ``index`` and ``text`` of their original entry).

    Raises:
      SpecError: If the spec is not a list of strings, is invalid JSON, or any
        entry is empty, has an unknown token, the wrong number of arguments,
        a non-integer or out-of-range argument, or a bad repetition count.
        The message names the offending entry's index and text.
    """
    if isinstance(spec, (bytes, bytearray)):
        spec = spec.decode("utf-8", errors="replace")
    if isinstance(spec, str):
        spec = _decode_json(spec)
    # Mappings and sets are iterable but have no meaningful layer order.
    if not isinstance(spec, Sequence) or isinstance(spec, (str, bytes, bytearray)):
        raise SpecError(
            f"layer spec must be a list of strings, got {type(spec).__name__}"
        )
    layers: list[LayerSpec] = []
    for index, entry in enumerate(spec):
        layers.extend(_parse_entry(index, entry))
    return layers


def load_spec(source: SpecSource) -> tuple[str, ...]:
    """Normalises a spec given as a list, JSON text or ``.json`` path.

    A string is treated as a file path when it names an existing file or ends
    in ``.json``, and as JSON text otherwise.

    Args:
      source: A sequence of spec strings, a JSON string, or a path (``str`` or
        :class:`os.PathLike`) to a JSON file holding a list of spec strings.

    Returns:
      The spec entries as a tuple of strings (hashable, so usable as a Flax
      module field).

    Raises:
      SpecError: If the file cannot be read, the JSON is invalid, or the
        result is not a list of strings.
    """
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and (os.path.isfile(source) or source.strip().endswith(".json"))
    ):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(
                f"could not read layer spec file {path!r}: {exc}"
            ) from None
        entries = _decode_json(text)
    elif isinstance(source, str):
        entries = _decode_json(source)
    else:
        entries = source
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise SpecError(
            f"layer spec must be a list of strings, got {type(entries).__name__}"
        )
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise entry_error(
                index, entry, f"expected a string, got {type(entry).__name__}"
            )
    return tuple(entries)
