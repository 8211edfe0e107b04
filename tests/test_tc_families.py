"""beta-TCVAE: the batch estimates of q(z) against NumPy and exact expectations, the KL's
decomposition, settings that cannot work, and one epoch from the command line."""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import make_config
from jvae.distributions.posteriors import normal_posterior
from jvae.objectives import beta_tcvae
from jvae.terms.composition import forward
from jvae.terms.total_correlation import aggregate_log_densities, log_importance_weights

from helpers import random_images, run_cli, tiny_vae


def _np_log_weights(batch, mask, n, estimator):
    """Chen et al.'s weights, one entry at a time."""
    real = [j for j in range(batch) if mask[j] > 0]
    m = len(real)
    n = m if n is None else max(n, m)
    out = np.full((batch, batch), -np.inf)
    for i in range(batch):
        for j in real:
            if estimator == "mws":
                out[i, j] = -math.log(n * m)
            elif j == i:
                out[i, j] = -math.log(n)
            elif j == (i + 1) % m:
                out[i, j] = math.log((n - m + 1) / (n * (m - 1)))
            else:
                out[i, j] = -math.log(m - 1)
    return out


def _np_log_normal(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)


def _np_aggregate(z, loc, scale, log_w):
    """``log sum_j w_ij q(z_i|x_j)`` and ``sum_d log sum_j w_ij q(z_id|x_jd)`` by loops."""
    s_, b_, d_ = z.shape
    joint, prod = np.zeros((s_, b_)), np.zeros((s_, b_))
    for s in range(s_):
        for i in range(b_):
            terms = [log_w[i, j] + sum(_np_log_normal(z[s, i, d], loc[j, d], scale[j, d])
                                       for d in range(d_)) for j in range(b_)]
            joint[s, i] = np.logaddexp.reduce(terms)
            prod[s, i] = sum(np.logaddexp.reduce(
                [log_w[i, j] + _np_log_normal(z[s, i, d], loc[j, d], scale[j, d])
                 for j in range(b_)]) for d in range(d_))
    return joint, prod


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_weights_and_batch_densities_match_numpy_loops(estimator):
    rng = np.random.default_rng(0)
    batch, mask = 6, np.array([1, 1, 1, 1, 1, 0], np.float32)  # one padded row, last
    for n in (None, 50):
        want = _np_log_weights(batch, mask, n, estimator)
        got = np.asarray(log_importance_weights(batch, jnp.asarray(mask), n, estimator))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        # MSS's weights of a real row sum to 1; MWS's to 1/N (the paper's 1/(N M) each).
        total = np.exp(want[:5]).sum(1)
        np.testing.assert_allclose(total, 1.0 if estimator == "mss" else 1 / (n or 5), rtol=1e-6)
    z = rng.normal(size=(2, batch, 3))
    loc, scale = rng.normal(size=(batch, 3)), rng.uniform(0.3, 1.5, size=(batch, 3))
    log_w = _np_log_weights(batch, mask, 50, estimator)
    got = aggregate_log_densities(*(jnp.asarray(a, jnp.float32) for a in (z, loc, scale, log_w)))
    for g, w in zip(got, _np_aggregate(z, loc, scale, log_w)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)


def test_batch_densities_gradient_is_the_finite_difference_of_the_numpy_loops():
    """The written-out gradient of z, loc and scale (padded columns included) against
    central differences of the float64 NumPy reference."""
    rng = np.random.default_rng(2)
    batch, mask = 6, np.array([1, 1, 1, 1, 1, 0], np.float32)
    z = rng.normal(size=(2, batch, 3))
    loc, scale = rng.normal(size=(batch, 3)), rng.uniform(0.3, 1.5, size=(batch, 3))
    log_w = _np_log_weights(batch, mask, 50, "mss")
    a, b = rng.normal(size=(2, batch)), rng.normal(size=(2, batch))

    def objective(z, loc, scale):
        log_qz, log_prod = _np_aggregate(z, loc, scale, log_w)
        return np.sum(a * log_qz) + np.sum(b * log_prod)

    def jax_objective(z, loc, scale):
        log_qz, log_prod = aggregate_log_densities(z, loc, scale, jnp.asarray(log_w, jnp.float32))
        return jnp.sum(a * log_qz) + jnp.sum(b * log_prod)

    args = [z, loc, scale]
    grads = jax.grad(jax_objective, argnums=(0, 1, 2))(
        *(jnp.asarray(x, jnp.float32) for x in args))
    for k, got in enumerate(grads):
        want = np.zeros_like(args[k])
        for idx in np.ndindex(args[k].shape):
            up, down = [x.copy() for x in args], [x.copy() for x in args]
            up[k][idx] += 1e-6
            down[k][idx] -= 1e-6
            want[idx] = (objective(*up) - objective(*down)) / 2e-6
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-4)


def test_stratified_estimate_of_q_z_is_unbiased_and_weighted_one_is_the_papers():
    """Over every ordered batch of M holding example i first, the mean of MSS's estimate of
    q(z) is the aggregate posterior exactly; MWS's is (q(z|x_i) + (M-1)/(N-1) sum_{n != i}
    q(z|x_n)) / (N M), the paper's lower-bounding normalization."""
    n, m, d = 8, 3, 2
    rng = np.random.default_rng(1)
    loc, scale = rng.normal(size=(n, d)), rng.uniform(0.5, 1.2, size=(n, d))
    z = rng.normal(size=(d,))
    dens = np.exp(_np_log_normal(z, loc, scale).sum(-1))  # q(z | x_n)
    batches = [(0, *rest) for rest in itertools.permutations(range(1, n), m - 1)]
    idx = jnp.asarray(batches)
    zz = jnp.broadcast_to(jnp.asarray(z, jnp.float32), (1, m, d))

    def estimate(rows, estimator):
        log_w = log_importance_weights(m, None, n, estimator)
        log_qz, _ = aggregate_log_densities(zz, jnp.asarray(loc, jnp.float32)[rows],
                                            jnp.asarray(scale, jnp.float32)[rows], log_w)
        return jnp.exp(log_qz[0, 0])

    for estimator, want in (("mss", dens.mean()),
                            ("mws", (dens[0] + (m - 1) / (n - 1) * dens[1:].sum()) / (n * m))):
        got = float(jnp.mean(jax.vmap(lambda r, e=estimator: estimate(r, e))(idx)))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_three_pieces_add_up_to_the_kl_estimate_and_weigh_the_loss():
    vae = tiny_vae(normal_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    mask = jnp.asarray([1.0] * 6 + [0.0] * 2)
    batch = {"image": x, "mask": mask}
    key = jax.random.key(4)
    mc_kl, kl = jax.jit(lambda p: (lambda f: (jnp.mean(f.log_q - f.log_pz, axis=0),
                                               vae.posterior.kl(f.post)))(
        forward(vae, p, batch, key, num_samples=2)))(params)
    for estimator in ("mws", "mss"):
        objective = beta_tcvae(vae, mi_weight=0.5, tc_weight=4.0, dim_kl_weight=2.0,
                               estimator=estimator, dataset_size=100, alpha=1.5, num_samples=2)
        out, _ = jax.jit(objective.terms)(params, batch, key, objective.init())
        out = {k: np.asarray(v) for k, v in out.items()}
        assert all(np.all(np.isfinite(v)) for v in out.values())  # padded rows too
        np.testing.assert_allclose(out["mi"] + out["tc"] + out["dwkl"], mc_kl, rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(out["loss"], 1.5 * out["recon"] + 0.5 * out["mi"]
                                   + 4.0 * out["tc"] + 2.0 * out["dwkl"], rtol=1e-5)
        np.testing.assert_allclose(out["neg_elbo"], out["recon"] + out["kl"], rtol=1e-6)
        # The analytic KL the bound reports is what the three pieces estimate.
        np.testing.assert_allclose(out["kl"], kl, rtol=1e-6)


def test_the_three_pieces_share_one_pairwise_computation_and_its_gradient():
    """With the pass's scratch the pieces reuse one (S, B, B, D) tensor: the gradient is the
    same as three separate copies', and the differentiated program holds fewer such tensors."""
    from jvae.terms.total_correlation import tc_decomposition
    vae = tiny_vae(normal_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    terms = tc_decomposition(alpha=0.5, beta=4.0, gamma=2.0, estimator="mss", dataset_size=100)

    def loss(p, share):
        fwd = forward(vae, p, {"image": x}, jax.random.key(4), num_samples=2)
        fwd = fwd if share else fwd._replace(shared=None)
        return sum(w * jnp.sum(t.apply(fwd, ())[0]) for w, t in terms.values())

    grads = [jax.jit(jax.grad(lambda p, s=share: loss(p, s)))(params) for share in (True, False)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def pairwise_tensors(share):
        jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(p, share)))(params)
        return sum(1 for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars
                   if getattr(v.aval, "shape", None) == (2, 8, 8, 3))

    shared, separate = pairwise_tensors(True), pairwise_tensors(False)
    # Three copies and their three backward passes: 54 tensors against 18 today.
    assert 0 < shared and separate >= 2 * shared, (shared, separate)


def test_the_estimate_pools_the_global_batch_on_eight_devices_as_on_one():
    from jvae.devices.parallel import data_mesh, shard_batch
    from jvae.training.state import make_eval_step
    vae = tiny_vae(normal_posterior(), latent_shape=(3,))
    x = np.asarray(random_images(16))
    params = vae.init(jax.random.key(0), jnp.asarray(x))
    objective = beta_tcvae(vae, estimator="mss", dataset_size=100)
    batch = {"image": x, "mask": np.array([1.0] * 13 + [0.0] * 3, np.float32)}
    sums = [jax.device_get(make_eval_step(objective, mesh=data_mesh(n))(
        params, shard_batch(batch, data_mesh(n)), jax.random.key(1))) for n in (1, 8)]
    # float32 sums in another order: jax 0.12 differs by 2.5e-5 relative; pooling only each
    # device's 2 rows would change the estimates by far more.
    for k in ("mi", "tc", "dwkl", "loss"):
        np.testing.assert_allclose(sums[0][k], sums[1][k], rtol=1e-4, err_msg=k)


def test_btcvae_refuses_what_it_cannot_estimate(capsys):
    from jvae.base import ConfigError
    from jvae.distributions.posteriors import dirichlet_posterior
    with pytest.raises(ValueError, match="normal posterior"):
        beta_tcvae(tiny_vae(dirichlet_posterior(), latent_shape=(3,)))
    for bad, message in (({"posterior": "dirichlet"}, "simplex"),
                         ({"flow_layers": 2}, "flow-layers 0"),
                         ({"beta": 2.0}, "--tcvae-alpha")):
        with pytest.raises(ConfigError, match=message):
            make_config({"model": "btcvae", **bad})
    with pytest.raises(ConfigError, match="configures --model btcvae"):
        make_config({"model": "vae", "tcvae_beta": 2.0})
    code, out = run_cli(["train", "--model", "btcvae", "--posterior", "dirichlet"], capsys)
    assert code == 2 and len(out.err.strip().splitlines()) == 1


def test_btcvae_trains_an_epoch_from_the_command_line(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, out = run_cli(["train", "--dataset", "digits", "--model", "btcvae", "--tcvae-estimator",
                         "mss", "--epochs", "1", "--batch-size", "64", "--eval-batch-size", "128",
                         "--hidden", "16", "--latent-dim", "2", "--num-images", "4",
                         "--quality-images", "0", "--data-placement", "host",
                         "--workdir", str(workdir)], capsys)
    assert code == 0, out.err[-2000:]
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    for k in ("neg_elbo", "recon", "kl", "mi", "tc", "dwkl", "train_tc"):
        assert math.isfinite(row[k]), k
    np.testing.assert_allclose(row["neg_elbo"], row["recon"] + row["kl"], rtol=1e-6)
