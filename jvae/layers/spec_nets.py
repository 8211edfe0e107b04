"""Encoders and decoders built from layer specs, and the packaged architectures.

:class:`SpecEncoder` and :class:`SpecDecoder` wrap a :class:`~jvae.layers.spec_blocks.SpecNet`
so it follows jvae's call contract (``encoder(x[, cond]) -> posterior params``,
``decoder(z[, cond]) -> likelihood params``). The spec net's output becomes
distribution parameters in one of two ways:

* **split**: when its output already has the parameters' shape with ``k``
  times the channels (``k`` = number of parameters, e.g. ``loc`` and ``scale``),
  the channels are split in ``param_shapes`` order and passed through the
  family's ``constrain``. This is the Stable-Diffusion layout: the encoder's last
  conv emits ``2 * latent_channels`` (mean and a raw scale) and the decoder's
  last conv emits the image's channels. Using ``constrain`` (softplus for a
  Normal scale) rather than an ``exp(logvar / 2)`` keeps every posterior and
  likelihood family handled the same way;
* **head**: otherwise a :class:`~jvae.nets.ParamHead` maps the features to the
  parameters (a 3x3 conv when the spatial size matches, else a Dense layer on
  the flattened features). A flat latent's encoder (features -> ``(d,)``) and
  an MLP-style decoder (``1x1`` features -> image) use this path.

Latents are either **flat** (``(latent_dim,)``, given to the decoder spec as a
``1 x 1 x latent_dim`` map) or **spatial** (``(h, w, c)``, taken from the
encoder spec's output ``(h, w, k * c)``).

An *architecture* is a JSON object ``{"description", "data_shape", "latent",
"data_range", "encoder", "decoder"}``; the ones shipped in ``jvae/configs/`` are selected by
name (``mnist_mlp``, ``mnist_conv``, ``sd_vae``, ``sd_vae_mnist``). A bare JSON
list is a single spec usable as either part. ``data_range: [lo, hi]`` says the
nets work on images in ``[lo, hi]`` rather than jvae's ``[0, 1]``: the encoder
maps its input ``x`` to ``lo + (hi - lo) x`` and the decoder maps its output
``y`` back to ``(y - lo) / (hi - lo)``, the right map for a location parameter
(the ``gaussian`` likelihood's mean). Stable Diffusion's VAE works in
``[-1, 1]``, so ``sd_vae`` declares it.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jvae.base import Array
from jvae.distributions.likelihoods import Likelihood
from jvae.distributions.posteriors import Posterior
from jvae.layers.heads import ParamHead
from jvae.layers.spec import SpecError, load_spec, parse_spec
from jvae.layers.spec_blocks import SpecNet
from jvae.layers.spec_shapes import output_shape

__all__ = ["Architecture", "LATENT_LAYOUTS", "SpecDecoder", "SpecEncoder", "SpecPair",
           "available_architectures", "decoder_input_shape", "load_architecture",
           "make_spec_nets", "resolve_spec_pair"]

LATENT_LAYOUTS = ("flat", "spatial")
_ARCH_KEYS = frozenset({"description", "data_shape", "latent", "data_range", "encoder",
                        "decoder"})
# Packaged names are plain file stems; anything with a path separator is a path.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


# --- architectures: names, files and inline JSON ----------------------------


class Architecture(NamedTuple):
    """An encoder/decoder spec pair as loaded from a name, file or inline JSON.

    Attributes:
      source: where it came from, for error messages (a packaged name, a path,
        or ``"(inline JSON)"``).
      encoder: encoder spec entries, or None if the source has no encoder.
      decoder: decoder spec entries, or None if the source has no decoder.
      latent: ``"flat"``, ``"spatial"``, or None when the source does not say
        (a bare list, or an object without a ``latent`` key).
      data_shape: the ``(H, W, C)`` the architecture was designed for, if given
        (informational: specs adapt to any input they fit).
      description: free text.
      bare: True for a bare list of layers (one spec serving as either part).
      data_range: ``(lo, hi)``, the image range the nets work in, or None for
        jvae's ``[0, 1]``.
    """

    source: str
    encoder: tuple[str, ...] | None
    decoder: tuple[str, ...] | None
    latent: str | None
    data_shape: tuple[int, ...] | None
    description: str
    bare: bool = False
    data_range: tuple[float, float] | None = None


def available_architectures() -> tuple[str, ...]:
    """Names of the architectures shipped in ``jvae/configs/``."""
    folder = resources.files("jvae") / "configs"
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))


def _packaged_text(name: str) -> str | None:
    stem = name[:-5] if name.endswith(".json") else name
    if not _NAME_RE.fullmatch(stem):
        return None
    path = resources.files("jvae") / "configs" / f"{stem}.json"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _from_value(value: Any, source: str) -> Architecture:
    if isinstance(value, dict):
        unknown = sorted(set(value) - _ARCH_KEYS)
        if unknown:
            raise SpecError(f"architecture {source}: unknown keys {unknown}; allowed keys: "
                            f"{', '.join(sorted(_ARCH_KEYS))}")
        if "encoder" not in value and "decoder" not in value:
            raise SpecError(f"architecture {source}: needs an 'encoder' and/or 'decoder' list")
        latent = value.get("latent")
        if latent is not None and latent not in LATENT_LAYOUTS:
            raise SpecError(f"architecture {source}: latent={latent!r} is not one of "
                            f"{', '.join(LATENT_LAYOUTS)}")
        shape = value.get("data_shape")
        if shape is not None and not (isinstance(shape, list) and shape and all(
                type(d) is int and d > 0 for d in shape)):
            raise SpecError(f"architecture {source}: data_shape must be a list of positive "
                            f"integers, got {shape!r}")
        data_range = value.get("data_range")
        if data_range is not None:
            if not (isinstance(data_range, list) and len(data_range) == 2 and all(
                    type(v) in (int, float) for v in data_range) and data_range[0] < data_range[1]):
                raise SpecError(f"architecture {source}: data_range must be [lo, hi] with "
                                f"lo < hi, got {data_range!r}")
            data_range = (float(data_range[0]), float(data_range[1]))
        parts = {}
        for part in ("encoder", "decoder"):
            if part in value:
                try:
                    parts[part] = load_spec(value[part])
                except SpecError as e:
                    raise SpecError(f"architecture {source}, {part}: {e}") from None
        return Architecture(source, parts.get("encoder"), parts.get("decoder"), latent,
                            None if shape is None else tuple(shape),
                            str(value.get("description", "")), data_range=data_range)
    try:
        spec = load_spec(value)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None
    return Architecture(source, spec, spec, None, None, "", bare=True)


def _decode(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SpecError(f"{source} is not valid JSON: {e}") from None


def load_architecture(source: Any) -> Architecture:
    """Loads an architecture or a bare spec.

    Args:
      source: one of

        * the name of a packaged architecture (see
          :func:`available_architectures`), with or without ``.json``;
        * a path (``str`` or ``os.PathLike``) to a JSON file holding an
          architecture object or a bare list of spec strings;
        * JSON text of either (a string starting with ``[`` or ``{``);
        * a list of spec strings or an architecture dict.

    Returns:
      An :class:`Architecture`. A bare list fills both ``encoder`` and
      ``decoder``, leaves ``latent`` unset and sets ``bare``.

    Raises:
      SpecError: unknown name or missing file (the message lists the packaged
        names), invalid JSON, unknown keys, or entries that are not strings.
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, (list, tuple, dict)):
        return _from_value(source if isinstance(source, dict) else list(source), "(inline JSON)")
    if not isinstance(source, str):
        raise SpecError(f"an architecture is a name, a path or a JSON list/object, got "
                        f"{type(source).__name__}")
    text = source.strip()
    if text.startswith(("[", "{")):
        return _from_value(_decode(text, "inline spec"), "(inline JSON)")
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"could not read architecture file {text!r}: {e}") from None
        return _from_value(_decode(content, f"architecture file {text!r}"), repr(text))
    packaged = _packaged_text(text)
    if packaged is not None:
        name = text[:-5] if text.endswith(".json") else text
        return _from_value(_decode(packaged, f"packaged architecture {name!r}"), repr(name))
    raise SpecError(f"{text!r} is neither a packaged architecture "
                    f"({', '.join(available_architectures())}) nor an existing JSON file nor an "
                    "inline JSON list of layer specs")


class SpecPair(NamedTuple):
    """Resolved encoder and decoder specs (see :func:`resolve_spec_pair`).

    Attributes:
      encoder: encoder spec entries.
      decoder: decoder spec entries.
      latent: ``"flat"`` or ``"spatial"``.
      encoder_source: label of the encoder's source, for messages.
      decoder_source: label of the decoder's source, for messages.
      encoder_range: the encoder source's ``data_range`` (None: ``[0, 1]``).
      decoder_range: the decoder source's ``data_range``.
    """

    encoder: tuple[str, ...]
    decoder: tuple[str, ...]
    latent: str
    encoder_source: str
    decoder_source: str
    encoder_range: tuple[float, float] | None = None
    decoder_range: tuple[float, float] | None = None


def resolve_spec_pair(encoder_spec: Any, decoder_spec: Any = None) -> SpecPair:
    """Resolves and parses the encoder and decoder specs a config names.

    The encoder part of ``encoder_spec`` and the decoder part of
    ``decoder_spec`` are used; when ``decoder_spec`` is None the decoder comes
    from ``encoder_spec``'s architecture. The latent layout comes from whichever
    source declares one (flat if neither does).

    Args:
      encoder_spec: anything :func:`load_architecture` accepts.
      decoder_spec: likewise, or None.

    Returns:
      A :class:`SpecPair` whose specs parse.

    Raises:
      SpecError: a source cannot be loaded, lacks the needed part, the two
        sources declare different latent layouts, or a spec does not parse.
    """
    enc = load_architecture(encoder_spec)
    if decoder_spec is None:
        if enc.bare:
            raise SpecError(f"encoder_spec {enc.source} is a bare list of layers, so it has no "
                            "decoder: also give decoder_spec (--decoder-spec)")
        dec = enc
    else:
        dec = load_architecture(decoder_spec)
    if enc.encoder is None:
        raise SpecError(f"encoder_spec {enc.source} has no 'encoder' list")
    if dec.decoder is None:
        raise SpecError(f"decoder_spec {dec.source} has no 'decoder' list")
    layouts = {a.latent for a in (enc, dec) if a.latent is not None}
    if len(layouts) > 1:
        raise SpecError(f"encoder_spec {enc.source} declares a {enc.latent} latent but "
                        f"decoder_spec {dec.source} a {dec.latent} one")
    for part, source, spec in (("encoder_spec", enc.source, enc.encoder),
                               ("decoder_spec", dec.source, dec.decoder)):
        try:
            parse_spec(spec)
        except SpecError as e:
            raise SpecError(f"{part} {source}: {e}") from None
    return SpecPair(enc.encoder, dec.decoder, layouts.pop() if layouts else "flat",
                    enc.source, dec.source, enc.data_range, dec.data_range)


# --- modules ----------------------------------------------------------------


def decoder_input_shape(latent_shape: Sequence[int]) -> tuple[int, int, int]:
    """The ``(H, W, C)`` map a decoder spec receives for a latent of this shape.

    A spatial latent ``(h, w, c)`` is used as is; any other latent is flattened
    to a ``1 x 1 x size`` map, on which a ``C2d`` with kernel ``k`` and padding
    ``k - 1`` is a fully connected layer to a ``k x k`` map.
    """
    latent_shape = tuple(int(d) for d in latent_shape)
    if len(latent_shape) == 3:
        return latent_shape  # type: ignore[return-value]
    return (1, 1, math.prod(latent_shape))


def _as_map(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (1, 1, shape[0])
    return None


def _split_layout(feature_shape: tuple[int, ...],
                  shapes: dict[str, tuple[int, ...]]) -> tuple[int, int, int] | None:
    """The per-parameter map shape when ``features`` split into ``shapes``, else None."""
    maps = {_as_map(tuple(s)) for s in shapes.values()}
    if len(maps) != 1 or None in maps:
        return None
    (h, w, c), = maps
    return (h, w, c) if tuple(feature_shape) == (h, w, c * len(shapes)) else None


def _to_params(h: Array, shapes: dict[str, tuple[int, ...]],
               constrain: Callable[[dict[str, Array]], dict[str, Array]],
               cond: Array | None, name: str) -> dict[str, Array]:
    """Splits or heads spec features into constrained distribution parameters."""
    if cond is None and _split_layout(h.shape[1:], shapes) is not None:
        chunks = jnp.split(h, len(shapes), axis=-1)
        raw = {k: c.reshape(h.shape[0], *s) for (k, s), c in zip(shapes.items(), chunks)}
        return constrain(raw)
    if cond is not None:
        # Conditioning joins as extra channels at every position, so a spatial
        # head stays convolutional; the learned head then always runs.
        c = cond.reshape(cond.shape[0], 1, 1, -1).astype(h.dtype)
        h = jnp.concatenate([h, jnp.broadcast_to(c, (*h.shape[:3], c.shape[-1]))], axis=-1)
    return ParamHead(tuple((k, tuple(s)) for k, s in shapes.items()), constrain, name=name)(h)


class SpecEncoder(nn.Module):
    """Encoder ``x -> SpecNet -> posterior parameters``.

    Attributes:
      spec: encoder layer-spec entries.
      input_shape: per-example data shape ``(H, W, C)``.
      posterior: the posterior family.
      latent_shape: ``(d,)`` or a spatial ``(h, w, c)``. When the spec's output
        is ``(h, w, k * c)`` its channels are split into the ``k`` parameters;
        otherwise a :class:`~jvae.nets.ParamHead` maps it to them.
      data_range: ``(lo, hi)``: the net sees ``lo + (hi - lo) x``; None: ``x``.
    """

    spec: tuple[str, ...]
    input_shape: tuple[int, int, int]
    posterior: Posterior
    latent_shape: tuple[int, ...]
    data_range: tuple[float, float] | None = None

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> dict[str, Array]:
        if self.data_range is not None:
            lo, hi = self.data_range
            x = lo + (hi - lo) * x
        h = SpecNet(tuple(self.spec), tuple(self.input_shape), name="net")(x)
        shapes = self.posterior.param_shapes(tuple(self.latent_shape))
        return _to_params(h, shapes, self.posterior.constrain, cond, "head")


class SpecDecoder(nn.Module):
    """Decoder ``z -> SpecNet -> likelihood parameters``.

    The latent enters the spec as :func:`decoder_input_shape` (itself when
    spatial, ``1 x 1 x d`` when flat).

    Attributes:
      spec: decoder layer-spec entries.
      latent_shape: per-example latent shape.
      likelihood: the observation model.
      data_shape: per-example data shape. When the spec's output is the data
        shape with ``k`` times the channels it is split into the likelihood's
        ``k`` parameters; otherwise a :class:`~jvae.nets.ParamHead` maps it.
      data_range: ``(lo, hi)``: the net's output ``y`` becomes
        ``(y - lo) / (hi - lo)``; None: ``y``.
    """

    spec: tuple[str, ...]
    latent_shape: tuple[int, ...]
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    data_range: tuple[float, float] | None = None

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None) -> dict[str, Array]:
        in_shape = decoder_input_shape(self.latent_shape)
        h = SpecNet(tuple(self.spec), in_shape, name="net")(z.reshape(z.shape[0], *in_shape))
        if self.data_range is not None:
            lo, hi = self.data_range
            h = (h - lo) / (hi - lo)
        shapes = self.likelihood.param_shapes(tuple(self.data_shape))
        return _to_params(h, shapes, self.likelihood.constrain, cond, "head")


def _spatial_param_names(posterior: Posterior) -> tuple[str, ...] | None:
    """The parameter names if all are latent-shaped (so channels can split), else None."""
    # A 1x1x2 probe is a valid latent for every family (Dirichlet needs >= 2
    # components, VQ a code axis after the others).
    probe = (1, 1, 2)
    shapes = posterior.param_shapes(probe)
    return tuple(shapes) if all(tuple(s) == probe for s in shapes.values()) else None


def make_spec_nets(encoder_spec: Any, decoder_spec: Any = None, *, posterior: Posterior,
                   likelihood: Likelihood, data_shape: Sequence[int],
                   latent_shape: Sequence[int] = (20,)
                   ) -> tuple[SpecEncoder, SpecDecoder, tuple[int, ...]]:
    """Builds a shape-checked spec encoder/decoder pair and its latent shape.

    Everything is checked here, before any parameter exists: the specs parse,
    the encoder fits the data, a spatial encoder output splits evenly into the
    posterior's parameters, the decoder accepts the latent, and the decoder's
    output has the data's height and width (or is ``1 x 1``, MLP-style).

    Args:
      encoder_spec: anything :func:`load_architecture` accepts.
      decoder_spec: likewise, or None for ``encoder_spec``'s decoder.
      posterior: posterior family.
      likelihood: observation model.
      data_shape: per-example ``(H, W, C)``.
      latent_shape: the latent's shape when the layout is flat, e.g. ``(20,)``
        (a spatial latent's shape comes from the encoder's output instead).

    Returns:
      ``(encoder, decoder, latent_shape)``.

    Raises:
      SpecError: with a message naming the spec, the entry and the fix.
    """
    pair = resolve_spec_pair(encoder_spec, decoder_spec)
    data_shape = tuple(int(d) for d in data_shape)
    if len(data_shape) != 3:
        raise SpecError(f"spec nets need image data (H, W, C), got data shape {data_shape}")
    try:
        enc_out = output_shape(pair.encoder, data_shape)
    except SpecError as e:
        raise SpecError(f"encoder_spec {pair.encoder_source} on {data_shape} data: {e}") from None
    if pair.latent == "spatial":
        names = _spatial_param_names(posterior)
        if names is None:
            raise SpecError(
                f"encoder_spec {pair.encoder_source} declares a spatial latent, but the "
                f"{posterior.name} posterior has parameters not shaped like the latent "
                f"({', '.join(posterior.param_shapes((1, 1, 2)))}); use a flat latent or a "
                "normal or dirichlet posterior")
        k = len(names)
        if enc_out[2] % k:
            names = ", ".join(names)
            raise SpecError(
                f"encoder_spec {pair.encoder_source} outputs {enc_out[2]} channels, which do not "
                f"split into the {posterior.name} posterior's {k} parameters ({names}); make its "
                f"last layer emit {k} x latent channels")
        latent_shape: tuple[int, ...] = (enc_out[0], enc_out[1], enc_out[2] // k)
    else:
        latent_shape = tuple(int(d) for d in latent_shape)
    in_shape = decoder_input_shape(latent_shape)
    try:
        dec_out = output_shape(pair.decoder, in_shape)
    except SpecError as e:
        raise SpecError(f"decoder_spec {pair.decoder_source} on the {pair.latent} latent, "
                        f"which it receives as a {in_shape} map: {e}") from None
    if dec_out[:2] not in (data_shape[:2], (1, 1)):
        raise SpecError(f"decoder_spec {pair.decoder_source} outputs {dec_out[0]}x{dec_out[1]} "
                        f"maps but the data is {data_shape[0]}x{data_shape[1]}; change its "
                        "upsampling (or the encoder's downsampling) so the sizes agree")
    encoder = SpecEncoder(pair.encoder, data_shape, posterior, latent_shape, pair.encoder_range)
    decoder = SpecDecoder(pair.decoder, latent_shape, likelihood, data_shape, pair.decoder_range)
    return encoder, decoder, latent_shape
