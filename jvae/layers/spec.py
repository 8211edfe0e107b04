"""Build Flax Linen networks from compact, JSON-serialisable layer specs.

A network is described by a list of strings, one per layer, e.g.::

    ["C2d_3_64_3_1_1", "2*VAERB_64_64", "VAEA_64", "GN_32_64", "SiLU",
     "MaxP_2", "UpS_2", "C2d_64_3_3_1_1"]

Every layer works on channel-last (NHWC) arrays, which is what ``jax.lax``
convolutions expect. The available tokens are:

* ``C2d_in_out_kernel_stride_padding``: 2-D convolution with a square kernel
  and explicit symmetric zero padding (PyTorch semantics), so the output size
  is ``(H + 2 * padding - kernel) // stride + 1``.
* ``VAERB_in_out``: residual block ``GroupNorm -> SiLU -> conv3x3 ->
  GroupNorm -> SiLU -> conv3x3`` plus a skip connection, which is a 1x1
  convolution when ``in != out`` and the identity otherwise. The GroupNorm
  group count is chosen by :func:`default_num_groups`.
* ``VAEA_channels``: single-head self-attention over the ``H * W`` spatial
  positions with a residual connection.
* ``GN_groups_channels``: GroupNorm; ``groups`` must divide ``channels``.
* ``SiLU``: SiLU (swish) activation.
* ``MaxP_kernel_stride`` or ``MaxP_k`` (kernel = stride = k): max pooling
  without padding.
* ``UpS_factor``: nearest-neighbour upsampling by an integer factor.

Any entry may be prefixed with ``N*`` to repeat it ``N`` times, e.g.
``"2*VAERB_256_256"``.

Specs are parsed and shape-checked eagerly by :func:`build`, so a typo in a
config fails before any parameters are initialised or training starts.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jvae.base import JvaeError

__all__ = [
    "KNOWN_TOKENS",
    "MAX_ELEMENTS",
    "MAX_REPEAT",
    "LayerSpec",
    "SpecError",
    "SpecNet",
    "VAEAttentionBlock",
    "VAEResBlock",
    "build",
    "default_num_groups",
    "infer_shapes",
    "load_spec",
    "output_shape",
    "parse_spec",
]

Shape = tuple[int, int, int]
SpecSource = Union[str, os.PathLike, Sequence[str]]


class SpecError(JvaeError, ValueError):
    """Raised when a layer spec is malformed or shape-inconsistent."""


# Argument names per token, in positional order. ``MaxP`` also accepts a
# single argument (kernel == stride); ``parse_spec`` normalises it to two so
# downstream code never has to special-case the short form.
_ARG_NAMES: dict[str, tuple[str, ...]] = {
    "C2d": ("in", "out", "kernel", "stride", "padding"),
    "VAERB": ("in", "out"),
    "VAEA": ("channels",),
    "GN": ("groups", "channels"),
    "SiLU": (),
    "MaxP": ("kernel", "stride"),
    "UpS": ("factor",),
}

KNOWN_TOKENS: tuple[str, ...] = tuple(_ARG_NAMES)

# Padding is the only argument for which zero is meaningful.
_NON_NEGATIVE_ARGS = frozenset({("C2d", "padding")})

# A cap on ``N*`` so a stray large number in a config cannot silently build
# an enormous list (or exhaust memory) before anything else is checked.
MAX_REPEAT = 4096

# Per-example feature maps beyond this many elements overflow XLA's int32
# indexing and could never fit in memory; such a spec is a typo (``UpS_200``).
MAX_ELEMENTS = 2**31 - 1

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


def _entry_error(index: int, text: Any, message: str) -> SpecError:
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
        raise _entry_error(
            index, text, f"argument {name!r} must be an integer, got {raw[:40]!r}"
        )
    if value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise _entry_error(
            index, text, f"argument {name!r} must be {kind}, got {value}"
        )
    return value


def _parse_entry(index: int, text: Any) -> list[LayerSpec]:
    if not isinstance(text, str):
        raise _entry_error(
            index, text, f"expected a string, got {type(text).__name__}"
        )
    body = text.strip()
    if not body:
        raise _entry_error(index, text, "empty entry")

    count = 1
    if "*" in body:
        count_raw, body = (part.strip() for part in body.split("*", 1))
        parsed = _digits_to_int(count_raw)
        if parsed is None:
            raise _entry_error(
                index,
                text,
                "repetition count must be a positive integer, "
                f"got {count_raw[:40]!r}",
            )
        count = parsed
        if not 1 <= count <= MAX_REPEAT:
            raise _entry_error(
                index,
                text,
                f"repetition count must be between 1 and {MAX_REPEAT}, got {count}",
            )
        if not body:
            raise _entry_error(index, text, "nothing to repeat after '*'")
        if "*" in body:
            raise _entry_error(index, text, "at most one 'N*' prefix is allowed")

    token, *raw_args = body.split("_")
    if token not in _ARG_NAMES:
        raise _entry_error(
            index,
            text,
            f"unknown token {token!r}; known tokens: {', '.join(KNOWN_TOKENS)}",
        )

    names = _ARG_NAMES[token]
    if token == "MaxP" and len(raw_args) == 1:
        names = ("kernel",)
    if len(raw_args) != len(names):
        expected = (
            "1 or 2 arguments (kernel[, stride])"
            if token == "MaxP"
            else f"{len(names)} argument(s)"
            + (f" ({', '.join(names)})" if names else "")
        )
        raise _entry_error(
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
    if token == "MaxP" and len(args) == 1:
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
            raise _entry_error(
                index, entry, f"expected a string, got {type(entry).__name__}"
            )
    return tuple(entries)


def default_num_groups(channels: int) -> int:
    """GroupNorm group count used inside ``VAERB`` and ``VAEA`` blocks.

    Returns 32 when ``channels`` is divisible by 32 (the usual VAE setting),
    and otherwise the largest divisor of ``channels`` that is at most 32, so
    narrow test-sized models still get a valid GroupNorm.

    Args:
      channels: Number of channels to normalise; must be positive.

    Returns:
      The number of groups.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


def _check_input_shape(input_shape: Any) -> Shape:
    error = SpecError(
        f"input_shape must be three positive integers (H, W, C), got {input_shape!r}"
    )
    try:
        raw = tuple(input_shape)
        # ``operator.index`` accepts NumPy integers but rejects floats.
        shape = tuple(operator.index(d) for d in raw)
    except TypeError:
        raise error from None
    if len(shape) != 3 or any(isinstance(d, bool) or d < 1 for d in raw):
        raise error
    return shape  # type: ignore[return-value]


def _spatial_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def infer_shapes(
    layers: Sequence[Union[LayerSpec, str]], input_shape: Shape
) -> list[Shape]:
    """Statically propagates an ``(H, W, C)`` shape through the layers.

    Args:
      layers: Parsed layers (as returned by :func:`parse_spec`); raw spec
        strings are parsed first for convenience.
      input_shape: Per-example input shape ``(H, W, C)``, without batch.

    Returns:
      The output shape ``(H, W, C)`` of each layer, in order.

    Raises:
      SpecError: If a layer's expected input channels differ from the current
        channel count, GroupNorm groups do not divide the channels, a
        spatial dimension would drop below 1, or a layer's output would have
        more than :data:`MAX_ELEMENTS` elements. The message names the entry.
    """
    if any(isinstance(layer, str) for layer in layers):
        layers = parse_spec(list(layers))
    h, w, c = _check_input_shape(input_shape)
    shapes: list[Shape] = []

    for layer in layers:
        token, args = layer.token, layer.args

        def fail(message: str, layer: LayerSpec = layer) -> SpecError:
            return _entry_error(
                layer.index, layer.text, f"{message} (input shape {(h, w, c)})"
            )

        def expect_channels(expected: int, name: str) -> None:
            if expected != c:
                source = (
                    "produced by the previous layer" if shapes else "of the input"
                )
                raise fail(
                    f"{name}={expected} does not match the {c} channels {source}"
                )

        if token == "C2d":
            c_in, c_out, kernel, stride, padding = args
            expect_channels(c_in, "in")
            h2 = _spatial_out(h, kernel, stride, padding)
            w2 = _spatial_out(w, kernel, stride, padding)
            if h2 < 1 or w2 < 1:
                raise fail(
                    f"kernel {kernel} with padding {padding} does not fit the "
                    "spatial size"
                )
            h, w, c = h2, w2, c_out
        elif token == "VAERB":
            expect_channels(args[0], "in")
            c = args[1]
        elif token == "VAEA":
            expect_channels(args[0], "channels")
        elif token == "GN":
            groups, channels = args
            expect_channels(channels, "channels")
            if channels % groups:
                raise fail(f"groups={groups} does not divide channels={channels}")
        elif token == "SiLU":
            pass
        elif token == "MaxP":
            kernel, stride = args
            h2 = _spatial_out(h, kernel, stride, 0)
            w2 = _spatial_out(w, kernel, stride, 0)
            if h2 < 1 or w2 < 1:
                raise fail(f"pool kernel {kernel} is larger than the spatial size")
            h, w = h2, w2
        elif token == "UpS":
            h, w = h * args[0], w * args[0]
        else:  # pragma: no cover - parse_spec only yields known tokens
            raise fail(f"unknown token {token!r}")
        if h * w * c > MAX_ELEMENTS:
            # Caught here rather than as an out-of-memory error (or int32
            # index overflow) deep inside XLA at init time.
            raise fail(
                f"output {h}x{w}x{c} has more than {MAX_ELEMENTS} elements per example"
            )
        shapes.append((h, w, c))
    return shapes


def output_shape(spec: SpecSource, input_shape: Shape) -> Shape:
    """Returns the ``(H, W, C)`` output shape of a spec for a given input.

    Args:
      spec: Anything :func:`load_spec` accepts.
      input_shape: Per-example input shape ``(H, W, C)``.

    Returns:
      The final output shape (``input_shape`` itself for an empty spec).

    Raises:
      SpecError: If the spec is malformed or shape-inconsistent.
    """
    shape = _check_input_shape(input_shape)
    _, shapes = _compile(load_spec(spec), shape)
    return shapes[-1] if shapes else shape


@functools.lru_cache(maxsize=256)
def _compile(
    spec: tuple[str, ...], input_shape: tuple[Any, ...]
) -> tuple[tuple[LayerSpec, ...], tuple[Shape, ...]]:
    # Flax re-runs ``__call__`` on every trace; caching keeps repeated parsing
    # and shape checking off that path.
    layers = parse_spec(spec)
    shapes = infer_shapes(layers, input_shape)
    return tuple(layers), tuple(shapes)


def _conv(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.Conv:
    # Explicit (lo, hi) pairs rather than 'SAME' so the output size follows
    # the PyTorch formula regardless of stride.
    return nn.Conv(
        features=features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        name=name,
    )


class VAEResBlock(nn.Module):
    """Pre-activation residual block used by ``VAERB_in_out``.

    Attributes:
      in_channels: Channels of the input.
      out_channels: Channels of the output. When it differs from
        ``in_channels`` the skip path is a 1x1 convolution named ``skip``;
        otherwise the skip is the identity and has no parameters.
    """

    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to an NHWC array."""
        groups_in = default_num_groups(self.in_channels)
        groups_out = default_num_groups(self.out_channels)
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
    """

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to an NHWC array."""
        b, h, w, c = x.shape
        y = nn.GroupNorm(num_groups=default_num_groups(self.channels), name="norm")(x)
        y = y.reshape(b, h * w, c)
        # A 1x1 convolution over channels is exactly a Dense on the last axis.
        q = nn.Dense(self.channels, name="q")(y)
        k = nn.Dense(self.channels, name="k")(y)
        v = nn.Dense(self.channels, name="v")(y)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(self.channels)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", weights, v)
        out = nn.Dense(self.channels, name="proj_out")(out)
        return x + out.reshape(b, h, w, c)


def _upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    # ``repeat`` is exact nearest-neighbour replication, unlike a resize
    # whose pixel-centre convention could shift content.
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class SpecNet(nn.Module):
    """A sequential network defined by a layer spec.

    Submodules are named ``layers_{i}`` by their position ``i`` in the
    expanded layer list; parameter-free layers (``SiLU``, ``MaxP``, ``UpS``)
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
        expected = _check_input_shape(self.input_shape)
        layers, _ = _compile(load_spec(self.spec), expected)
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
                x = _conv(a[1], a[2], a[3], a[4], name=name)(x)
            elif layer.token == "VAERB":
                x = VAEResBlock(a[0], a[1], name=name)(x)
            elif layer.token == "VAEA":
                x = VAEAttentionBlock(a[0], name=name)(x)
            elif layer.token == "GN":
                x = nn.GroupNorm(num_groups=a[0], name=name)(x)
            elif layer.token == "SiLU":
                x = nn.silu(x)
            elif layer.token == "MaxP":
                x = nn.max_pool(x, (a[0], a[0]), strides=(a[1], a[1]), padding="VALID")
            elif layer.token == "UpS":
                x = _upsample_nearest(x, a[0])
            else:  # pragma: no cover - parse_spec only yields known tokens
                raise SpecError(f"unknown token {layer.token!r}")
        return x


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
    shape = _check_input_shape(input_shape)
    _compile(entries, shape)
    return SpecNet(spec=entries, input_shape=shape)
