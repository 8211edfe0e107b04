"""Networks and the call contract: jvae's own modules, a user's Linen and NNX modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jvae.devices.parallel import data_mesh, replicate, shard_batch
from jvae.distributions.likelihoods import bernoulli, gaussian
from jvae.distributions.posteriors import dirichlet_posterior, normal_posterior
from jvae.model import make_vae
from jvae.nets import ConvDecoder, ParamHead, make_nets
from jvae.objectives import elbo
from jvae.train_state import create_train_state, make_optimizer, make_train_step


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("post", [normal_posterior(), dirichlet_posterior()])
def test_builtin_nets_emit_the_families_parameters(kind, post):
    lik = gaussian(learn_scale=True)
    enc, dec = make_nets(kind, posterior=post, likelihood=lik, latent_shape=(6,),
                         data_shape=(8, 8, 3), hidden=(16,), channels=(4, 8))
    vae = make_vae(enc, dec, post, lik, (6,))
    x = jnp.ones((2, 8, 8, 3))
    params = vae.init(jax.random.key(0), x)
    q = vae.encode(params, x)
    assert {k: v.shape for k, v in q.items()} == {k: (2, *s) for k, s in post.param_shapes((6,)).items()}
    if post.name == "dirichlet":
        assert jnp.all(q["concentration"] > 0)
    out = vae.decode(params, post.mean(q))
    assert out["loc"].shape == out["scale"].shape == (2, 8, 8, 3) and jnp.all(out["scale"] > 0)


def test_conditioning_changes_the_output():
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=(2,),
                         data_shape=(4, 4, 1), hidden=(8,))
    vae = make_vae(enc, dec, post, lik, (2,))
    x, c0, c1 = jnp.ones((1, 4, 4, 1)), jnp.eye(3)[:1], jnp.eye(3)[1:2]
    params = vae.init(jax.random.key(0), x, c0)
    z = jnp.zeros((1, 2))
    assert not jnp.allclose(vae.decode(params, z, c0)["logits"], vae.decode(params, z, c1)["logits"])


def test_conv_decoder_rejects_indivisible_shapes():
    dec = ConvDecoder(bernoulli(), (30, 30, 1), channels=(8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        dec.init(jax.random.key(0), jnp.zeros((1, 2)))


class _LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return {"loc": nn.Dense(3)(h), "scale": nn.softplus(nn.Dense(3)(h)) + 1e-3}


class _NNXDecoder(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 16, rngs=rngs)
        self.out = nnx.Linear(16, 16, rngs=rngs)

    def __call__(self, z):
        return {"logits": self.out(nnx.tanh(self.hidden(z))).reshape(-1, 4, 4, 1)}


def test_user_linen_and_nnx_modules_train_data_parallel():
    post, lik = normal_posterior(), bernoulli()
    vae = make_vae(_LinenEncoder(), _NNXDecoder(nnx.Rngs(0)), post, lik, (3,))
    objective, opt = elbo(vae), make_optimizer(3e-2)
    x = (np.random.default_rng(0).random((16, 4, 4, 1)) > 0.5).astype(np.float32)
    batch = {"image": x, "mask": np.ones(16, np.float32)}
    mesh = data_mesh()
    state = replicate(create_train_state(vae, objective, opt, jax.random.key(0), batch), mesh)
    step = make_train_step(objective, opt, mesh=mesh)
    b = shard_batch(batch, mesh)
    initial = jax.device_get(state.params)
    losses = []
    for _ in range(40):
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0] - 1.0
    # Both halves learn: the Linen encoder's and the NNX decoder's own Param
    # leaves (split out by nnx.split, merged inside the jitted step) all moved.
    final = jax.device_get(state.params)
    for part in ("encoder", "decoder"):
        moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial[part]),
                                                      jax.tree.leaves(final[part]))]
        assert moved and all(moved), part


def test_wrong_encoder_output_is_reported():
    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            return {"mean": nn.Dense(3)(x.reshape(x.shape[0], -1))}

    vae = make_vae(Bad(), _NNXDecoder(nnx.Rngs(0)), normal_posterior(), bernoulli(), (3,))
    with pytest.raises(ValueError, match="lacks the normal posterior's parameters"):
        vae.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


def test_param_head_is_convolutional_on_matching_feature_maps():
    head = ParamHead.for_likelihood(bernoulli(), (8, 8, 2))
    params = head.init(jax.random.key(0), jnp.zeros((1, 8, 8, 5)))
    assert params["params"]["logits"]["kernel"].shape == (3, 3, 5, 2)


def test_vae_init_draws_the_modules_own_initial_values():
    """make_vae's init program (LLVM optimisation level 1 on CPU) draws the default level's bits."""
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=(4,),
                         data_shape=(8, 8, 1), hidden=(16,))
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 1))
    key = jax.random.key(7)
    params = make_vae(enc, dec, post, lik, (4,)).init(key, x)
    k_enc, k_dec = jax.random.split(key)
    default = {"xla_backend_optimization_level": 3}  # XLA's default; the suite runs at 0
    ref = {"encoder": jax.jit(enc.init, compiler_options=default)(k_enc, x)["params"],
           "decoder": jax.jit(dec.init, compiler_options=default)(k_dec, jnp.zeros((2, 4)))["params"]}
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)


def test_fast_compile_options_leave_the_users_xla_flags_alone(monkeypatch):
    """The CPU programs' compile options, less those XLA_FLAGS sets; none off the CPU."""
    from jvae._compile import fast_compile_options
    both = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}
    monkeypatch.setenv("XLA_FLAGS", "")
    assert fast_compile_options("cpu") == both
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert fast_compile_options("cpu") == {"xla_llvm_disable_expensive_passes": True}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3 "
                       "--xla_llvm_disable_expensive_passes=false")
    assert fast_compile_options("cpu") is None
    assert fast_compile_options("gpu") is None
