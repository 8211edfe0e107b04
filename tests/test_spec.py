"""Tests for jvae.layers.spec: parsing, shape inference and module construction."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jvae.layers.spec import KNOWN_TOKENS, MAX_REPEAT, LayerSpec, SpecError, load_spec, parse_spec
from jvae.layers.spec_blocks import SpecNet, build
from jvae.layers.spec_shapes import default_num_groups, infer_shapes, output_shape

# XLA compilation dominates runtime on CPU, so most structural checks trace
# abstractly with ``jax.eval_shape``; a few tests execute under ``jax.jit``
# (the full stack covers every token) to check real numerics.


def _abstract(spec, input_shape, batch=2):
    """Traces init and apply without compiling; returns (params, y) shapes."""
    model = build(spec, input_shape)
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    y = jax.eval_shape(model.apply, params, x)
    return params, y


def _random_params(model, input_shape, seed=0):
    """Random parameters with the module's structure, without compiling init."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    values = [
        jnp.asarray(rng.normal(scale=0.5, size=leaf.shape), leaf.dtype)
        for leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, values)


# --- every token builds with the documented output shape --------------------

TOKEN_CASES = [
    # (spec, input_shape, hand-computed output shape)
    (["C2d_3_8_3_1_1"], (5, 6, 3), (5, 6, 8)),
    (["C2d_3_4_3_2_1"], (5, 6, 3), (3, 3, 4)),  # (5+2-3)//2+1=3, (6+2-3)//2+1=3
    (["C2d_3_4_2_1_0"], (5, 6, 3), (4, 5, 4)),
    (["C2d_3_4_1_1_2"], (2, 2, 3), (6, 6, 4)),  # padding larger than kernel
    (["C2d_3_4_3_2_0_1"], (6, 6, 3), (3, 3, 4)),  # (6+0+1-3)//2+1=3
    (["VAERB_4_8_2"], (4, 4, 4), (4, 4, 8)),
    (["VAEA_4_2"], (3, 5, 4), (3, 5, 4)),
    (["VAERB_4_4"], (4, 4, 4), (4, 4, 4)),
    (["VAERB_4_6"], (4, 4, 4), (4, 4, 6)),
    (["VAEA_4"], (3, 5, 4), (3, 5, 4)),
    (["GN_2_4"], (3, 3, 4), (3, 3, 4)),
    (["SiLU"], (3, 3, 2), (3, 3, 2)),
    (["MaxP_2"], (5, 4, 2), (2, 2, 2)),
    (["MaxP_3_1"], (5, 4, 2), (3, 2, 2)),
    (["UpS_3"], (2, 1, 2), (6, 3, 2)),
    (["C2dNB_3_4_3_2_1"], (5, 6, 3), (3, 3, 4)),
    (["TAEB_4_4"], (3, 5, 4), (3, 5, 4)),
    (["TAEB_4_6"], (3, 5, 4), (3, 5, 6)),
    (["ReLU"], (3, 3, 2), (3, 3, 2)),
    (["Clamp_3"], (3, 3, 2), (3, 3, 2)),
]


@pytest.mark.parametrize("spec,input_shape,expected", TOKEN_CASES)
def test_each_token_output_shape(spec, input_shape, expected):
    assert infer_shapes(parse_spec(spec), input_shape) == [expected]
    assert output_shape(spec, input_shape) == expected
    _, y = _abstract(spec, input_shape)
    assert y.shape == (2, *expected)


def test_tokens_covered():
    covered = {parse_spec(spec)[0].token for spec, _, _ in TOKEN_CASES}
    # The 1-D tokens have their own tests (tests/test_spec1d.py, tests/test_pqmf.py).
    assert covered == {t for t in KNOWN_TOKENS if not t.endswith("1d") and "PQMF" not in t}


def test_full_stack_matches_infer_shapes():
    spec = [
        "C2d_3_8_3_1_1",
        "2*VAERB_8_8",
        "VAERB_8_4",
        "VAEA_4",
        "GN_2_4",
        "SiLU",
        "MaxP_2",
        "UpS_2",
        "C2d_4_2_3_2_0",
    ]
    shapes = infer_shapes(parse_spec(spec), (8, 8, 3))
    assert len(shapes) == 10
    assert shapes[-1] == (3, 3, 2)
    assert shapes[7] == (4, 4, 4) and shapes[8] == (8, 8, 4)

    # Real init + apply inside jit, exercising every token at once.
    model = build(spec, (8, 8, 3))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    params = jax.jit(model.init)(jax.random.key(1), x)
    y = jax.jit(model.apply)(params, x)
    assert y.shape == (2, *shapes[-1])
    assert bool(jnp.all(jnp.isfinite(y)))


def test_empty_spec_is_identity():
    assert output_shape([], (2, 3, 4)) == (2, 3, 4)
    x = jnp.arange(24.0).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(build([], (2, 3, 4)).apply({}, x), x)


def test_maxp_short_form_normalised():
    (layer,) = parse_spec(["MaxP_2"])
    assert layer.args == (2, 2)
    assert layer.named_args == {"kernel": 2, "stride": 2}
    assert layer.format() == "MaxP_2_2"


def test_default_num_groups():
    assert default_num_groups(64) == 32
    assert default_num_groups(256) == 32
    assert default_num_groups(48) == 24
    assert default_num_groups(6) == 6
    assert default_num_groups(35) == 7
    assert default_num_groups(37) == 1


# --- repetition -------------------------------------------------------------


def test_repetition_expands_with_original_indices():
    layers = parse_spec(["C2d_3_4_3_1_1", "3*VAERB_4_4", "SiLU", "2*UpS_2"])
    assert [layer.token for layer in layers] == (
        ["C2d"] + ["VAERB"] * 3 + ["SiLU"] + ["UpS"] * 2
    )
    assert [layer.index for layer in layers] == [0, 1, 1, 1, 2, 3, 3]
    assert layers[1].text == layers[3].text == "3*VAERB_4_4"
    assert infer_shapes(layers, (2, 2, 3))[-1] == (8, 8, 4)


def test_repeated_blocks_get_distinct_params():
    params, _ = _abstract(["2*VAERB_4_4"], (2, 2, 4))
    assert set(params["params"]) == {"layers_0", "layers_1"}


# --- malformed specs --------------------------------------------------------

BAD_ENTRIES = [
    ("C2d_3_x_3_1_1", "argument 'out' must be an integer"),
    ("C2d_3_4_3_0_1", "argument 'stride' must be positive"),
    ("C2d_3_4_3_1_-1", "argument 'padding' must be an integer"),
    ("C2d_3_4_3_1", "C2d expects 5 or 6 arguments (in, out, kernel, stride, padding[, after])"),
    ("C2d_3_4_3_1_0_1_1", "C2d expects 5 or 6 arguments"),
    ("VAERB_0_4", "argument 'in' must be positive"),
    ("VAERB_4", "VAERB expects 2 or 3 arguments (in, out[, groups])"),
    ("VAERB_4_4_0", "argument 'groups' must be positive"),
    ("VAEA_4_4_4", "VAEA expects 1 or 2 arguments"),
    ("GN_2", "GN expects 2 argument"),
    ("SiLU_1", "SiLU expects 0 argument"),
    ("MaxP", "MaxP expects 1 or 2 arguments"),
    ("MaxP_2_2_2", "MaxP expects 1 or 2 arguments"),
    ("UpS_1.5", "argument 'factor' must be an integer"),
    ("UpS_+2", "argument 'factor' must be an integer"),
    ("Conv_3_4", "unknown token 'Conv'"),
    ("silu", "unknown token 'silu'"),
    ("", "empty entry"),
    ("   ", "empty entry"),
    ("0*SiLU", "repetition count"),
    ("x*SiLU", "repetition count"),
    ("-1*SiLU", "repetition count"),
    ("*SiLU", "repetition count"),
    ("2*", "nothing to repeat"),
    ("2*3*SiLU", "at most one"),
]


@pytest.mark.parametrize("entry,fragment", BAD_ENTRIES)
def test_malformed_entry_names_index_and_text(entry, fragment):
    spec = ["C2d_3_4_3_1_1", "SiLU", "UpS_2", entry]
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    message = str(info.value)
    assert "entry 3" in message
    assert repr(entry) in message
    assert fragment in message
    # build() must fail the same way, before any module exists.
    with pytest.raises(SpecError, match=re.escape(repr(entry))):
        build(spec, (4, 4, 3))


def test_unknown_token_lists_known_tokens():
    with pytest.raises(SpecError) as info:
        parse_spec(["Nope_1"])
    for token in KNOWN_TOKENS:
        assert token in str(info.value)


def test_example_message_format():
    with pytest.raises(SpecError) as info:
        parse_spec(["SiLU", "SiLU", "SiLU", "C2d_3_x_3_1_1"])
    assert str(info.value).startswith(
        "layer spec entry 3 ('C2d_3_x_3_1_1'): argument 'out' must be an integer"
    )


@pytest.mark.parametrize(
    "spec", ["{not json", '{"a": 1}', "5", '"SiLU"', "[1, 2]", 7, None, {"SiLU"}]
)
def test_not_a_list_of_strings(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_pathological_inputs_raise_spec_error():
    huge = "9" * 5000  # beyond Python's int-conversion digit limit
    for spec in (
        [f"UpS_{huge}"],
        [f"{huge}*SiLU"],
        [f"{MAX_REPEAT + 1}*SiLU"],
        "[" * 100_000,
        f"[{huge}]",
        b"\xff",
    ):
        with pytest.raises(SpecError):
            parse_spec(spec)


def test_non_string_entry_names_index():
    with pytest.raises(SpecError, match=r"entry 1 \(3\)"):
        parse_spec(["SiLU", 3])
    with pytest.raises(SpecError, match=r"entry 1 \(3\)"):
        build(["SiLU", 3], (2, 2, 2))


SHAPE_ERRORS = [
    (["C2d_4_8_3_1_1"], (4, 4, 3), 0, "in=4 does not match the 3 channels"),
    (["C2d_3_8_3_1_1", "VAERB_4_4"], (4, 4, 3), 1, "in=4 does not match"),
    (["C2d_3_8_3_1_1", "VAEA_4"], (4, 4, 3), 1, "channels=4 does not match"),
    (["C2d_3_8_3_1_1", "GN_2_4"], (4, 4, 3), 1, "channels=4 does not match"),
    (["SiLU", "GN_3_4"], (4, 4, 4), 1, "groups=3 does not divide channels=4"),
    (["VAERB_4_6_4"], (4, 4, 4), 0, "groups=4 does not divide in=4 and out=6"),
    (["VAEA_4_3"], (4, 4, 4), 0, "groups=3 does not divide channels=4"),
    (["MaxP_2", "MaxP_2", "MaxP_2"], (4, 4, 1), 2, "larger than the spatial size"),
    (["C2d_1_1_5_1_0"], (4, 4, 1), 0, "does not fit"),
    (["SiLU", "2*VAERB_4_8"], (2, 2, 4), 1, "in=4 does not match the 8 channels"),
    (["SiLU", "UpS_4096", "UpS_4096"], (2, 2, 1), 2, "more than 2147483647 elements"),
]


@pytest.mark.parametrize("spec,input_shape,index,fragment", SHAPE_ERRORS)
def test_shape_errors_name_entry(spec, input_shape, index, fragment):
    with pytest.raises(SpecError) as info:
        infer_shapes(parse_spec(spec), input_shape)
    message = str(info.value)
    assert f"entry {index} ({spec[index]!r})" in message
    assert fragment in message
    with pytest.raises(SpecError, match=re.escape(f"entry {index}")):
        build(spec, input_shape)


@pytest.mark.parametrize("shape", [(4,), (4, 4, 0), (4.0, 4, 3), "abc", 5])
def test_bad_input_shape(shape):
    with pytest.raises(SpecError, match="input_shape"):
        build(["SiLU"], shape)


def test_call_rejects_wrong_input_shape():
    model = build(["C2d_3_4_3_1_1"], (4, 4, 3))
    params = _random_params(model, (4, 4, 3))
    bad_inputs = [jnp.zeros(s) for s in ((1, 4, 4, 4), (1, 3, 4, 4), (4, 4, 3))]
    for bad in bad_inputs:
        expected = r"expects input of shape \(batch, 4, 4, 3\)"
        with pytest.raises(ValueError, match=expected):
            model.apply(params, bad)


# --- build() input forms ----------------------------------------------------


def test_build_accepts_list_json_and_path(tmp_path):
    spec = ["C2d_3_4_3_1_1", "2*SiLU"]
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    models = [
        build(spec, (4, 4, 3)),
        build(json.dumps(spec), (4, 4, 3)),
        build(str(path), (4, 4, 3)),
        build(path, (4, 4, 3)),
    ]
    for model in models:
        assert isinstance(model, SpecNet)
        assert model.spec == tuple(spec)
        assert model.input_shape == (4, 4, 3)
    assert load_spec(path) == tuple(spec)


def test_build_bad_sources(tmp_path):
    with pytest.raises(SpecError, match="could not read"):
        build(str(tmp_path / "missing.json"), (4, 4, 3))
    bad = tmp_path / "bad.json"
    bad.write_text("[\"SiLU\",")
    with pytest.raises(SpecError, match="not valid JSON"):
        build(bad, (4, 4, 3))
    obj = tmp_path / "obj.json"
    obj.write_text('{"layers": []}')
    with pytest.raises(SpecError, match="list of strings"):
        build(obj, (4, 4, 3))


# --- block semantics --------------------------------------------------------


def test_resblock_projection_only_when_channels_change():
    same, _ = _abstract(["VAERB_4_4"], (3, 3, 4))
    diff, _ = _abstract(["VAERB_4_8"], (3, 3, 4))
    same_block = same["params"]["layers_0"]
    diff_block = diff["params"]["layers_0"]
    assert "skip" not in same_block
    assert set(same_block) == {"norm1", "conv1", "norm2", "conv2"}
    assert "skip" in diff_block
    assert diff_block["skip"]["kernel"].shape == (1, 1, 4, 8)
    # GroupNorm group counts come from default_num_groups, not the spec.
    assert diff_block["norm1"]["scale"].shape == (4,)
    assert diff_block["norm2"]["scale"].shape == (8,)


def test_resblock_identity_skip_is_residual():
    # With the residual branch's last conv zeroed the block must be exactly
    # the identity, which only holds if the skip adds x unchanged.
    model = build(["VAERB_4_4"], (3, 3, 4))
    params = _random_params(model, (3, 3, 4))
    conv2 = params["params"]["layers_0"]["conv2"]
    params["params"]["layers_0"]["conv2"] = jax.tree_util.tree_map(
        jnp.zeros_like, conv2
    )
    x = jax.random.normal(jax.random.key(3), (2, 3, 3, 4))
    np.testing.assert_array_equal(jax.jit(model.apply)(params, x), x)


def test_attention_is_permutation_equivariant():
    h, w, c = 3, 4, 8
    model = build(["VAEA_8"], (h, w, c))
    x = jax.random.normal(jax.random.key(0), (2, h, w, c))
    # Random (rather than freshly initialised) params give non-trivial
    # attention weights, so equivariance is not satisfied by accident.
    params = _random_params(model, (h, w, c))
    apply = jax.jit(model.apply)
    y = apply(params, x)
    assert y.shape == x.shape

    perm = np.random.default_rng(0).permutation(h * w)

    def permute(a):
        return a.reshape(2, h * w, c)[:, perm].reshape(2, h, w, c)

    y_perm = apply(params, permute(x))
    np.testing.assert_allclose(y_perm, permute(y), rtol=1e-5, atol=1e-5)
    # Sanity check that the permutation actually moved something.
    assert not np.allclose(permute(x), x)


def test_attention_params():
    params, _ = _abstract(["VAEA_4"], (2, 2, 4))
    block = params["params"]["layers_0"]
    assert set(block) == {"norm", "q", "k", "v", "proj_out"}
    for name in ("q", "k", "v", "proj_out"):
        assert block[name]["kernel"].shape == (4, 4)


@pytest.mark.parametrize("factor", [2, 3])
def test_upsample_then_maxpool_recovers_input(factor):
    spec = [f"UpS_{factor}", f"MaxP_{factor}"]
    model = build(spec, (3, 2, 2))
    x = jax.random.normal(jax.random.key(0), (2, 3, 2, 2))
    params, _ = _abstract(spec, (3, 2, 2))
    assert not jax.tree_util.tree_leaves(params)
    np.testing.assert_array_equal(jax.jit(model.apply)({}, x), x)


def test_upsample_is_nearest_neighbour():
    model = build(["UpS_2"], (2, 2, 1))
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    y = model.apply({}, x)[0, :, :, 0]
    np.testing.assert_array_equal(
        y, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )


def test_conv_padding_after_pads_bottom_and_right_only():
    # Stable Diffusion's downsampling: a 3x3 stride-2 conv of ones sums rows and
    # columns 0..2 for output (0, 0) and 2..3 plus the zero row/column for (1, 1).
    model = build(["C2d_1_1_3_2_0_1"], (4, 4, 1))
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    params = {"params": {"layers_0": {"kernel": jnp.ones((3, 3, 1, 1)), "bias": jnp.zeros(1)}}}
    y = np.asarray(model.apply(params, x))[0, :, :, 0]
    grid = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(y, [[grid[:3, :3].sum(), grid[:3, 2:].sum()],
                                      [grid[2:, :3].sum(), grid[2:, 2:].sum()]])


def test_conv_padding_is_symmetric_explicit():
    # A 1x1 conv with padding 1 surrounds the output with bias-only pixels;
    # 'SAME' padding would not change the size at all.
    model = build(["C2d_1_1_1_1_1"], (2, 2, 1))
    x = jnp.ones((1, 2, 2, 1))
    params = model.init(jax.random.key(0), x)
    y = model.apply(params, x)[0, :, :, 0]
    assert y.shape == (4, 4)
    bias = params["params"]["layers_0"]["bias"][0]
    np.testing.assert_allclose(y[0], bias)
    np.testing.assert_allclose(y[:, -1], bias)


# --- hypothesis property tests ---------------------------------------------

_small = st.integers(min_value=1, max_value=64)

_LAYER_ARGS = {
    "C2d": st.one_of(st.tuples(_small, _small, _small, _small, st.integers(0, 8)),
                     st.tuples(_small, _small, _small, _small, st.integers(0, 8),
                               st.integers(0, 8))),
    "VAERB": st.one_of(st.tuples(_small, _small), st.tuples(_small, _small, _small)),
    "VAEA": st.one_of(st.tuples(_small), st.tuples(_small, _small)),
    "GN": st.tuples(_small, _small),
    "SiLU": st.just(()),
    "MaxP": st.one_of(st.tuples(_small), st.tuples(_small, _small)),
    "UpS": st.tuples(_small),
}

_entry = st.sampled_from(sorted(_LAYER_ARGS)).flatmap(
    lambda token: st.tuples(
        st.just(token),
        _LAYER_ARGS[token],
        st.integers(min_value=1, max_value=4),
        st.booleans(),
    )
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_entry, max_size=8))
def test_parse_counts_and_round_trip(entries):
    texts = []
    for token, args, count, explicit_one in entries:
        body = "_".join([token, *map(str, args)])
        texts.append(f"{count}*{body}" if count > 1 or explicit_one else body)

    layers = parse_spec(texts)
    assert len(layers) == sum(count for _, _, count, _ in entries)

    expected_indices = [i for i, (_, _, n, _) in enumerate(entries) for _ in range(n)]
    assert [layer.index for layer in layers] == expected_indices
    for layer in layers:
        assert isinstance(layer, LayerSpec)
        assert layer.text == texts[layer.index]
        (again,) = parse_spec([layer.format()])
        assert (again.token, again.args) == (layer.token, layer.args)
        assert again.format() == layer.format()


_garbage_alphabet = st.sampled_from(
    [*"CdVAERBGNSiLUMaxPpUS_*0123456789-+. x\t", "C2d", "VAERB", "MaxP", "²", "３"]
)
_garbage_entry = st.one_of(
    st.text(max_size=20),
    st.lists(_garbage_alphabet, max_size=12).map("".join),
)


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.lists(_garbage_entry, max_size=5),
        st.lists(st.one_of(_garbage_entry, st.integers(), st.none()), max_size=3),
        st.text(max_size=30),
    )
)
def test_garbage_parses_or_raises_spec_error(spec):
    try:
        layers = parse_spec(spec)
    except SpecError:
        return
    for layer in layers:
        assert layer.token in KNOWN_TOKENS
        assert all(isinstance(a, int) for a in layer.args)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_inferred_shape_matches_traced_module(data):
    # Random channel-consistent stacks: either build() rejects the spec with a
    # SpecError, or the module's real output shape is what infer_shapes says.
    h, w, c = (data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)),
               data.draw(st.integers(1, 4)))
    spec, channels = [], c
    for _ in range(data.draw(st.integers(0, 5))):
        token = data.draw(st.sampled_from(KNOWN_TOKENS))
        if token == "C2d":
            out = data.draw(st.integers(1, 4))
            k, s, p = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2)),
                       data.draw(st.integers(0, 2)))
            spec.append(f"C2d_{channels}_{out}_{k}_{s}_{p}")
            channels = out
        elif token == "VAERB":
            out = data.draw(st.integers(1, 4))
            spec.append(f"VAERB_{channels}_{out}")
            channels = out
        elif token == "VAEA":
            spec.append(f"VAEA_{channels}")
        elif token == "GN":
            groups = data.draw(st.sampled_from(
                [g for g in range(1, channels + 1) if channels % g == 0]))
            spec.append(f"GN_{groups}_{channels}")
        elif token == "MaxP":
            spec.append(f"MaxP_{data.draw(st.integers(1, 2))}_{data.draw(st.integers(1, 2))}")
        elif token == "UpS":
            spec.append(f"UpS_{data.draw(st.integers(1, 2))}")
        else:
            spec.append(token)
    try:
        expected = output_shape(spec, (h, w, c))
    except SpecError:
        with pytest.raises(SpecError):
            build(spec, (h, w, c))
        return
    _, y = _abstract(spec, (h, w, c))
    assert y.shape == (2, *expected)
