"""Conditional generation: the conditional-accuracy judge, the cvae's prior term, the grid sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae import objectives
from jvae.data import load_mnist_idx, to_float
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import normal_posterior
from jvae.evaluation import conditional_accuracy, fit_classifier
from jvae.inference import make_sampler
from jvae.model import make_vae
from jvae.nets import make_nets

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("conditional")


class _FirstPixels:
    """A stub judge: the class is the brightest of the first 10 pixels."""

    def predict(self, flat):
        return np.argmax(flat[:, :10], axis=1)


def _one_hot_images(labels):
    images = np.zeros((len(labels), 4, 4, 1), np.float32)
    images.reshape(len(labels), -1)[np.arange(len(labels)), labels] = 1.0
    return images


def test_conditional_accuracy_of_a_perfect_and_a_label_blind_model():
    judge, key = _FirstPixels(), jax.random.key(0)
    perfect = conditional_accuracy(lambda k, c: _one_hot_images(np.argmax(c, 1)), judge, 10, key)
    assert perfect == 1.0
    always_three = conditional_accuracy(lambda k, c: _one_hot_images(np.full(len(c), 3)), judge,
                                        10, key)
    assert always_three == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    blind = conditional_accuracy(lambda k, c: _one_hot_images(rng.integers(0, 10, len(c))),
                                 judge, 10, key, per_class=200)
    assert 0.06 < blind < 0.14


def test_fit_classifier_judges_real_digits(mnist_dir):
    train, test = load_mnist_idx(mnist_dir, "train"), load_mnist_idx(mnist_dir, "test")
    x, y = to_float(train["image"][:2000]), train["label"][:2000]
    xt, yt = to_float(test["image"][:1000]), test["label"][:1000]
    clf = fit_classifier(x, y)
    assert clf.score(xt.reshape(len(xt), -1), yt) > 0.85
    by_class = {c: xt[yt == c] for c in range(10)}

    def real_digits(key, cond):  # a "model" whose samples are real test digits of the label
        labels = np.argmax(np.asarray(cond), 1)
        return np.stack([by_class[c][i % len(by_class[c])] for i, c in enumerate(labels)])

    assert conditional_accuracy(real_digits, clf, 10, jax.random.key(0), per_class=30) > 0.85
    shuffled = conditional_accuracy(lambda k, c: xt[:len(c)], clf, 10, jax.random.key(0),
                                    per_class=30)
    assert shuffled < 0.3


@pytest.fixture(scope="module")
def tiny_cvae():
    encoder, decoder = make_nets("mlp", posterior=normal_posterior(), likelihood=bernoulli(),
                                 latent_shape=(3,), data_shape=(4, 4, 1), hidden=(8,))
    vae = make_vae(encoder, decoder, normal_posterior(), bernoulli(), (3,))
    x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
    cond = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    return vae, vae.init(jax.random.key(0), x, cond), {"image": x, "cond": cond}


def test_cvae_prior_term_adds_the_decode_of_a_prior_draw(tiny_cvae):
    vae, params, batch = tiny_cvae
    key = jax.random.key(2)
    plain, _ = jax.jit(objectives.cvae(vae, prior_weight=0.0).terms)(params, batch, key, ())
    hybrid, _ = jax.jit(objectives.cvae(vae, prior_weight=0.5).terms)(params, batch, key, ())
    assert "prior_recon" not in plain
    np.testing.assert_allclose(hybrid["neg_elbo"], plain["neg_elbo"], rtol=1e-6)
    # The term is -log p(x | z', y) at the prior draw z' of fold_in(key, 1).
    z = jax.random.normal(jax.random.fold_in(key, 1), (6, 3))
    expected = -vae.likelihood.log_prob(vae.decode(params, z, batch["cond"]), batch["image"])
    assert hybrid["prior_recon"].shape == (6,)
    np.testing.assert_allclose(hybrid["prior_recon"], expected, rtol=1e-5)
    np.testing.assert_allclose(hybrid["loss"], plain["loss"] + 0.5 * expected, rtol=1e-5)
    # Its gradient reaches the decoder's label weights.
    grads = jax.jit(jax.grad(lambda p: objectives.cvae(vae, prior_weight=0.5).terms(
        p, batch, key, ())[0]["prior_recon"].sum()))(params)
    assert float(jnp.abs(grads["decoder"]["Dense_0"]["kernel"][3:]).sum()) > 0
    with pytest.raises(ValueError, match="prior_weight"):
        objectives.cvae(vae, prior_weight=-1.0)


def test_grid_sampler_decodes_every_class_from_the_same_codes(tiny_cvae):
    vae, params, _ = tiny_cvae
    cond = jnp.repeat(jnp.eye(3), 2, axis=0)  # rows: class 0, 0, 1, 1, 2, 2
    rows = np.asarray(make_sampler(vae, 6, repeats=3)(params, jax.random.key(3), cond))
    codes = jax.random.normal(jax.random.key(3), (2, 3))
    expected = vae.likelihood.mean(vae.decode(params, jnp.tile(codes, (3, 1)), cond))
    np.testing.assert_allclose(rows, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        make_sampler(vae, 5, repeats=3)
