"""Disentanglement metrics on codes with known answers, and against the ``disent`` package.

Three codes of four factors: ``perfect`` (each dimension one factor, rescaled),
``rotated`` (the same code turned by a random rotation: every dimension mixes
every factor) and ``noise`` (independent of the factors). Every metric must
rank them perfect > rotated > noise and hit the values a perfect and a
useless code have.
"""

import warnings

import numpy as np
import pytest

from jvae.metrics.disentanglement import (
    beta_vae_score,
    dci,
    disentanglement_metrics,
    factor_vae_score,
    histogram_discretize,
    mig,
    mutual_information,
    sample_factors,
    sap,
)

SIZES = (3, 4, 5, 6)
F = len(SIZES)
_ROTATION = np.linalg.qr(np.random.default_rng(1).normal(size=(F, F)))[0]


def _unit(f):
    return np.asarray(f) / (np.asarray(SIZES) - 1.0)


def _codes():
    noise = np.random.default_rng(3)
    return {"perfect": lambda f: 3.0 * _unit(f) - 1.0,
            "rotated": lambda f: (_unit(f) - 0.5) @ _ROTATION,
            "noise": lambda f: noise.normal(size=(len(f), F))}


def _sample(n, seed):
    return sample_factors(SIZES, n, np.random.default_rng(seed))


def _ranked(values):
    assert values["perfect"] > values["rotated"] > values["noise"], values


def test_mutual_information_and_discretisation_match_closed_forms():
    # Two fair coins, equal: I = log 2; independent: ~0 (a 2x2 table's bias, 1/(2N)).
    a = np.tile([0, 1], 5000)
    assert mutual_information(a, a) == pytest.approx(np.log(2), abs=1e-12)
    b = np.random.default_rng(0).integers(0, 2, 10_000)
    assert 0 <= mutual_information(a, b) < 5e-4
    # Equal-width bins, numbered 1..20; the maximum falls in the last bin.
    binned = histogram_discretize(np.linspace(0, 1, 41)[:, None], 20)[:, 0]
    assert binned.min() == 1 and binned.max() == 20 and binned[-1] == 20
    assert np.all(np.diff(binned) >= 0)


def test_mig_known_values_and_invariances():
    f = _sample(5000, 0)
    scores = {name: mig(code(f), f)["mig"] for name, code in _codes().items()}
    _ranked(scores)
    # Every factor has <= 20 values, so each lands in its own bin: the top mutual
    # information is H(v_k) and the runner-up only the estimator's bias.
    assert 0.99 < scores["perfect"] <= 1.0 and scores["noise"] < 0.01
    perfect = _codes()["perfect"](f)
    # Affine maps of a dimension and the dimensions' order leave the bins as they are.
    moved = (perfect * [2.0, -1.0, 0.5, 7.0] + 3.0)[:, ::-1]
    assert mig(moved, f)["mig"] == pytest.approx(scores["perfect"], abs=1e-12)
    # A second copy of factor 0's dimension closes its gap: MIG loses that factor's share.
    doubled = mig(np.concatenate([perfect, perfect[:, :1]], axis=1), f)
    assert doubled["per_factor"][0] == pytest.approx(0.0, abs=1e-12)
    assert doubled["mig"] == pytest.approx(scores["perfect"] * (F - 1) / F, abs=0.005)


def test_sap_ranks_the_codes_and_a_duplicate_closes_its_gap():
    f, ft = _sample(2000, 0), _sample(1000, 1)
    results = {name: sap(code(f), f, code(ft), ft) for name, code in _codes().items()}
    _ranked({k: v["sap"] for k, v in results.items()})
    assert results["noise"]["sap"] < 0.03
    # The perfect code's best predictor of each factor is its own dimension.
    matrix = np.asarray(results["perfect"]["score_matrix"])
    np.testing.assert_array_equal(np.argmax(matrix, axis=0), np.arange(F))
    perfect = _codes()["perfect"]
    doubled = sap(np.c_[perfect(f), perfect(f)[:, 0]], f, np.c_[perfect(ft), perfect(ft)[:, 0]],
                  ft)
    top = np.sort(np.asarray(doubled["score_matrix"]), axis=0)
    assert top[-1, 0] == top[-2, 0]
    # Continuous factors: squared correlation, 1 for the dimension equal to its factor.
    continuous = np.asarray(sap(perfect(f), f, None, None, continuous=True)["score_matrix"])
    np.testing.assert_allclose(np.diag(continuous), 1.0, atol=1e-12)


def test_dci_known_values():
    f, ft = _sample(150, 0), _sample(100, 1)
    results = {name: dci(code(f), f, code(ft), ft) for name, code in _codes().items()}
    for key in ("disentanglement", "completeness", "informativeness"):
        _ranked({k: v[key] for k, v in results.items()})
    perfect = results["perfect"]
    assert perfect["disentanglement"] > 0.99 and perfect["completeness"] > 0.99
    assert perfect["informativeness"] == 1.0
    assert results["noise"]["disentanglement"] < 0.1
    # Noise predicts nothing: at most a little over chance, 1 / size on average.
    assert results["noise"]["informativeness"] < np.mean(1 / np.asarray(SIZES)) + 0.15


def test_the_scores_rank_the_codes_and_ignore_a_collapsed_dimension():
    beta = {name: beta_vae_score(code, SIZES, num_train=500, num_eval=300)
            for name, code in _codes().items()}
    factor = {name: factor_vae_score(code, SIZES, num_train=500, num_eval=300,
                                     num_variance_estimate=2000)
              for name, code in _codes().items()}
    for scores in (beta, factor):
        _ranked({k: v["eval_accuracy"] for k, v in scores.items()})
        assert scores["perfect"]["eval_accuracy"] == 1.0
        # Chance is 1/4; 300 points put 0.15 over it beyond 4 standard deviations.
        assert scores["noise"]["eval_accuracy"] < 0.25 + 0.15
    # A dimension that never moves is collapsed, not the least-varying dimension.
    dead = factor_vae_score(lambda f: np.c_[_unit(f), np.zeros(len(f))], SIZES, num_train=100,
                            num_eval=100, num_variance_estimate=500)
    assert dead["eval_accuracy"] == 1.0 and dead["active_dims"] == F
    assert factor_vae_score(lambda f: np.zeros((len(f), 3)), SIZES, num_train=10, num_eval=10,
                            num_variance_estimate=50)["eval_accuracy"] == 0.0


@pytest.mark.slow  # NumPy and scikit-learn only: nothing here depends on the JAX version
def test_all_metrics_are_deterministic_given_the_seed():
    rotated = _codes()["rotated"]
    kwargs = dict(factor_points=300, dci_points=100, score_points=50, score_batch=16)
    first = disentanglement_metrics(rotated, SIZES, seed=5, **kwargs)
    assert first == disentanglement_metrics(rotated, SIZES, seed=5, **kwargs)
    assert first != disentanglement_metrics(rotated, SIZES, seed=6, **kwargs)
    assert first["score_points"] == 50 and first["factor_vae_active_dims"] == F


@pytest.fixture(scope="module")
def disent():
    """disent 0.8.0's metrics (the ``dev`` extra); they import torch."""
    pytest.importorskip("disent", reason="disent is not installed (the dev extra installs it on "
                        "Python 3.11, beside the torch it needs)")
    from disent.dataset import DisentDataset
    from disent.dataset.data import ArrayGroundTruthData
    from disent.metrics import _dci, _factor_vae, _mig, _sap

    def dataset():
        # Observations are the factor combinations themselves, in disent's index order.
        grid = np.stack(np.unravel_index(np.arange(np.prod(SIZES)), SIZES), axis=1)
        data = ArrayGroundTruthData(grid.reshape(-1, 1, 1, F).astype(np.float32),
                                    [f"f{i}" for i in range(F)], SIZES)
        return DisentDataset(data)

    return dataset, _mig, _sap, _dci, _factor_vae


def test_mig_sap_dci_equal_disents_on_the_same_codes(disent):
    _, disent_mig, disent_sap, disent_dci, _ = disent
    f, ft = _sample(1000, 0), _sample(500, 1)
    for name, code in _codes().items():
        c, ct = code(f), code(ft)
        # The same discretisation and mutual information: equal to rounding.
        assert mig(c, f)["mig"] == pytest.approx(
            disent_mig._compute_mig(c.T, f.T)["mig.discrete_score"], abs=1e-12), name
        # The same SVMs on the same points (liblinear's primal solver, no randomness):
        # equal accuracies.
        assert sap(c, f, ct, ft)["sap"] == pytest.approx(
            disent_sap._compute_sap(c.T, f.T, ct.T, ft.T, False)["sap.score"], abs=1e-12), name
    # DCI: the same scores of the same importance matrix, to rounding ...
    c, ct = _codes()["rotated"](f[:200]), _codes()["rotated"](ft[:100])
    ours = dci(c, f[:200], ct, ft[:100])
    importance = np.asarray(ours["importance"])
    assert ours["disentanglement"] == pytest.approx(disent_dci._disentanglement(importance),
                                                    abs=1e-12)
    assert ours["completeness"] == pytest.approx(disent_dci._completeness(importance), abs=1e-12)
    # ... and the same boosted trees, whose random_state only breaks ties between splits of
    # equal gain (disent draws it from NumPy's global state, jvae passes its seed): over
    # seeds the scores move by ~0.002, so they agree to 0.01.
    theirs = disent_dci._compute_dci(c.T, f[:200].T, ct.T, ft[:100].T)
    for key, their_key in (("disentanglement", "dci.disentanglement"),
                           ("completeness", "dci.completeness"),
                           ("informativeness", "dci.informativeness_test"),
                           ("informativeness_train", "dci.informativeness_train")):
        assert ours[key] == pytest.approx(theirs[their_key], abs=0.01), key


def test_factor_vae_score_agrees_with_disents(disent):
    dataset, *_, disent_factor_vae = disent
    metric = disent_factor_vae.metric_factor_vae.unwrap

    def as_theirs(code):
        return lambda obs: code(np.asarray(obs).reshape(len(obs), F).astype(np.int64))

    np.random.seed(0)  # disent samples from NumPy's global state
    for name, code in _codes().items():
        theirs = metric(dataset(), as_theirs(code), num_train=500, num_eval=500,
                        num_variance_estimate=300)
        ours = factor_vae_score(code, SIZES, num_train=500, num_eval=500,
                                num_variance_estimate=300)
        # Independent samples of the same accuracy: each has a standard deviation under
        # sqrt(0.25 / 500) = 0.022, so their difference stays under 0.1 (> 3 sigma).
        assert ours["eval_accuracy"] == pytest.approx(
            theirs["factor_vae.eval_accuracy"], abs=0.1), name
    # disent keeps collapsed dimensions (threshold 0): 0/0 variance ratios are NaN, argmin
    # picks the dead dimension every time, and the score falls to chance; jvae drops it
    # (disentanglement_lib's 0.05 threshold) and still scores the code 1.
    dead = _codes()["perfect"]

    def with_dead(f):
        return np.c_[np.zeros(len(f)), dead(f)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = metric(dataset(), as_theirs(with_dead), num_train=200, num_eval=200,
                        num_variance_estimate=300)
    assert theirs["factor_vae.eval_accuracy"] < 0.5
    assert factor_vae_score(with_dead, SIZES, num_train=200, num_eval=200,
                            num_variance_estimate=300)["eval_accuracy"] == 1.0
