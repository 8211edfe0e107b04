"""Shape inference of layer specs: every layer's output shape, checked before anything is built.

:func:`infer_shapes` propagates a per-example ``(H, W, C)`` shape (a 1-D
signal's ``(length, C)`` runs as width 1) through parsed layers and names the
first entry whose channels, groups or sizes do not fit; :func:`output_shape`
is the final shape of a spec. The grammar is :mod:`jvae.layers.spec`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any, Union

from jvae.layers.spec import LayerSpec, Shape, SpecError, SpecSource, entry_error, load_spec, parse_spec

__all__ = ["MAX_ELEMENTS", "default_num_groups", "infer_shapes", "output_shape",
           "receptive_radius"]


# Per-example feature maps beyond this many elements overflow XLA's int32
# indexing and could never fit in memory; such a spec is a typo (``UpS_200``).
MAX_ELEMENTS = 2**31 - 1


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


def check_input_shape(input_shape: Any) -> Shape:
    error = SpecError(
        "input_shape must be three positive integers (H, W, C), or two (length, C) "
        f"for 1-D signals, got {input_shape!r}"
    )
    try:
        raw = tuple(input_shape)
        # ``operator.index`` accepts NumPy integers but rejects floats.
        shape = tuple(operator.index(d) for d in raw)
    except TypeError:
        raise error from None
    if len(shape) not in (2, 3) or any(isinstance(d, bool) or d < 1 for d in raw):
        raise error
    if len(shape) == 2:  # a 1-D signal runs as a width-1 image
        shape = (shape[0], 1, shape[1])
    return shape  # type: ignore[return-value]


def _spatial_out(size: int, kernel: int, stride: int, padding: int,
                 after: int | None = None) -> int:
    return (size + padding + (padding if after is None else after) - kernel) // stride + 1


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
    shape = check_input_shape(input_shape)
    shapes: list[Shape] = []
    for layer in layers:
        shape = _layer_shape(layer, shape, first=not shapes)
        shapes.append(shape)
    return shapes


def _layer_shape(layer: LayerSpec, shape: Shape, *, first: bool) -> Shape:
    """One layer's output shape for input ``shape`` (``first``: the input is the spec's)."""
    h, w, c = shape
    token, args = layer.token, layer.args

    def fail(message: str) -> SpecError:
        return entry_error(layer.index, layer.text, f"{message} (input shape {(h, w, c)})")

    def expect_channels(expected: int, name: str) -> None:
        if expected != c:
            source = "of the input" if first else "produced by the previous layer"
            raise fail(f"{name}={expected} does not match the {c} channels {source}")

    if token in ("C2d", "C2dNB"):
        c_in, c_out, kernel, stride, padding = args[:5]
        after = args[-1]
        expect_channels(c_in, "in")
        h2 = _spatial_out(h, kernel, stride, padding, after)
        w2 = _spatial_out(w, kernel, stride, padding, after)
        if h2 < 1 or w2 < 1:
            raise fail(
                f"kernel {kernel} with padding {padding} does not fit the "
                "spatial size"
            )
        h, w, c = h2, w2, c_out
    elif token == "VAERB":
        expect_channels(args[0], "in")
        if len(args) == 3 and (args[0] % args[2] or args[1] % args[2]):
            raise fail(f"groups={args[2]} does not divide in={args[0]} and out={args[1]}")
        c = args[1]
    elif token == "VAEA":
        expect_channels(args[0], "channels")
        if len(args) == 2 and args[0] % args[1]:
            raise fail(f"groups={args[1]} does not divide channels={args[0]}")
    elif token == "GN":
        groups, channels = args
        expect_channels(channels, "channels")
        if channels % groups:
            raise fail(f"groups={groups} does not divide channels={channels}")
    elif token == "TAEB":
        expect_channels(args[0], "in")
        c = args[1]
    elif token in ("SiLU", "ReLU", "Clamp"):
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
    elif token == "C1d":
        c_in, c_out, kernel, stride, padding = args
        expect_channels(c_in, "in")
        h2 = _spatial_out(h, kernel, stride, padding)
        if h2 < 1:
            raise fail(f"kernel {kernel} with padding {padding} does not fit the length")
        h, c = h2, c_out
    elif token == "VAERB1d":
        expect_channels(args[0], "in")
        c = args[1]
    elif token == "MaxP1d":
        kernel, stride = args
        h2 = _spatial_out(h, kernel, stride, 0)
        if h2 < 1:
            raise fail(f"pool kernel {kernel} is longer than the length")
        h = h2
    elif token == "UpS1d":
        h = h * args[0]
    elif token == "RU1d":
        expect_channels(args[0], "channels")
    elif token == "Down1d":
        c_in, c_out, stride = args
        expect_channels(c_in, "in")
        if h % stride:
            raise fail(f"the length {h} is not a multiple of the stride {stride}")
        h, c = h // stride, c_out
    elif token == "Up1d":
        expect_channels(args[0], "in")
        h, c = h * args[2], args[1]
    elif token == "Head1d":
        expect_channels(args[0], "in")
        c = args[1]
    elif token == "PQMF":
        expect_channels(1, "mono input")
        if h % args[0]:
            raise fail(f"the length {h} is not a multiple of the {args[0]} bands")
        h, c = h // args[0], args[0]
    elif token == "IPQMF":
        expect_channels(args[0], "bands")
        h, c = h * args[0], 1
    else:  # pragma: no cover - parse_spec only yields known tokens
        raise fail(f"unknown token {token!r}")
    if h * w * c > MAX_ELEMENTS:
        # Caught here rather than as an out-of-memory error (or int32
        # index overflow) deep inside XLA at init time.
        raise fail(
            f"output {h}x{w}x{c} has more than {MAX_ELEMENTS} elements per example"
        )
    return h, w, c


# Layers that mix information from every position (normalisation statistics,
# attention, sub-band filters over the whole signal): no bounded receptive field.
_GLOBAL_TOKENS = frozenset({"GN", "VAERB", "VAEA", "VAERB1d", "PQMF", "IPQMF"})
# 3x3 convolutions per block of the local blocks.
_BLOCK_CONVS = {"TAEB": 3}


def receptive_radius(spec: SpecSource) -> float | None:
    """How far, in input pixels, one output pixel of a 2-D spec may look: its receptive
    field's half-width, or None when a layer sees the whole input (GroupNorm, attention).

    Each ``k x k`` convolution or pooling adds ``(k - 1) / 2`` of its input
    pixels; a nearest upsampling by ``f`` one pixel of its input (an output
    pixel copies one of them), a conservative bound. Pixel-wise layers add 0.

    Args:
      spec: Anything :func:`load_spec` accepts.

    Returns:
      The radius in input pixels, or None.
    """
    radius, jump = 0.0, 1.0  # jump: input pixels per pixel of the current layer
    for layer in parse_spec(list(load_spec(spec))):
        token, args = layer.token, layer.args
        if token in _GLOBAL_TOKENS or token.endswith("1d"):
            return None
        if token in ("C2d", "C2dNB", "MaxP"):
            kernel, stride = (args[0], args[1]) if token == "MaxP" else (args[2], args[3])
            radius += (kernel - 1) / 2 * jump
            jump *= stride
        elif token in _BLOCK_CONVS:
            radius += _BLOCK_CONVS[token] * jump
        elif token == "UpS":
            radius += jump
            jump /= args[0]
    return radius


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
    shape = check_input_shape(input_shape)
    _, shapes = compile_spec(load_spec(spec), shape)
    return shapes[-1] if shapes else shape


@functools.lru_cache(maxsize=256)
def compile_spec(
    spec: tuple[str, ...], input_shape: tuple[Any, ...]
) -> tuple[tuple[LayerSpec, ...], tuple[Shape, ...]]:
    # Flax re-runs ``__call__`` on every trace; caching keeps repeated parsing
    # and shape checking off that path.
    layers = parse_spec(spec)
    shapes = infer_shapes(layers, input_shape)
    return tuple(layers), tuple(shapes)
