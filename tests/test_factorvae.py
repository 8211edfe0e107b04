"""FactorVAE: the dimension shuffle, the critic's TC estimate and its own Adam step, the
estimate of a known total correlation, and a run that resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jvae.app.runs import restore_run
from jvae.base import Forward
from jvae.distributions.posteriors import normal_posterior
from jvae.layers.latent_discriminator import mlp_discriminator
from jvae.objectives import factor_vae
from jvae.terms.composition import forward
from jvae.terms.total_correlation import discriminator_tc, permute_dims

from helpers import random_images, run_cli, tiny_vae


def test_permute_dims_shuffles_each_dimension_on_its_own_among_real_rows():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    z = rng.multivariate_normal(np.zeros(3), cov, size=2000).astype(np.float32)
    out = np.asarray(permute_dims(jax.random.key(1), jnp.asarray(z)))
    # Every column keeps its values (the marginals), each under its own permutation ...
    np.testing.assert_array_equal(np.sort(out, 0), np.sort(z, 0))
    moved = [np.mean(out[:, d] != z[:, d]) for d in range(3)]
    assert min(moved) > 0.99
    # ... so the joint becomes the product of the marginals: the correlation is gone.
    assert abs(np.corrcoef(z.T)[0, 1] - 0.9) < 0.02 and abs(np.corrcoef(out.T)[0, 1]) < 0.06
    # Padded rows (last, mask 0) are never drawn into real rows.
    mask = np.array([1.0] * 5 + [0.0] * 3, np.float32)
    small = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    small[5:] = -1.0
    got = np.asarray(permute_dims(jax.random.key(2), jnp.asarray(small), jnp.asarray(mask)))
    for d in range(4):
        assert sorted(got[:5, d]) == sorted(small[:5, d])
    np.testing.assert_array_equal(got[5:], small[5:])


def _np_critic(params, z):
    """The critic's logit in NumPy: Dense layers with leaky ReLU (0.2), then one logit."""
    h = np.asarray(z, np.float64).reshape(len(z), -1)
    names = sorted((k for k in params if k.startswith("dense_")), key=lambda k: int(k[6:]))
    for name in names:
        h = h @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
        h = np.where(h > 0, h, 0.2 * h)
    return (h @ np.asarray(params["logit"]["kernel"]) + np.asarray(params["logit"]["bias"]))[:, 0]


def test_tc_is_the_critics_mean_logit_and_the_critic_takes_one_adam_step():
    vae = tiny_vae(normal_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    critic = mlp_discriminator((16, 16))
    adam = optax.adam(1e-3, b1=0.5, b2=0.9)
    objective = factor_vae(vae, critic, gamma=7.0, beta=2.0, optimizer=adam, num_samples=2)
    state = objective.init()
    mask = jnp.asarray([1.0] * 6 + [0.0] * 2)
    batch, key = {"image": x, "mask": mask}, jax.random.key(3)
    out, new_state = jax.jit(objective.terms)(params, batch, key, state)
    codes, fkey = jax.jit(lambda p: (lambda f: (f.z, f.key))(
        forward(vae, p, batch, key, num_samples=2)))(params)
    d0 = state["tc"].params
    z = np.asarray(codes)
    want_tc = np.mean([_np_critic(d0, z[s]) for s in range(2)], axis=0)
    np.testing.assert_allclose(np.asarray(out["tc"]), want_tc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["loss"]), np.asarray(
        out["recon"] + 2.0 * out["kl"] + 7.0 * out["tc"]), rtol=1e-5)
    # The critic's step: Adam on the masked cross-entropy between codes and their shuffle.
    keys = jax.random.split(fkey, 2)
    shuffled = jnp.stack([permute_dims(keys[s], codes[s], mask) for s in range(2)])

    @jax.jit
    def d_loss(p):
        real = jnp.stack([critic.apply(p, codes[s]) for s in range(2)])
        fake = jnp.stack([critic.apply(p, shuffled[s]) for s in range(2)])
        per = jnp.mean(0.5 * (jax.nn.softplus(-real) + jax.nn.softplus(fake)), axis=0)
        return jnp.sum(per * mask) / jnp.sum(mask)

    np.testing.assert_allclose(float(out["tc_d_loss"][0]), float(d_loss(d0)), rtol=1e-5)
    updates, _ = adam.update(jax.jit(jax.grad(d_loss))(d0), adam.init(d0), d0)
    for a, b in zip(jax.tree.leaves(optax.apply_updates(d0, updates)),
                    jax.tree.leaves(new_state["tc"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(new_state["tc"].step) == 1


def test_a_trained_critic_estimates_a_known_total_correlation():
    """Codes N(0, R) with correlation rho: TC = -log(1 - rho^2) / 2 (0.51 nats at 0.8)."""
    rho, batch = 0.8, 512
    chol = jnp.linalg.cholesky(jnp.array([[1.0, rho], [rho, 1.0]]))
    steps = 400
    adam = optax.adam(optax.exponential_decay(1e-2, steps, 0.05), b1=0.5, b2=0.9)
    term = discriminator_tc(mlp_discriminator((32, 32)), (2,), optimizer=adam, seed=0)

    def fwd_of(key):
        z = jax.random.normal(key, (1, batch, 2)) @ chol.T
        return Forward(None, None, None, None, None, {}, z, None, None, None, None,
                       key=jax.random.fold_in(key, 1))

    @jax.jit
    def train(state, key):
        def step(s, k):
            return term.apply(fwd_of(k), s)[2], None
        return jax.lax.scan(step, state, jax.random.split(key, steps))[0]

    state = train(term.init(None), jax.random.key(0))
    estimate = float(jnp.mean(term.apply(fwd_of(jax.random.key(99)), state)[0]))
    assert abs(estimate - (-0.5 * np.log(1 - rho ** 2))) < 0.1, estimate


ARGS = ["--dataset", "digits", "--model", "factorvae", "--factorvae-hidden", "16,16",
        "--factorvae-lr", "1e-3", "--batch-size", "64", "--eval-batch-size", "128",
        "--hidden", "16", "--latent-dim", "2", "--num-images", "4", "--quality-images", "0",
        "--data-placement", "host"]


def _rows(workdir):
    return [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_factorvae_run_resumes_exactly(tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    for workdir, epochs in ((full, 2), (split, 1)):
        code, out = run_cli(["train", *ARGS, "--workdir", str(workdir), "--epochs", str(epochs)],
                            capsys)
        assert code == 0, out.err[-2000:]
    assert run_cli(["train", "--workdir", str(split), "--epochs", "2"], capsys)[0] == 0
    a, b = _rows(full), _rows(split)
    compared = ("step", "neg_elbo", "recon", "kl", "tc", "tc_d_loss", "train_loss", "train_tc",
                "train_tc_d_loss")
    assert [[r[k] for k in compared] for r in a] == [[r[k] for k in compared] for r in b]
    finals = [restore_run(d).state for d in (full, split)]
    critic = finals[0].loss_state["tc"]
    assert int(critic.step) == a[-1]["step"]  # one critic step per train step
    for x, y in zip(jax.tree.leaves((finals[0].params, finals[0].loss_state)),
                    jax.tree.leaves((finals[1].params, finals[1].loss_state))):
        np.testing.assert_array_equal(x, y)
