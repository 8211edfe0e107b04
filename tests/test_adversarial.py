"""The PatchGAN term: its discriminator, adaptive weight and updates inside the pure step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.devices.parallel import data_mesh, replicate, shard_batch
from jvae.layers.patchgan import output_size, patchgan_discriminator, receptive_field
from jvae.model import decode_samples
from jvae.terms.adversarial import GAN_LOSSES, adaptive_weight, last_layer_index, redecode
from jvae.terms.composition import forward
from jvae.terms.standard import reconstruction
from jvae.training.experiment import DataSpec, build, example_batch, init_state
from jvae.training.state import make_train_step

SMALL = {"net": "conv", "likelihood": "laplace", "hidden": (16,), "latent_dim": 2,
         "adv_weight": 0.5, "adv_layers": 2, "adv_channels": 8, "adv_lr": 1e-3}


def _torch_patchgan(layers, channels, in_channels):
    """pix2pix's NLayerDiscriminator (BatchNorm in training mode), written with torch.nn."""
    import torch.nn as tnn
    mods = [tnn.Conv2d(in_channels, channels, 4, 2, 1), tnn.LeakyReLU(0.2)]
    prev = channels
    for n in range(1, layers + 1):
        out = channels * min(2 ** n, 8)
        mods += [tnn.Conv2d(prev, out, 4, 2 if n < layers else 1, 1, bias=False),
                 tnn.BatchNorm2d(out), tnn.LeakyReLU(0.2)]
        prev = out
    mods.append(tnn.Conv2d(prev, 1, 4, 1, 1))
    return tnn.Sequential(*mods)


def test_patchgan_equals_pix2pix_discriminator():
    torch = pytest.importorskip("torch")
    layers, channels = 3, 8
    disc = patchgan_discriminator(layers, channels)
    x = np.random.default_rng(0).random((3, 40, 32, 3), np.float32)
    params = disc.init(jax.random.key(0), jnp.asarray(x))
    net = _torch_patchgan(layers, channels, 3).train()
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]
    names = [f"conv_{n}" for n in range(layers + 1)] + ["logits"]
    def t(a):
        return torch.from_numpy(np.array(a))

    with torch.no_grad():
        for conv, name in zip(convs, names):
            conv.weight.copy_(t(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1)))
            if conv.bias is not None:
                conv.bias.copy_(t(params[name]["bias"]))
        for norm, n in zip(norms, range(1, layers + 1)):
            norm.weight.copy_(t(params[f"norm_{n}"]["scale"]))
            norm.bias.copy_(t(params[f"norm_{n}"]["bias"]))
        # The nets see [-1, 1], as latent diffusion's discriminator does.
        want = net(t(2 * x - 1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = np.asarray(disc.apply(params, jnp.asarray(x)))
    assert got.shape == want.shape == (3, output_size(40, layers), output_size(32, layers), 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # pix2pix's initialization: N(0, 0.02) kernels, N(1, 0.02) scales.
    kernels = np.concatenate([np.ravel(params[n]["kernel"]) for n in names])
    assert abs(kernels.std() - 0.02) < 0.002 and abs(kernels.mean()) < 0.002
    assert receptive_field(3) == 70 and receptive_field(2) == 34


def _experiment(**kw):
    cfg = make_config({**SMALL, **kw})
    exp = build(cfg, DataSpec((16, 16, 1)))
    state = init_state(exp, jax.random.key(0), example_batch(exp, 8))
    x = np.random.default_rng(1).random((8, 16, 16, 1), np.float32)
    return exp, state, {"image": jnp.asarray(x), "mask": jnp.ones(8, jnp.float32)}


def test_last_layer_is_the_decoders_output_product():
    exp, state, _ = _experiment()
    z = jnp.zeros((1, 2, *exp.vae.latent_shape))
    index = last_layer_index(lambda p, z: decode_samples(exp.vae, p, z), state.params, z)
    path, leaf = jax.tree_util.tree_flatten_with_path(state.params)[0][index]
    assert jax.tree_util.keystr(path) == "['decoder']['head']['loc']['kernel']"
    # A decoder whose output is no product of its parameters has no last layer.
    with pytest.raises(ValueError, match="no-adv-adaptive"):
        last_layer_index(lambda p, z: {"loc": jnp.tanh(z) + p["b"]}, {"b": jnp.zeros(z.shape[-1])}, z)


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms():
    exp, state, batch = _experiment()
    vae, params = exp.vae, state.params
    key = jax.random.key(3)
    d_params = state.loss_state["adv"].params
    disc = patchgan_discriminator(2, 8)

    def gen(fwd):
        x_hat = fwd.vae.likelihood.mean(fwd.lik)[0]
        return jnp.mean(GAN_LOSSES["hinge"][1](disc.apply(d_params, x_hat)), axis=(1, 2, 3))

    def rec(fwd):
        return reconstruction().apply(fwd, ())[0]

    fwd = forward(vae, params, batch, key)
    got = adaptive_weight(fwd, rec, gen)
    # By hand: full gradients of each batch mean through the whole model at fixed z,
    # read at the head's kernel.
    leaves, tree = jax.tree.flatten(params)
    index = last_layer_index(lambda p, z: decode_samples(vae, p, z), params, fwd.z)

    def norm_of(value):
        g = jax.grad(lambda p: jnp.mean(value(redecode(fwd, p))))(params)
        return jnp.linalg.norm(jax.tree.leaves(g)[index])

    want = norm_of(rec) / (norm_of(gen) + 1e-4)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-4)
    assert float(want) > 0


def test_discriminator_steps_from_start_with_its_own_adam_on_one_device_as_on_eight():
    exp, state, batch = _experiment(adv_start=1)
    disc = patchgan_discriminator(2, 8)
    adam = optax.adam(1e-3, b1=0.5, b2=0.9)
    runs = {}
    for n in (1, 8):
        mesh = data_mesh(n)
        step = make_train_step(exp.objective, exp.optimizer, mesh=mesh, donate=False)
        sharded = shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
        s1, m1 = step(replicate(state, mesh), sharded)
        s2, m2 = step(s1, sharded)
        runs[n] = jax.device_get((s1, m1, s2, m2))
    s1, m1, s2, m2 = runs[1]
    # Before the start the term is 0 and the discriminator does not move.
    assert float(m1["adv"]) == 0.0 and float(m1["adv_weight"]) == 0.0
    for a, b in zip(jax.tree.leaves(state.loss_state["adv"].params),
                    jax.tree.leaves(s1.loss_state["adv"].params)):
        np.testing.assert_array_equal(a, b)
    assert float(m2["adv"]) != 0.0 and float(m2["adv_weight"]) > 0
    # From the start: one Adam step on the hinge loss against step 2's reconstructions.
    d0 = s1.loss_state["adv"].params
    fwd = forward(exp.vae, s1.params, batch, jax.random.split(s1.key)[1])
    fake = fwd.vae.likelihood.mean(fwd.lik)[0]

    def d_loss(p):
        real, fake_logits = disc.apply(p, batch["image"]), disc.apply(p, fake)
        return jnp.mean(jnp.mean(GAN_LOSSES["hinge"][0](real, fake_logits), axis=(1, 2, 3)))

    np.testing.assert_allclose(float(m2["adv_d_loss"]), float(d_loss(d0)), rtol=1e-5)
    updates, _ = adam.update(jax.grad(d_loss)(d0), adam.init(d0), d0)
    want = optax.apply_updates(d0, updates)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(s2.loss_state["adv"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Eight devices: the discriminator's batch statistics are the global batch's, so the
    # models and their discriminators agree up to the order of the sums (amplified by
    # Adam's first steps, whose size is the learning rate whatever the gradient's).
    _, _, s2_8, m2_8 = runs[8]
    for a, b in zip(jax.tree.leaves((s2.params, s2.loss_state)),
                    jax.tree.leaves((s2_8.params, s2_8.loss_state))):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-5)
    for k in m2:
        np.testing.assert_allclose(float(m2[k]), float(m2_8[k]), rtol=1e-3, atol=1e-5, err_msg=k)


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="--adv-layers 2"):
        build(make_config({**SMALL, "adv_layers": 3}), DataSpec((16, 16, 1)))
    with pytest.raises(ConfigError, match="images"):
        build(make_config({"adv_weight": 0.5}), DataSpec((512, 1)))
    with pytest.raises(ConfigError, match="adv_loss"):
        make_config({"adv_loss": "wasserstein"})
