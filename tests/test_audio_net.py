"""The default audio nets: each layer equals a reference formulation, shapes, specs, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jvae.layers.audio as audio
from jvae.distributions.likelihoods import gaussian
from jvae.distributions.posteriors import normal_posterior
from jvae.layers.audio import (
    AudioArchitecture,
    Conv1d,
    ConvTranspose1d,
    DownConv1d,
    Head1d,
    ResidualUnit1d,
    UpConv1d,
    audio_architecture,
    audio_specs,
    conv1d,
    make_audio_nets,
)
from jvae.layers.spec import SpecError
from jvae.layers.spec_blocks import build
from jvae.layers.spec_shapes import infer_shapes

# XLA's RngBitGenerator: the default threefry hash made most of these tests' compile time.
KEY = jax.random.key(1, impl="rbg")

TINY = AudioArchitecture(channels=(4, 8, 16), strides=(2, 4), dilations=(1, 3), kernel=3,
                         stem_kernel=5)


@pytest.fixture(params=["gemm", "lax"])
def method(request, monkeypatch):
    """Runs a test with each formulation of :func:`conv1d` (im2col + GEMM, XLA's conv)."""
    monkeypatch.setattr(audio, "_use_gemm", lambda *_: request.param == "gemm")
    return request.param


def perturbed(params, scale=0.3):
    """``params`` plus noise: away from the initial values, where zero-initialized layers
    hide the others' gradients (numpy's generator: XLA's would compile a program per shape)."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype),
                        params)


def random_params(module, x, scale=0.3):
    """Random parameters of ``module``'s shapes (no initializer runs: nothing to compile)."""
    shapes = jax.eval_shape(module.init, KEY, x)["params"]
    return perturbed(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), scale)


def assert_same_layers(pairs, atol=1e-5):
    """Each ``(ref, ours, x)``: ``ours`` has ``ref``'s parameters (names, shapes, initial
    values), outputs and gradients.

    As ``helpers.assert_same_layer``, for many pairs in two compiled programs
    (initialization, then outputs and gradients of ``sum(sin(layer(x)))`` with
    respect to parameters and input): compiling each step of each pair
    separately made this file several times slower.
    """
    key = KEY
    inits = jax.jit(lambda: [(r.init(key, x), o.init(key, x)) for r, o, x in pairs])()
    params = []
    for (p_ref, p_ours), (ref, ours, _) in zip(inits, pairs):
        assert jax.tree.structure(p_ref) == jax.tree.structure(p_ours), (ref, ours)
        for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_ours)):
            np.testing.assert_array_equal(a, b)  # same initializers, same values
        params.append(perturbed(p_ref))

    @jax.jit
    def outputs_and_grads(params):
        out = []
        for p, (ref, ours, x) in zip(params, pairs):
            for m in (ref, ours):
                y, pullback = jax.vjp(m.apply, p, x)
                out.append((y, pullback(jnp.cos(y))))  # the gradients of sum(sin(y))
        return list(zip(out[::2], out[1::2]))

    for ((y_ref, g_ref), (y_ours, g_ours)), (_ref, ours, _) in zip(outputs_and_grads(params), pairs):
        np.testing.assert_allclose(y_ours, y_ref, rtol=atol, atol=atol, err_msg=str(ours))
        for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=str(ours))


def _lax_reference(x, kernel, stride, dilation):
    k = kernel.shape[0]
    total = max(dilation * (k - 1) + 1 - stride, 0)
    return lax.conv_general_dilated(x, kernel, (stride,), ((total // 2, total - total // 2),),
                                    rhs_dilation=(dilation,),
                                    dimension_numbers=("NHC", "HIO", "NHC"))


def test_conv1d_equals_lax_dilated_conv(method):
    """Outputs and both gradients, dilated and strided, as GEMM and as XLA's convolution."""
    configs = [(3, 1, 1), (3, 1, 9), (7, 1, 3), (1, 1, 1), (4, 2, 1), (8, 4, 1)]  # taps, s, d
    x = jax.random.normal(jax.random.key(0), (2, 16, 3))
    ws = [jax.random.normal(jax.random.key(k), (c[0], 3, 5)) for k, c in enumerate(configs)]

    @jax.jit
    def both(x, ws):
        out = []
        for w, (_, stride, dilation) in zip(ws, configs):
            fs = (lambda x, w: conv1d(x, w, stride=stride, dilation=dilation),
                  lambda x, w: _lax_reference(x, w, stride, dilation))
            out.append([(f(x, w), jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))),
                                           (0, 1))(x, w)) for f in fs])
        return out

    for ((y, g), (y_ref, g_ref)), config in zip(both(x, ws), configs):
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=str(config))
        for a, b in zip(g, g_ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=str(config))


class _RefUnit(nn.Module):
    """The residual unit written with Flax's own convolutions."""
    channels: int
    dilation: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.channels, (3,), kernel_dilation=(self.dilation,), name="conv")(nn.elu(x))
        return x + nn.Conv(self.channels, (1,), kernel_init=nn.initializers.zeros_init(),
                           name="mix")(nn.elu(h))


class _RefDown(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        return nn.Conv(self.features, (2 * self.stride,), strides=(self.stride,),
                       name="conv")(nn.elu(x))


class _RefUp(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        return nn.ConvTranspose(self.features, (2 * self.stride,), strides=(self.stride,),
                                padding="SAME", name="conv")(nn.elu(x))


class _RefHead(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Conv(self.features, (9,), name="conv")(nn.elu(x))


def test_layers_equal_flax_formulations():
    # Each formulation of the convolutions inside is checked above; here the default one.
    x = lambda *shape: jax.random.normal(jax.random.key(0), shape)  # noqa: E731
    assert_same_layers([
        (nn.Conv(6, (3,), kernel_dilation=(3,), padding="SAME"), Conv1d(6, 3, dilation=3),
         x(2, 12, 3)),
        (nn.Conv(6, (4,), strides=(2,), padding="SAME"), Conv1d(6, 4, stride=2), x(2, 12, 3)),
        (nn.ConvTranspose(5, (8,), strides=(4,), padding="SAME"), ConvTranspose1d(5, 8, 4),
         x(2, 6, 3)),
        (nn.ConvTranspose(5, (3,), strides=(2,), padding="SAME"), ConvTranspose1d(5, 3, 2),
         x(2, 6, 3)),
        (_RefUnit(4, 3), ResidualUnit1d(4, 3), x(2, 16, 4)),
        (_RefDown(6, 2), DownConv1d(6, 2), x(2, 16, 4)),
        (_RefUp(6, 2), UpConv1d(6, 2), x(2, 8, 4)),
        (_RefHead(2), Head1d(2, 9), x(2, 8, 4)),
    ])


def test_blocks_equal_pytorch():
    """Same weights in PyTorch's layers (channels first, transposed kernels flipped)."""
    torch = pytest.importorskip("torch")
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 16, 4)))
    xt = torch.from_numpy(x.transpose(0, 2, 1).copy())
    elu = torch.nn.functional.elu

    def tw(kernel, flip=False):  # Flax (k, in, out) -> PyTorch conv (out, in, k) / transposed (in, out, k)
        k = np.asarray(kernel)
        return torch.from_numpy((k[::-1].transpose(1, 2, 0) if flip else k.transpose(2, 1, 0))
                                .copy())

    f = torch.nn.functional
    checks = [
        (ResidualUnit1d(4, 9), lambda p, x: x + f.conv1d(
            elu(f.conv1d(elu(x), tw(p["conv"]["kernel"]), torch.from_numpy(p["conv"]["bias"]),
                         padding=9, dilation=9)),
            tw(p["mix"]["kernel"]), torch.from_numpy(p["mix"]["bias"]))),
        (DownConv1d(6, 4), lambda p, x: f.conv1d(
            elu(x), tw(p["conv"]["kernel"]), torch.from_numpy(p["conv"]["bias"]), stride=4,
            padding=2)),
        (UpConv1d(6, 4), lambda p, x: f.conv_transpose1d(
            elu(x), tw(p["conv"]["kernel"], flip=True), torch.from_numpy(p["conv"]["bias"]),
            stride=4, padding=2)),
    ]

    params = [{"params": random_params(m, x)} for m, _ in checks]
    ys = jax.jit(lambda ps, x: [m.apply(p, x) for (m, _), p in zip(checks, ps)])(params, x)
    for (module, torch_fn), one, y in zip(checks, params, ys):
        p = jax.tree.map(np.array, one["params"])  # writable copies for torch
        want = torch_fn(p, xt).detach().numpy().transpose(0, 2, 1)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=str(module))


@pytest.mark.parametrize("length", [64, 256, 1024, 8192])
def test_output_shapes(length):
    arch = audio_architecture(length, base_channels=4, max_channels=8)
    assert length // arch.hop >= 4 and arch.hop == arch.bands * np.prod(arch.strides)
    lik = gaussian(learn_scale=True)
    enc, dec, latent = make_audio_nets(posterior=normal_posterior(), likelihood=lik,
                                       data_shape=(length, 1), latent_channels=3, arch=arch)
    assert latent == (length // arch.hop, 3)
    x = jnp.zeros((2, length, 1))
    q = jax.eval_shape(lambda: enc.apply(enc.init(jax.random.key(0), x), x))
    assert {k: v.shape for k, v in q.items()} == {"loc": (2, *latent), "scale": (2, *latent)}
    z = jnp.zeros((2, *latent))
    out = jax.eval_shape(lambda: dec.apply(dec.init(jax.random.key(0), z), z))
    assert {k: v.shape for k, v in out.items()} == {"loc": (2, length, 1),
                                                    "scale": (2, length, 1)}


def test_default_architecture():
    arch = audio_architecture(8192)
    # 8 PQMF bands at 1 kHz each, then two stages of 4: 128 samples per frame.
    assert arch.hop == 128 and arch.bands == 8 and arch.strides == (4, 4)
    assert arch.channels == (32, 64, 128)
    assert audio_architecture(16384).hop == 128  # the frame rate does not grow with the clip
    assert audio_architecture(64).hop == 16  # short clips keep 4 frames


def test_specs_build_the_same_function():
    """:func:`audio_specs` as a spec net computes the modules' function with their parameters."""
    bands = 2  # the PQMF layers' tokens too
    arch = TINY._replace(bands=bands)
    posterior, likelihood = normal_posterior(), gaussian()
    enc, dec, latent = make_audio_nets(posterior=posterior, likelihood=likelihood,
                                       data_shape=(32, 1), latent_channels=3, arch=arch)
    enc_spec, dec_spec = audio_specs(arch, 3)
    x = jax.random.normal(jax.random.key(0), (2, 32, 1))
    z = jax.random.normal(jax.random.key(1), (2, *latent))
    units = lambda s: [f"s{s}_unit{j}" for j in range(len(arch.dilations))]  # noqa: E731
    stages = range(len(arch.strides))
    # The spec's parametrized layers in order, as the module's submodule names; the PQMF
    # (first in the encoder, last in the decoder) has none.
    enc_names = (["-"] * (bands > 1) + ["stem"]
                 + [n for s in stages for n in units(s) + [f"s{s}_down"]] + ["head"])
    dec_names = (["stem"] + [n for s in reversed(stages) for n in [f"s{s}_up"] + units(s)]
                 + ["head"] + ["-"] * (bands > 1))
    for module, spec, names, inp, head in [(enc, enc_spec, enc_names, x, ("loc", "scale")),
                                           (dec, dec_spec, dec_names, z, ("loc",))]:
        net = build(spec, inp.shape[1:])
        assert len(spec) == len(names)

        params = random_params(module, inp)
        assert sorted(n for n in names if n != "-") == sorted(params)
        mapped = {f"layers_{i}": params[n] for i, n in enumerate(names)
                  if n not in ("-", "stem", "head")}
        stem = names.index("stem")  # a width-1 2-D kernel in the spec's C1d
        mapped[f"layers_{stem}"] = {"kernel": params["stem"]["kernel"][:, None],
                                    "bias": params["stem"]["bias"]}
        mapped[f"layers_{names.index('head')}"] = {"conv": {  # per-parameter convs stacked
            "kernel": jnp.concatenate([params["head"][h]["kernel"] for h in head], -1),
            "bias": jnp.concatenate([params["head"][h]["bias"] for h in head], -1)}}
        assert jax.tree.structure(jax.eval_shape(net.init, jax.random.key(0), inp)["params"]) \
            == jax.tree.structure(mapped)
        both = jax.jit(lambda inp, mapped, params, module=module, net=net: (
            net.apply({"params": mapped}, inp), module.apply({"params": params}, inp)))
        out, want = both(inp, mapped, params)
        constrain = posterior.constrain if module is enc else likelihood.constrain
        got = constrain(dict(zip(head, jnp.split(out, len(head), axis=-1))))
        for h in head:
            np.testing.assert_allclose(got[h], want[h], rtol=1e-5, atol=1e-5)


def test_spec_token_shapes_and_errors():
    spec = ["RU1d_4_3", "RU1d_4_9_5", "Down1d_4_8_4", "Up1d_8_2_2", "Head1d_2_5_3"]
    assert infer_shapes(spec, (16, 4)) == [(16, 1, 4), (16, 1, 4), (4, 1, 8), (8, 1, 2),
                                           (8, 1, 5)]
    with pytest.raises(SpecError, match="not a multiple of the stride 4"):
        infer_shapes(["Down1d_4_8_4"], (18, 4))
    with pytest.raises(SpecError, match="channels=8 does not match the 4 channels"):
        infer_shapes(["RU1d_8_1"], (16, 4))


def test_bad_shapes_raise_clear_errors():
    kw = dict(posterior=normal_posterior(), likelihood=gaussian(), latent_channels=4)
    with pytest.raises(ValueError, match=r"\(length, channels\).*\(T, 1\)"):
        make_audio_nets(data_shape=(28, 28, 1), **kw)
    with pytest.raises(ValueError, match="not divisible by the total stride 128.*multiple of 128"):
        make_audio_nets(data_shape=(8000, 1), **kw)
    enc, _, _ = make_audio_nets(data_shape=(32, 1), arch=TINY, **kw)
    with pytest.raises(ValueError, match="not divisible by the total stride 8"):
        jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 36, 1)))
