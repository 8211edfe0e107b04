"""Tests for jvae.layers.spec_nets: spec encoders/decoders, packaged architectures, CLI wiring."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import ConfigError, load_config_file, make_config
from jvae.devices.parallel import data_mesh, replicate
from jvae.distributions.likelihoods import bernoulli, gaussian
from jvae.distributions.posteriors import dirichlet_posterior, normal_posterior
from jvae.layers.spec import SpecError, parse_spec
from jvae.layers.spec_blocks import SpecNet, build
from jvae.layers.spec_nets import (
    SpecDecoder,
    SpecEncoder,
    available_architectures,
    decoder_input_shape,
    load_architecture,
    make_spec_nets,
    resolve_spec_pair,
)
from jvae.layers.spec_shapes import default_num_groups
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import elbo
from jvae.train import main
from jvae.train_state import create_train_state, make_optimizer, make_train_step
from jvae.training.experiment import DataSpec
from jvae.training.experiment import build as build_experiment

# Abstract tracing (jax.eval_shape) checks structure without XLA compiles,
# which dominate test time on CPU; a few tests run real jitted steps.


def _abstract_vae(arch, data_shape, posterior=None, likelihood=None, latent_shape=(20,),
                  batch=2):
    posterior = posterior or normal_posterior()
    likelihood = likelihood or bernoulli()
    enc, dec, latent = make_spec_nets(arch, posterior=posterior, likelihood=likelihood,
                                      data_shape=data_shape, latent_shape=latent_shape)
    vae = make_vae(enc, dec, posterior, likelihood, latent)
    x = jax.ShapeDtypeStruct((batch, *data_shape), jnp.float32)
    params = jax.eval_shape(vae.init, jax.random.key(0), x)
    post = jax.eval_shape(vae.encode, params, x)
    z = jax.ShapeDtypeStruct((batch, *latent), jnp.float32)
    lik = jax.eval_shape(vae.decode, params, z)
    return vae, params, post, lik


def _count(params) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


# --- packaged architectures -------------------------------------------------


def test_packaged_architectures_load():
    assert set(available_architectures()) >= {"mnist_mlp", "mnist_conv", "sd_vae", "sd_vae_mnist"}
    for name in available_architectures():
        arch = load_architecture(name)
        assert arch.encoder and arch.decoder and arch.description
        assert arch.latent in ("flat", "spatial")
        parse_spec(arch.encoder), parse_spec(arch.decoder)
    assert load_architecture("sd_vae.json") == load_architecture("sd_vae")


@pytest.mark.parametrize("name,data_shape,latent", [
    ("mnist_mlp", (28, 28, 1), (20,)),
    ("mnist_conv", (28, 28, 1), (20,)),
    ("sd_vae_mnist", (28, 28, 1), (7, 7, 4)),
    ("sd_vae", (256, 256, 3), (32, 32, 4)),  # 1/8 resolution, 4 channels
    ("sd_vae", (64, 64, 3), (8, 8, 4)),  # the same spec adapts to other sizes
    ("sd_vae", (40, 24, 3), (5, 3, 4)),
])
def test_packaged_shapes(name, data_shape, latent):
    vae, _, post, lik = _abstract_vae(name, data_shape)
    assert vae.latent_shape == latent
    assert post["loc"].shape == post["scale"].shape == (2, *latent)
    assert lik["logits"].shape == (2, *data_shape)


def test_sd_vae_matches_stable_diffusion_size():
    # Stable Diffusion's kl-f8 AutoencoderKL has 83,653,863 parameters; the
    # spec (no quant/post-quant difference, same blocks) must match exactly.
    _, params, _, _ = _abstract_vae("sd_vae", (64, 64, 3), likelihood=gaussian())
    assert _count(params) == 83_653_863


def test_mlp_spec_is_the_builtin_mlp():
    # Full-image conv + 1x1 convs are Dense layers: same parameter count as
    # the built-in 784-400-20 MLP VAE, layer by layer.
    _, params, _, _ = _abstract_vae("mnist_mlp", (28, 28, 1))
    enc, dec = make_nets("mlp", posterior=normal_posterior(), likelihood=bernoulli(),
                         latent_shape=(20,), data_shape=(28, 28, 1), hidden=(400,))
    builtin = jax.eval_shape(make_vae(enc, dec, normal_posterior(), bernoulli(), (20,)).init,
                             jax.random.key(0), jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
    encoder = (784 * 400 + 400) + 2 * (400 * 20 + 20)  # hidden layer, loc and scale heads
    decoder = (20 * 400 + 400) + (400 * 784 + 784)
    assert _count(params) == _count(builtin) == encoder + decoder
    assert params["encoder"]["net"]["layers_0"]["kernel"].shape == (28, 28, 1, 400)


def test_full_kernel_conv_on_a_1x1_map_is_dense():
    # C2d_c_o_k_1_(k-1) on a 1x1 input: output pixel (i, j) reads kernel tap
    # (k-1-i, k-1-j) only, so every output has its own weights (a Dense layer).
    model = build(["C2d_3_2_4_1_3"], (1, 1, 3))
    x = jax.random.normal(jax.random.key(0), (2, 1, 1, 3))
    params = model.init(jax.random.key(1), x)
    y = model.apply(params, x)
    assert y.shape == (2, 4, 4, 2)
    kernel, bias = params["params"]["layers_0"]["kernel"], params["params"]["layers_0"]["bias"]
    dense = jnp.einsum("bc,ijco->bijo", x[:, 0, 0], kernel[::-1, ::-1]) + bias
    np.testing.assert_allclose(y, dense, rtol=1e-5, atol=1e-5)


def test_decoder_input_shape():
    assert decoder_input_shape((20,)) == (1, 1, 20)
    assert decoder_input_shape((5, 4)) == (1, 1, 20)
    assert decoder_input_shape((8, 8, 4)) == (8, 8, 4)


# --- split vs head ----------------------------------------------------------


def test_spatial_encoder_splits_channels_through_constrain():
    posterior = normal_posterior()
    enc = SpecEncoder(("C2d_1_4_3_1_1",), (4, 4, 1), posterior, (4, 4, 2))
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    variables = enc.init(jax.random.key(1), x)
    assert set(variables["params"]) == {"net"}  # no head: the spec emits the parameters
    out = enc.apply(variables, x)
    raw = SpecNet(("C2d_1_4_3_1_1",), (4, 4, 1)).apply({"params": variables["params"]["net"]}, x)
    np.testing.assert_allclose(out["loc"], raw[..., :2], rtol=1e-6)
    np.testing.assert_allclose(out["scale"], jax.nn.softplus(raw[..., 2:]) + 1e-6, rtol=1e-6)


def test_flat_latent_uses_a_head_and_decoder_emits_logits_directly():
    _, params, _, _ = _abstract_vae("mnist_conv", (28, 28, 1))
    head = params["encoder"]["head"]
    assert head["loc"]["kernel"].shape == head["scale"]["kernel"].shape == (7 * 7 * 32, 20)
    assert set(params["decoder"]) == {"net"}  # 28x28x1 output = Bernoulli logits

    dec = SpecDecoder(("C2d_2_1_3_1_1",), (2, 2, 2), bernoulli(), (2, 2, 1))
    z = jax.random.normal(jax.random.key(0), (3, 2, 2, 2))
    variables = dec.init(jax.random.key(1), z)
    raw = SpecNet(("C2d_2_1_3_1_1",), (2, 2, 2)).apply({"params": variables["params"]["net"]}, z)
    np.testing.assert_array_equal(dec.apply(variables, z)["logits"], raw)


def test_head_when_channels_do_not_split():
    # A learned-scale Gaussian needs 2 channels; the 1-channel spec output
    # goes through a convolutional ParamHead instead.
    lik = gaussian(learn_scale=True)
    _, params, _, out = _abstract_vae("mnist_conv", (28, 28, 1), likelihood=lik)
    assert params["decoder"]["head"]["scale"]["kernel"].shape == (3, 3, 1, 1)
    assert out["loc"].shape == out["scale"].shape == (2, 28, 28, 1)


def test_condition_joins_the_head():
    enc = SpecEncoder(("C2d_1_4_3_1_1",), (4, 4, 1), normal_posterior(), (4, 4, 2))
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    c0, c1 = jnp.eye(3)[jnp.array([0, 0])], jnp.eye(3)[jnp.array([1, 1])]
    variables = enc.init(jax.random.key(1), x, c0)
    assert variables["params"]["head"]["loc"]["kernel"].shape == (3, 3, 4 + 3, 2)
    a, b = enc.apply(variables, x, c0), enc.apply(variables, x, c1)
    assert a["loc"].shape == (2, 4, 4, 2)
    assert not np.allclose(a["loc"], b["loc"])


def test_dirichlet_spatial_latent_uses_all_channels():
    # One parameter (concentration) takes all 8 channels: the latent is 7x7x8,
    # which sd_vae_mnist's 4-channel decoder rejects by name.
    with pytest.raises(SpecError, match=r"\(7, 7, 8\) map: .*in=4 does not match the 8"):
        _abstract_vae("sd_vae_mnist", (28, 28, 1), posterior=dirichlet_posterior())
    arch = {"latent": "spatial", "encoder": list(load_architecture("sd_vae_mnist").encoder),
            "decoder": ["C2d_8_16_3_1_1", "SiLU", "2*UpS_2", "C2d_16_1_3_1_1"]}
    vae, _, post, lik = _abstract_vae(arch, (28, 28, 1), posterior=dirichlet_posterior())
    assert vae.latent_shape == (7, 7, 8)
    assert post["concentration"].shape == (2, 7, 7, 8)
    assert lik["logits"].shape == (2, 28, 28, 1)


# --- the SD-style VAE trains ------------------------------------------------


def _narrow(spec, divisor=4):
    """An architecture's exact layer list with every width divided (GroupNorm groups follow)."""
    out = []
    for layer in parse_spec(spec):
        args = [a // divisor if a in (32, 64) else a for a in layer.args]
        if layer.token == "GN":
            args[0] = default_num_groups(args[1])
        out.append("_".join([layer.token, *map(str, args)]))
    return out


@pytest.mark.slow
def test_sd_style_vae_jitted_train_step():
    # sd_vae_mnist has sd_vae's layout (residual blocks, GroupNorm, attention,
    # stride-2 convs, upsampling) at a third of the depth: the step compiles in
    # half the time; the full sd_vae's forward pass is checked against diffusers.
    arch = load_architecture("sd_vae_mnist")
    narrow = {"latent": "spatial", "encoder": _narrow(arch.encoder),
              "decoder": _narrow(arch.decoder)}
    assert [s.split("_")[0] for s in narrow["encoder"]] == [
        layer.token for layer in parse_spec(arch.encoder)]
    posterior, likelihood = normal_posterior(), gaussian(scale=0.1)
    enc, dec, latent = make_spec_nets(narrow, posterior=posterior, likelihood=likelihood,
                                      data_shape=(28, 28, 1))
    assert latent == (7, 7, 4)
    vae = make_vae(enc, dec, posterior, likelihood, latent)
    objective, optimizer = elbo(vae), make_optimizer(1e-3)
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    batch = {"image": x, "mask": jnp.ones(2)}
    # A jitted init with an RBG key compiles ~3x faster than threefry here
    # (one generator call per parameter); the numbers drawn do not matter.
    key = jax.random.key(1, impl="unsafe_rbg")
    mesh = data_mesh(1)
    # Placed on the mesh first, as the CLI does: the step's output state then
    # has the input's sharding and the second call reuses the compiled step.
    state = replicate(create_train_state(vae._replace(init=jax.jit(vae.init)), objective,
                                         optimizer, key, batch), mesh)
    before = state.params
    step = make_train_step(objective, optimizer, mesh=mesh, donate=False)
    losses = []
    # Single-sample ELBOs are noisy step to step; over five steps the trend shows.
    for _ in range(5):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert int(state.step) == 5
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, state.params)
    assert all(jax.tree.leaves(moved))


# --- sources and errors -----------------------------------------------------


def test_architecture_sources_are_equivalent(tmp_path):
    arch = load_architecture("mnist_conv")
    obj = {"latent": "flat", "encoder": list(arch.encoder), "decoder": list(arch.decoder)}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(obj))
    bare = tmp_path / "enc.json"
    bare.write_text(json.dumps(list(arch.encoder)))
    for source in (obj, json.dumps(obj), str(path), path):
        loaded = load_architecture(source)
        assert (loaded.encoder, loaded.decoder, loaded.latent) == (
            arch.encoder, arch.decoder, "flat")
    pair = resolve_spec_pair(bare, "mnist_conv")
    assert (pair.encoder, pair.decoder, pair.latent) == (arch.encoder, arch.decoder, "flat")


def test_layout_comes_from_the_source_that_declares_it():
    enc_only = {"encoder": list(load_architecture("sd_vae_mnist").encoder)}  # no "latent" key
    assert load_architecture(enc_only).latent is None
    pair = resolve_spec_pair(enc_only, "sd_vae_mnist")
    assert pair.latent == "spatial"
    enc, dec, latent = make_spec_nets(enc_only, "sd_vae_mnist", posterior=normal_posterior(),
                                      likelihood=bernoulli(), data_shape=(28, 28, 1))
    assert latent == (7, 7, 4)


ERRORS = [
    (("nope",), "mnist_conv, mnist_mlp, sd_vae"),
    ((["SiLU"],), "bare list of layers, so it has no decoder"),
    (("mnist_conv", "sd_vae"), "declares a flat latent but decoder_spec 'sd_vae' a spatial"),
    (({"latent": "spatial", "encoder": ["C2d_1_3_3_1_1"], "decoder": ["SiLU"]},),
     "outputs 3 channels, which do not split into the normal posterior's 2 parameters"),
    (({"latent": "spatial", "encoder": ["C2d_1_4_3_2_1"], "decoder": ["C2d_2_1_3_1_1"]},),
     "outputs 14x14 maps but the data is 28x28"),
    (({"latent": "cube", "encoder": ["SiLU"]},), "latent='cube' is not one of flat, spatial"),
    (({"encoder": ["SiLU"], "decoder": ["SiLU"], "layers": []},), "unknown keys ['layers']"),
    (({"encoder": ["SiLU", "C2d_1_x_3_1_1"], "decoder": ["SiLU"]},),
     "entry 1 ('C2d_1_x_3_1_1'): argument 'out' must be an integer"),
    (("sd_vae",), "encoder_spec 'sd_vae' on (28, 28, 1) data: layer spec entry 0 "
                  "('C2d_3_128_3_1_1'): in=3 does not match the 1 channels"),
]


@pytest.mark.parametrize("args,fragment", ERRORS)
def test_spec_errors_name_the_problem(args, fragment):
    with pytest.raises(SpecError) as info:
        make_spec_nets(*args, posterior=normal_posterior(), likelihood=bernoulli(),
                       data_shape=(28, 28, 1))
    assert fragment in str(info.value)


def test_latent_dim_must_fit_the_decoder():
    with pytest.raises(SpecError, match=r"\(1, 1, 8\) map: .*in=20 does not match the 8 channels"):
        make_spec_nets("mnist_conv", posterior=normal_posterior(), likelihood=bernoulli(),
                       data_shape=(28, 28, 1), latent_shape=(8,))
    with pytest.raises(SpecError, match="image data"):
        make_spec_nets("mnist_conv", posterior=normal_posterior(), likelihood=bernoulli(),
                       data_shape=(784,))


# --- config and CLI -----------------------------------------------------------


@pytest.mark.parametrize("values,fragment", [
    ({"net": "spec"}, "net=spec needs encoder_spec"),
    ({"encoder_spec": "mnist_conv"}, "add --net spec"),
    ({"net": "spec", "encoder_spec": "mnist_conv", "decoder_spec": '["Bad_1"]'},
     "unknown token 'Bad'"),
    ({"net": "spec", "encoder_spec": "missing_arch"}, "neither a packaged architecture"),
])
def test_config_rejects_bad_specs(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_config(values)


def test_config_file_may_inline_specs(tmp_path):
    arch = load_architecture("mnist_conv")
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"net": "spec", "encoder_spec": list(arch.encoder),
                                "decoder_spec": {"decoder": list(arch.decoder)}}))
    cfg = make_config(load_config_file(path))
    assert json.loads(cfg.encoder_spec) == list(arch.encoder)
    vae = build_experiment(cfg, DataSpec((28, 28, 1))).vae
    assert vae.latent_shape == (20,)
    with pytest.raises(ConfigError, match="in=3 does not match"):
        build_experiment(make_config({"net": "spec", "encoder_spec": "sd_vae"}), DataSpec((28, 28, 1)))


def test_cli_trains_a_spec_net(tiny_mnist_dir, tmp_path):
    # mnist_mlp compiles fastest; every packaged spec takes the same CLI path.
    workdir = tmp_path / "run"
    rc = main(["--data-dir", str(tiny_mnist_dir), "--workdir", str(workdir), "--net", "spec",
               "--encoder-spec", "mnist_mlp", "--epochs", "1", "--batch-size", "64",
               "--eval-batch-size", "128", "--num-images", "16"])
    assert rc == 0
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(row["neg_elbo"]) and row["neg_elbo"] < 543.0  # 784 * log 2: chance
    with Image.open(workdir / "images" / "reconstructions_epoch001.png") as grid:
        size = grid.size
    # 8 originals over 8 reconstructions: 2 rows of 8 28x28 tiles, 2-px gaps, x2 scale.
    assert size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))


def test_cli_spec_error_exits_2_before_writing(tiny_mnist_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    rc = main(["--data-dir", str(tiny_mnist_dir), "--workdir", str(workdir), "--net", "spec",
               "--encoder-spec", "sd_vae"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in=3 does not match the 1 channels" in err
    assert not workdir.exists()
