"""Tests for jvae.layers.sequence: recurrent encoders/decoders and their three decoder modes."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import ConfigError, make_config
from jvae.data import load_mnist_idx, to_float
from jvae.distributions.likelihoods import bernoulli, gaussian
from jvae.distributions.posteriors import normal_posterior
from jvae.layers.sequence import DECODER_MODES, RNNDecoder, make_rnn_nets
from jvae.model import make_vae
from jvae.objectives import elbo
from jvae.train import main
from jvae.train_state import create_train_state, make_optimizer, make_update_fn
from jvae.training.experiment import DataSpec, build

LATENT, HIDDEN = 6, 16


def _vae(mode, cell="lstm", likelihood=None, data_shape=(28, 28, 1)):
    likelihood = likelihood or bernoulli()
    enc, dec = make_rnn_nets(posterior=normal_posterior(), likelihood=likelihood,
                             latent_shape=(LATENT,), data_shape=data_shape, cell=cell,
                             hidden=HIDDEN, mode=mode)
    return make_vae(enc, dec, normal_posterior(), likelihood, (LATENT,))


@pytest.fixture(scope="module")
def mnist_rows(mnist_dir):
    """32 real MNIST test images, read by the nets as 28 steps of 28 pixels."""
    return to_float(load_mnist_idx(mnist_dir, "test")["image"][:32])


# Width of the cell's input at each step, per mode: z, [z, y_prev], y_prev.
_INPUT_WIDTH = {"repeat_latent": LATENT, "concat_output_latent": LATENT + 28,
                "output_as_input": 28}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", DECODER_MODES)
def test_shapes_and_step_inputs(mode, cell):
    vae = _vae(mode, cell)
    x = jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32)
    params = jax.eval_shape(vae.init, jax.random.key(0), x)
    post = jax.eval_shape(vae.encode, params, x)
    assert post["loc"].shape == post["scale"].shape == (3, LATENT)
    lik = jax.eval_shape(vae.decode, params, jax.ShapeDtypeStruct((3, LATENT), jnp.float32))
    assert lik["logits"].shape == (3, 28, 28, 1)

    step_cell = params["decoder"]["step"]["cell"]
    # The input kernel of the cell shows what the decoder reads at each step.
    input_kernel = step_cell["ii"] if cell == "lstm" else step_cell["ir"]
    assert input_kernel["kernel"].shape == (_INPUT_WIDTH[mode], HIDDEN)
    # The initial state comes from z in every mode: (c, h) for an LSTM, h for a GRU.
    init_layers = {k for k in params["decoder"] if k.startswith("init_")}
    assert len(init_layers) == (2 if cell == "lstm" else 1)


# output_as_input trains through the CLI below (one compile set per mode is
# the cost of these tests).
@pytest.mark.parametrize("mode", ["repeat_latent", "concat_output_latent"])
def test_modes_train_on_mnist_rows(mode, mnist_rows):
    vae = _vae(mode)
    objective, optimizer = elbo(vae), make_optimizer(1e-2)
    update = make_update_fn(objective, optimizer)

    @jax.jit
    def run(key, batch):
        # Init and 40 train steps in one executable: one compile, not two.
        state = create_train_state(vae, objective, optimizer, key, batch)

        def body(state, _):
            state, metrics = update(state, batch)
            return state, metrics["loss"]
        return jax.lax.scan(body, state, None, length=40)

    batch = {"image": jnp.asarray(mnist_rows), "mask": jnp.ones(len(mnist_rows))}
    state, losses = run(jax.random.key(0), batch)
    assert int(state.step) == 40
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.75 * losses[0]  # ~543 nats at init (logits ~ 0)


def _random_params(vae, seed=0):
    """Random (not freshly initialised) parameters, without compiling ``init``."""
    shapes = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((4, 28, 28, 1)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def _without_input_weights(params):
    params = jax.tree.map(jnp.copy, params)
    cell = params["decoder"]["step"]["cell"]
    for gate in ("ii", "if", "ig", "io"):  # the LSTM's input-to-gate kernels
        cell[gate]["kernel"] = jnp.zeros_like(cell[gate]["kernel"])
    return params


@pytest.mark.parametrize("mode", ["output_as_input", "repeat_latent"])
def test_what_the_decoder_reads(mode):
    # output_as_input: y_{-1} = 0, so step 0 does not depend on the input
    # weights, and every later step reads the previous prediction through
    # them. repeat_latent reads z through them from step 0 on.
    vae = _vae(mode)
    params = _random_params(vae)
    z = jax.random.normal(jax.random.key(1), (4, LATENT))
    decode = jax.jit(lambda p: vae.decode(p, z)["logits"])
    a, b = decode(params), decode(_without_input_weights(params))
    if mode == "output_as_input":
        np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=1e-6)
    else:
        assert not np.allclose(a[:, 0], b[:, 0])
    assert not np.allclose(a[:, 1:], b[:, 1:])


def test_gaussian_likelihood_and_other_sequence_shapes():
    # Any (T, ...) data: 5 steps of 3x2 features, Gaussian means fed back.
    vae = _vae("concat_output_latent", likelihood=gaussian(), data_shape=(5, 3, 2))
    x = jax.ShapeDtypeStruct((2, 5, 3, 2), jnp.float32)
    params = jax.eval_shape(vae.init, jax.random.key(0), x)
    out = jax.eval_shape(vae.decode, params, jax.ShapeDtypeStruct((2, LATENT), jnp.float32))
    assert out["loc"].shape == (2, 5, 3, 2)
    assert params["decoder"]["step"]["cell"]["ii"]["kernel"].shape == (LATENT + 6, HIDDEN)


def test_bad_settings():
    with pytest.raises(ValueError, match="decoder mode 'teacher'"):
        make_rnn_nets(posterior=normal_posterior(), likelihood=bernoulli(), latent_shape=(4,),
                      data_shape=(28, 28, 1), mode="teacher")
    with pytest.raises(ValueError, match="rnn cell 'rnn'"):
        make_rnn_nets(posterior=normal_posterior(), likelihood=bernoulli(), latent_shape=(4,),
                      data_shape=(28, 28, 1), cell="rnn")
    with pytest.raises(ConfigError, match="steps, features"):
        build(make_config({"net": "rnn"}), DataSpec((784,)))
    with pytest.raises(ConfigError, match="decoder_mode='teacher' is not one of"):
        make_config({"net": "rnn", "decoder_mode": "teacher"})
    with pytest.raises(ValueError, match="decoder mode"):
        jax.eval_shape(RNNDecoder(bernoulli(), (28, 28, 1), mode="x").init, jax.random.key(0),
                       jnp.zeros((1, 4)))


def test_cli_trains_a_sequence_vae(tiny_mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    rc = main(["--data-dir", str(tiny_mnist_dir), "--workdir", str(workdir), "--net", "rnn",
               "--rnn-cell", "gru", "--rnn-hidden", "32", "--decoder-mode", "output_as_input",
               "--epochs", "1", "--batch-size", "32", "--eval-batch-size", "128",
               "--num-images", "16", "--latent-dim", "8", "--lr", "1e-2"])
    assert rc == 0
    saved = json.loads((workdir / "config.json").read_text())
    assert (saved["net"], saved["rnn_cell"], saved["decoder_mode"]) == (
        "rnn", "gru", "output_as_input")
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    # 16 steps from ~543 nats (784 log 2, logits ~ 0 at init).
    assert np.isfinite(row["neg_elbo"]) and row["neg_elbo"] < 450.0
    # Reconstructions come back as 28x28 images in the CLI's grids.
    with Image.open(workdir / "images" / "reconstructions_epoch001.png") as grid:
        grid.load()
    assert grid.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))
