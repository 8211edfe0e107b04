"""Model families: the CVAE follows its label; the config refuses meaningless combinations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.app.config import ConfigError, make_config
from jvae.data import add_condition
from jvae.devices.parallel import data_mesh
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import normal_posterior
from jvae.model import make_vae
from jvae.nets import make_nets
from jvae.objectives import cvae
from jvae.train_state import create_train_state, make_optimizer, make_train_step


def test_cvae_samples_follow_the_label(mnist_dir):
    from jvae.data import load_mnist_idx, to_float
    raw = load_mnist_idx(mnist_dir, "train")
    data = add_condition({"image": to_float(raw["image"][:2048]), "label": raw["label"][:2048]},
                         10)
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=(4,),
                         data_shape=(28, 28, 1), hidden=(128,))
    vae = make_vae(enc, dec, post, lik, (4,))
    objective = cvae(vae, cond_key="cond")
    opt = make_optimizer(3e-3)
    batch0 = {k: v[:128] for k, v in data.items()}
    state = create_train_state(vae, objective, opt, jax.random.key(0), batch0, cond_key="cond")
    step = make_train_step(objective, opt, mesh=data_mesh(1))
    rng = np.random.default_rng(0)
    # 150 steps: every label already draws its own class (10 of 10 here; the bounds
    # under true and shuffled labels about 57 nats apart).
    for _ in range(150):
        i = rng.choice(2048, 128, replace=False)
        state, _ = step(state, {k: v[i] for k, v in data.items()})
    # The same latent codes decoded under each label.
    z = jax.random.normal(jax.random.key(5), (16, 4))
    means = np.stack([data["image"][data["label"] == c].mean(0) for c in range(10)])
    hits = 0
    for c in range(10):
        y = jnp.asarray(np.eye(10, dtype=np.float32)[np.full(16, c)])
        img = np.asarray(vae.likelihood.mean(vae.decode(state.params, z, y))).mean(0)
        hits += int(np.argmin(((means - img) ** 2).sum(axis=(1, 2, 3))) == c)
    # Chance is 1/10; an unconditional decoder would match one class at most.
    assert hits >= 8, f"only {hits}/10 labels produced samples nearest their class mean"
    # The conditional bound -log p(x|y) is better under the true labels than shuffled ones.
    batch = {k: v[:256] for k, v in data.items()}
    wrong = {**batch, "cond": np.roll(batch["cond"], 1, axis=-1)}
    terms = jax.jit(objective.terms)
    right_bound = terms(state.params, batch, jax.random.key(1), ())[0]["neg_elbo"].mean()
    wrong_bound = terms(state.params, wrong, jax.random.key(1), ())[0]["neg_elbo"].mean()
    assert right_bound < wrong_bound - 5.0


def test_config_rejects_meaningless_combinations():
    with pytest.raises(ConfigError, match="deterministic code"):
        make_config({"model": "ae", "posterior": "dirichlet"})
    with pytest.raises(ConfigError, match="needs --posterior normal"):
        make_config({"flow_layers": 2, "posterior": "dirichlet"})
    with pytest.raises(ConfigError, match="multiple of vq_code_dim"):
        make_config({"model": "vq", "latent_dim": 10, "vq_code_dim": 4})
    with pytest.raises(ConfigError, match="no weighted KL"):
        make_config({"model": "iwae", "beta": 2.0})
    cfg = make_config({})
    assert (cfg.model, cfg.alpha, cfg.flow_layers, cfg.ssim_weight) == ("vae", 1.0, 0, 0.0)
