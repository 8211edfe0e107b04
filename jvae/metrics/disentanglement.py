"""Disentanglement metrics: how well a code's dimensions line up with known factors.

Each metric scores a *representation* against ground-truth factors, with the
choices of disentanglement_lib (Locatello et al., 2019, arXiv:1811.12359),
the reference the literature's numbers come from:

* :func:`beta_vae_score` (Higgins et al., 2017): a linear classifier
  (scikit-learn's ``LogisticRegression``) predicts which factor was held
  fixed from ``mean |z_1 - z_2|`` over a batch of 64 pairs that share it.
* :func:`factor_vae_score` (Kim & Mnih, 2018, arXiv:1802.05983): the same
  question answered by a majority vote over the dimension of least variance,
  normalised by each dimension's spread over the data; dimensions whose
  standard deviation is under 0.05 are dropped as collapsed.
* :func:`mig` (Chen et al., 2018, arXiv:1802.04942): the mutual information
  gap, with each code dimension discretised into 20 equal-width bins.
* :func:`sap` (Kumar et al., 2018, arXiv:1711.00848): the gap between the two
  code dimensions that best predict each factor alone, each by a linear SVM
  (``LinearSVC(C=0.01, class_weight="balanced")``, test accuracy).
* :func:`dci` (Eastwood & Williams, 2018): disentanglement, completeness and
  informativeness from the feature importances of one gradient-boosted tree
  classifier per factor (scikit-learn's defaults: 100 trees of depth 3).

A representation is a function from factor combinations to codes: int
``(N, F)`` -> float ``(N, D)`` (for a trained model, the encoder's mean of
the combinations' images). Factors are categorical, ``0..size-1``, and are
sampled uniformly and independently, i.e. uniformly over the full product.
Everything is NumPy and scikit-learn, and deterministic given ``seed``.
:func:`disentanglement_metrics` computes all five.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

__all__ = ["Representation", "beta_vae_score", "dci", "disentanglement_metrics",
           "factor_vae_score", "histogram_discretize", "mig", "mutual_information", "sap",
           "sample_factors"]

Representation = Callable[[np.ndarray], np.ndarray]

# Rows handed to the representation at once: bounds the images a model's
# representation holds in memory.
_CHUNK = 4096


def sample_factors(sizes: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` factor combinations drawn uniformly over the product of ``sizes``: int64 ``(n, F)``."""
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)


def _codes(represent: Representation, factors: np.ndarray) -> np.ndarray:
    """The representation of ``factors`` (any leading shape), in chunks: float64 ``(..., D)``."""
    flat = factors.reshape(-1, factors.shape[-1])
    out = [np.asarray(represent(flat[i:i + _CHUNK]), np.float64)
           for i in range(0, len(flat), _CHUNK)]
    codes = np.concatenate(out)
    if codes.ndim != 2 or len(codes) != len(flat):
        raise ValueError(f"a representation must map (N, F) factors to (N, D) codes, got "
                         f"{codes.shape} for {flat.shape}")
    return codes.reshape(*factors.shape[:-1], codes.shape[1])


def _quiet_fit(model, x: np.ndarray, y: np.ndarray):
    """Fits a scikit-learn model; a solver stopped at its iteration cap is still the
    reference's classifier (disentanglement_lib fits the same and reads it as it is)."""
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def beta_vae_score(represent: Representation, sizes: Sequence[int], *, seed: int = 0,
                   batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000
                   ) -> dict[str, float]:
    """The BetaVAE score (Higgins et al., 2017, Section 3 and Appendix A.4).

    One point: pick a factor ``k`` uniformly; draw ``batch_size`` pairs of
    factor combinations that agree on ``k`` (and are independent otherwise);
    its feature is ``mean_pairs |z_1 - z_2|`` and its label ``k``. A
    ``LogisticRegression`` (scikit-learn's defaults) is fit on ``num_train``
    points and scored on ``num_eval`` others. A disentangled code has a zero
    in the feature's ``k``-th entry, so chance is ``1 / F`` and a perfect code
    scores 1.

    Args:
      represent: factors int ``(N, F)`` -> codes ``(N, D)``.
      sizes: the number of values of each factor.
      seed: seed of the sampling and the classifier.
      batch_size: pairs averaged into one point (64, as disentanglement_lib).
      num_train: training points.
      num_eval: evaluation points.

    Returns:
      ``{"train_accuracy", "eval_accuracy"}``; the score is ``eval_accuracy``.
    """
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        k = rng.integers(0, len(sizes), size=n)
        first = sample_factors(sizes, n * batch_size, rng).reshape(n, batch_size, -1)
        second = sample_factors(sizes, n * batch_size, rng).reshape(n, batch_size, -1)
        rows = np.arange(n)
        second[rows, :, k] = first[rows, :, k]
        diff = np.abs(_codes(represent, first) - _codes(represent, second))
        return diff.mean(axis=1), k

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    model = _quiet_fit(LogisticRegression(random_state=seed), x_train, y_train)
    return {"train_accuracy": float(np.mean(model.predict(x_train) == y_train)),
            "eval_accuracy": float(np.mean(model.predict(x_eval) == y_eval))}


def factor_vae_score(represent: Representation, sizes: Sequence[int], *, seed: int = 0,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05
                     ) -> dict[str, float]:
    """The FactorVAE score (Kim & Mnih, 2018, Section 4).

    Each dimension's variance over ``num_variance_estimate`` random combinations
    normalises it (so rescaling a dimension changes nothing); dimensions whose
    standard deviation is under ``prune_threshold`` are collapsed and never
    chosen. One vote: fix a random factor ``k`` over ``batch_size``
    combinations that vary in the others, and take the dimension ``d`` of least
    normalised variance: the pair ``(d, k)``. The classifier maps each
    dimension to the factor it got the most training votes for (the optimal,
    majority-vote classifier); the score is its accuracy on ``num_eval`` new
    votes.

    Args:
      represent: factors int ``(N, F)`` -> codes ``(N, D)``.
      sizes: the number of values of each factor.
      seed: seed of the sampling.
      batch_size: combinations per vote (64, as disentanglement_lib).
      num_train: training votes.
      num_eval: evaluation votes.
      num_variance_estimate: combinations the global variances are estimated on.
      prune_threshold: the standard deviation under which a dimension is collapsed.

    Returns:
      ``{"train_accuracy", "eval_accuracy", "active_dims"}``; the score is
      ``eval_accuracy`` (0 when every dimension collapsed).
    """
    rng = np.random.default_rng(seed)
    global_var = np.var(_codes(represent, sample_factors(sizes, num_variance_estimate, rng)),
                        axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}

    def votes(n: int) -> np.ndarray:
        k = rng.integers(0, len(sizes), size=n)
        factors = sample_factors(sizes, n * batch_size, rng).reshape(n, batch_size, -1)
        rows = np.arange(n)
        factors[rows, :, k] = factors[rows, 0, k][:, None]
        local = np.var(_codes(represent, factors), axis=1, ddof=1)
        ratio = np.where(active, local / np.where(active, global_var, 1.0), np.inf)
        table = np.zeros((len(sizes), len(global_var)), np.int64)
        np.add.at(table, (k, np.argmin(ratio, axis=1)), 1)
        return table

    train, evaluation = votes(num_train), votes(num_eval)
    classifier = np.argmax(train, axis=0)  # each dimension -> its majority factor
    dims = np.arange(train.shape[1])
    return {"train_accuracy": float(train[classifier, dims].sum() / train.sum()),
            "eval_accuracy": float(evaluation[classifier, dims].sum() / evaluation.sum()),
            "active_dims": int(active.sum())}


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column of ``codes`` binned into ``num_bins`` equal-width bins over its range.

    Bins are numbered ``1..num_bins`` (``np.digitize`` on the left edges of
    ``np.histogram``'s, as disentanglement_lib).

    Returns:
      int64 ``(N, D)``.
    """
    codes = np.asarray(codes, np.float64)
    return np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T],
                    axis=1)


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two non-negative integer label arrays, from their
    empirical joint distribution."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    joint = np.bincount(a * (b.max() + 1) + b).astype(np.float64)
    joint = joint[joint > 0] / len(a)
    return _entropy(a) + _entropy(b) + float((joint * np.log(joint)).sum())


def mig(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> dict[str, float]:
    """The mutual information gap (Chen et al., 2018, Eq. 5).

    ``MIG = 1/K sum_k (I(z_a; v_k) - I(z_b; v_k)) / H(v_k)``, where ``z_a`` and
    ``z_b`` are the code dimensions with the largest and second-largest
    mutual information with factor ``v_k``. As in disentanglement_lib, the
    mutual information is that of the empirical joint distribution of each
    dimension discretised into ``num_bins`` bins (:func:`histogram_discretize`)
    and the factor; Chen et al. estimate it from ``q(z|x)`` instead. Factors
    that take a single value in the sample (``H = 0``) are left out of the
    mean.

    Args:
      codes: ``(N, D)``, ``D >= 2``.
      factors: int ``(N, F)``.
      num_bins: bins of the discretisation.

    Returns:
      ``{"mig", "per_factor"}`` (a list: each factor's normalised gap).
    """
    codes, factors = np.asarray(codes), np.asarray(factors, np.int64)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(f"MIG needs codes (N, D) with D >= 2, got {codes.shape}")
    binned = histogram_discretize(codes, num_bins)
    info = np.array([[mutual_information(binned[:, j], factors[:, k])
                      for k in range(factors.shape[1])] for j in range(codes.shape[1])])
    entropy = np.array([_entropy(f) for f in factors.T])
    top = np.sort(info, axis=0)[::-1]
    kept = entropy > 0
    gaps = np.where(kept, (top[0] - top[1]) / np.where(kept, entropy, 1.0), np.nan)
    return {"mig": float(np.mean(gaps[kept])), "per_factor": gaps.tolist()}


def sap(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray,
        factors_test: np.ndarray, *, continuous: bool = False) -> dict[str, float]:
    """The Separated Attribute Predictability score (Kumar et al., 2018, Section 3).

    A score matrix ``S[j, k]`` says how well code dimension ``j`` alone
    predicts factor ``k``: for categorical factors, the test accuracy of a
    linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``) fit on the
    training codes; for continuous ones, the squared correlation (linear
    regression's R^2, 0 for a constant dimension). ``SAP = 1/K sum_k (S[a, k]
    - S[b, k])`` over each factor's best and second-best dimensions.

    Args:
      codes, factors: the training set, ``(N, D)`` and int ``(N, F)``.
      codes_test, factors_test: the test set (unused when ``continuous``).
      continuous: treat the factors as continuous.

    Returns:
      ``{"sap", "score_matrix"}`` (a ``D x F`` list).
    """
    from sklearn.svm import LinearSVC
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    if num_codes < 2:
        raise ValueError(f"SAP needs codes (N, D) with D >= 2, got {codes.shape}")
    scores = np.zeros((num_codes, num_factors))
    for j in range(num_codes):
        for k in range(num_factors):
            if continuous:
                cov = np.cov(codes[:, j], factors[:, k], ddof=1)
                if cov[0, 0] > 1e-12:
                    scores[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            else:
                svm = _quiet_fit(LinearSVC(C=0.01, class_weight="balanced"),
                                 codes[:, j:j + 1], factors[:, k])
                scores[j, k] = np.mean(svm.predict(np.asarray(codes_test)[:, j:j + 1])
                                       == np.asarray(factors_test)[:, k])
    top = np.sort(scores, axis=0)
    return {"sap": float(np.mean(top[-1] - top[-2])), "score_matrix": scores.tolist()}


# Added to every importance before its entropy: 0 log 0 as 0, and an all-zero row as uniform.
_IMPORTANCE_EPS = 1e-11


def _one_minus_entropy(weights: np.ndarray) -> np.ndarray:
    """``1 - H(p)`` of each row's normalised distribution, entropy in base ``row length``."""
    p = weights + _IMPORTANCE_EPS
    p = p / p.sum(axis=1, keepdims=True)
    return 1.0 + (p * np.log(p)).sum(axis=1) / np.log(weights.shape[1])


def dci(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray,
        factors_test: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams, 2018).

    One gradient-boosted tree classifier per factor (scikit-learn's
    ``GradientBoostingClassifier`` with its defaults, as disentanglement_lib)
    predicts the factor from the whole code; its feature importances form
    column ``k`` of ``R`` (``D x F``). With ``P = R / rowsum`` and
    ``Q = R / colsum``:

    * disentanglement ``sum_j rho_j (1 - H_F(P_j))``, ``rho_j = sum_k R[j, k] / sum R``;
    * completeness ``sum_k w_k (1 - H_D(Q_k))``, ``w_k = sum_j R[j, k] / sum R``;
    * informativeness: the classifiers' mean test accuracy (disentanglement_lib's
      reading; Eastwood & Williams report the prediction error, here
      ``1 - informativeness``).

    Args:
      codes, factors: the training set, ``(N, D)`` and int ``(N, F)``.
      codes_test, factors_test: the test set.
      seed: the classifiers' ``random_state``.

    Returns:
      ``{"disentanglement", "completeness", "informativeness",
      "informativeness_train", "importance"}`` (``importance``: ``R`` as a list).
    """
    from sklearn.ensemble import GradientBoostingClassifier
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    codes_test, factors_test = np.asarray(codes_test, np.float64), np.asarray(factors_test)
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for k in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=seed).fit(codes, factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, k]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    total = importance.sum()
    weights = importance if total > 0 else np.ones_like(importance)
    code_weight = weights.sum(axis=1) / weights.sum()
    factor_weight = weights.sum(axis=0) / weights.sum()
    return {"disentanglement": float(np.sum(_one_minus_entropy(importance) * code_weight)),
            "completeness": float(np.sum(_one_minus_entropy(importance.T) * factor_weight)),
            "informativeness": float(np.mean(test_acc)),
            "informativeness_train": float(np.mean(train_acc)),
            "importance": importance.tolist()}


def disentanglement_metrics(represent: Representation, sizes: Sequence[int], *, seed: int = 0,
                            factor_points: int = 10_000, dci_points: int = 2_000,
                            score_points: int = 1_000, score_batch: int = 64
                            ) -> dict[str, float]:
    """All five metrics of a representation, on samples drawn from ``seed``.

    Args:
      represent: factors int ``(N, F)`` -> codes ``(N, D)``.
      sizes: the number of values of each factor.
      seed: seed of every sample and classifier.
      factor_points: combinations MIG is computed on and SAP trained on (SAP
        is tested on half as many others); disentanglement_lib: 10,000.
      dci_points: combinations DCI's classifiers are trained on (tested on
        half as many); disentanglement_lib: 10,000, minutes per factor on a CPU.
      score_points: training points of the BetaVAE and FactorVAE scores
        (evaluated on half as many; the FactorVAE score's variances on
        ``factor_points``); disentanglement_lib: 10,000.
      score_batch: combinations per point of those two scores.

    Returns:
      ``beta_vae_score``, ``factor_vae_score``, ``mig``, ``sap``,
      ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness``, the
      two scores' training accuracies, the FactorVAE score's ``active_dims`` and
      the sample sizes.
    """
    seeds = np.random.SeedSequence(seed).generate_state(5)
    rng = np.random.default_rng(seeds[0])
    train = sample_factors(sizes, factor_points, rng)
    test = sample_factors(sizes, max(factor_points // 2, 1), rng)
    codes_train, codes_test = _codes(represent, train), _codes(represent, test)
    dci_rng = np.random.default_rng(seeds[1])
    dci_train = sample_factors(sizes, dci_points, dci_rng)
    dci_test = sample_factors(sizes, max(dci_points // 2, 1), dci_rng)
    beta = beta_vae_score(represent, sizes, seed=int(seeds[2]), batch_size=score_batch,
                          num_train=score_points, num_eval=max(score_points // 2, 1))
    factor = factor_vae_score(represent, sizes, seed=int(seeds[3]), batch_size=score_batch,
                              num_train=score_points, num_eval=max(score_points // 2, 1),
                              num_variance_estimate=factor_points)
    scores = dci(_codes(represent, dci_train), dci_train, _codes(represent, dci_test), dci_test,
                 seed=int(seeds[4]) % 2**31)
    return {"beta_vae_score": beta["eval_accuracy"],
            "factor_vae_score": factor["eval_accuracy"],
            "mig": mig(codes_train, train)["mig"],
            "sap": sap(codes_train, train, codes_test, test)["sap"],
            "dci_disentanglement": scores["disentanglement"],
            "dci_completeness": scores["completeness"],
            "dci_informativeness": scores["informativeness"],
            "beta_vae_train_accuracy": beta["train_accuracy"],
            "factor_vae_train_accuracy": factor["train_accuracy"],
            "factor_vae_active_dims": factor["active_dims"],
            "factor_points": factor_points, "dci_points": dci_points,
            "score_points": score_points, "score_batch": score_batch}
