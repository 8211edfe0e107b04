"""The unbiased MMD against a NumPy double loop; InfoVAE and WAE-MMD built on it."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.distributions.posteriors import normal_posterior, point_posterior
from jvae.distributions.priors import draw_prior
from jvae.objectives import info_vae, wae
from jvae.terms.composition import forward
from jvae.terms.mmd import kernel_matrix, mmd_u

from helpers import random_images, run_cli, tiny_vae


def _np_kernel(a, b, kernel, c):
    r2 = float(np.sum((a - b) ** 2))
    return c / (c + r2) if kernel == "imq" else math.exp(-r2 / c)


def _np_mmd(x, y, kernel, scale):
    """Gretton et al.'s unbiased MMD^2, one pair at a time."""
    n, m, c = len(x), len(y), 2.0 * x.shape[1] * scale
    kxx = sum(_np_kernel(x[i], x[j], kernel, c) for i in range(n) for j in range(n) if i != j)
    kyy = sum(_np_kernel(y[i], y[j], kernel, c) for i in range(m) for j in range(m) if i != j)
    kxy = sum(_np_kernel(x[i], y[j], kernel, c) for i in range(n) for j in range(m))
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_matches_a_numpy_double_loop(kernel):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.3, size=(9, 3))
    for scale in (1.0, 0.3):
        got = float(mmd_u(jnp.asarray(x), jnp.asarray(y), kernel=kernel, scale=scale))
        np.testing.assert_allclose(got, _np_mmd(x, y, kernel, scale), rtol=1e-5, atol=1e-7)
    # Padded rows (mask 0) count for nothing: the same as leaving them out.
    x_pad = np.concatenate([x, rng.normal(size=(3, 3))])
    mask = np.array([1.0] * 7 + [0.0] * 3)
    got = float(mmd_u(jnp.asarray(x_pad), jnp.asarray(y), kernel=kernel,
                      x_mask=jnp.asarray(mask)))
    np.testing.assert_allclose(got, _np_mmd(x, y, kernel, 1.0), rtol=1e-5, atol=1e-7)
    # C = 2 d sigma^2: at squared distance C the IMQ kernel is 1/2, the RBF kernel 1/e.
    c = 2 * 3 * 0.5
    k = float(kernel_matrix(jnp.zeros((1, 3)), jnp.full((1, 3), math.sqrt(c / 3)), kernel, 0.5)[0, 0])
    np.testing.assert_allclose(k, 0.5 if kernel == "imq" else math.exp(-1.0), rtol=1e-6)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_near_zero_for_one_distribution_and_clearly_positive_for_a_shift(kernel):
    keys = jax.random.split(jax.random.key(0), 4)
    draw = [jax.random.normal(k, (400, 4)) for k in keys]
    same = [float(mmd_u(draw[0], draw[1], kernel=kernel)),
            float(mmd_u(draw[2], draw[3], kernel=kernel))]
    shifted = float(mmd_u(draw[0], draw[1] + 0.5, kernel=kernel))
    assert max(abs(v) for v in same) < 2e-3, same
    assert shifted > 10 * max(abs(v) for v in same) and shifted > 0.02, (shifted, same)


def test_infovae_weighs_kl_and_mmd_as_the_paper_and_at_alpha_0_lambda_1_is_the_elbo():
    vae = tiny_vae(normal_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    batch, key = {"image": x, "mask": jnp.asarray([1.0] * 7 + [0.0])}, jax.random.key(5)
    for alpha, lam in ((0.0, 1.0), (0.5, 100.0), (1.0, 10.0)):
        objective = info_vae(vae, alpha=alpha, lam=lam, kernel="imq")
        out = jax.device_get(jax.jit(objective.terms)(params, batch, key, ())[0])
        np.testing.assert_allclose(out["loss"], out["recon"] + (1 - alpha) * out["kl"]
                                   + (alpha + lam - 1) * out["mmd"], rtol=1e-5, atol=1e-6)
        if (alpha, lam) == (0.0, 1.0):
            np.testing.assert_allclose(out["loss"], out["neg_elbo"], rtol=1e-6)
    # The term: the codes of the pass against as many prior draws from its key, real rows only.
    @jax.jit
    def want_of(p):
        fwd = forward(vae, p, batch, key)
        return mmd_u(fwd.z[0], draw_prior(vae, fwd.key, 8, p), kernel="imq", x_mask=batch["mask"])

    want = want_of(params)
    np.testing.assert_allclose(out["mmd"], np.full(8, float(want)), rtol=1e-5)
    with pytest.raises(ValueError, match="alpha <= 1"):
        info_vae(vae, alpha=0.5, lam=0.2)
    with pytest.raises(ConfigError, match="alpha <= 1"):
        make_config({"model": "infovae", "infovae_alpha": 2.0})


def test_wae_is_recon_plus_lambda_mmd_with_a_deterministic_code():
    vae = tiny_vae(point_posterior(), latent_shape=(3,))
    x = random_images(8)
    params = vae.init(jax.random.key(0), x)
    out, _ = jax.jit(wae(vae, lam=10.0, kernel="rbf", scale=2.0).terms)(
        params, {"image": x}, jax.random.key(1), ())
    np.testing.assert_allclose(out["loss"], out["recon"] + 10.0 * out["mmd"], rtol=1e-6)
    assert "neg_elbo" not in out and "kl" not in out  # no bound without a posterior
    with pytest.raises(ValueError, match="point posterior"):
        wae(tiny_vae(normal_posterior()))
    with pytest.raises(ConfigError, match="deterministic"):
        make_config({"model": "wae", "num_samples": 2})
    with pytest.raises(ConfigError, match="--model infovae or wae"):
        make_config({"model": "rae", "mmd_kernel": "rbf"})


@pytest.mark.parametrize("model", ["infovae", "wae"])
def test_an_mmd_family_trains_an_epoch_from_the_command_line(model, tmp_path, capsys):
    workdir = tmp_path / "run"
    code, out = run_cli(["train", "--dataset", "digits", "--model", model, "--mmd-kernel", "rbf",
                         "--epochs", "1", "--batch-size", "64", "--eval-batch-size", "128",
                         "--hidden", "16", "--latent-dim", "2", "--num-images", "4",
                         "--quality-images", "0", "--data-placement", "host",
                         "--workdir", str(workdir)], capsys)
    assert code == 0, out.err[-2000:]
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(row["mmd"]) and math.isfinite(row["train_mmd"])
    assert (row["neg_elbo"] is None) == (model == "wae")
