"""Fast CPU tests of riskscope.probes on seeded synthetic data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

from riskscope.probes import (
    LogisticProbe,
    ProbeConfig,
    ProbeError,
    evaluate_layers,
    fit_many,
    group_folds,
    lexical_baseline,
    nested_folds,
    pair_accuracy,
    shuffle_labels,
)

SKLEARN = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
FAST = dict(folds=3, inner_folds=2, n_bootstrap=100)


def paired_data(n_pairs=80, n_layers=3, d=12, signal=(0.0, 1.5, 6.0), seed=0):
    """Matched pairs: shared pair factor + noise + ``signal[l]`` along one direction for risky rows."""
    rng = np.random.default_rng(seed)
    y = np.tile([1, 0], n_pairs)
    groups = np.repeat(np.arange(n_pairs), 2)
    pair_factor = rng.normal(size=(n_pairs, d))[groups]
    X = np.empty((n_layers, 2 * n_pairs, d))
    for layer in range(n_layers):
        direction = rng.normal(size=d)
        direction /= np.linalg.norm(direction)
        X[layer] = 2 * pair_factor + rng.normal(size=(2 * n_pairs, d)) + signal[layer] * np.outer(y, direction)
        X[layer] = X[layer] * rng.lognormal(0, 1, d) + rng.normal(0, 5, d)  # unequal scales and offsets
    return X, y, groups


def standardized(X, rows):
    mu, sd = X[rows].mean(0), X[rows].std(0)
    return (X - mu) / sd


# ---------------------------------------------------------------- folds


def test_group_folds_keep_pairs_together_and_are_seeded():
    rng = np.random.default_rng(1)
    groups = rng.permutation(np.repeat(np.arange(37), 2))
    fold = group_folds(groups, 5, seed=3)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 2
    np.testing.assert_array_equal(fold, group_folds(groups, 5, seed=3))
    assert not np.array_equal(fold, group_folds(groups, 5, seed=4))


def test_nested_folds_never_touch_the_test_fold():
    groups = np.repeat(np.arange(30), 2)
    nf = nested_folds(groups, 5, 3, seed=0)
    for f in range(5):
        test = nf.fold == f
        assert not (nf.inner_train[f] & test).any() and not (nf.inner_val[f] & test).any()
        for g in range(3):
            np.testing.assert_array_equal(nf.inner_train[f, g] | nf.inner_val[f, g], nf.outer_train[f])
            train_groups, val_groups = set(groups[nf.inner_train[f, g]]), set(groups[nf.inner_val[f, g]])
            assert not train_groups & val_groups
    assert nf.masks.shape == (5 + 5 * 3, 60)


def test_shuffle_labels_flips_within_pairs():
    y = np.tile([1, 0], 50)
    groups = np.repeat(np.arange(50), 2)
    ys = shuffle_labels(y, groups, np.random.default_rng(0))
    assert np.all(np.bincount(groups, weights=ys) == 1)  # still one risky member per pair
    assert 0.3 < np.mean(ys != y) < 0.7


def test_pair_accuracy_counts_ties_as_half():
    y = np.array([1, 0, 0, 1, 1, 0])
    s = np.array([2.0, 1.0, 5.0, 3.0, 0.5, 0.5])
    assert pair_accuracy(y, s, np.array([0, 0, 1, 1, 2, 2])) == pytest.approx((1 + 0 + 0.5) / 3)


def test_vectorised_auc_and_f1_equal_sklearn():
    from sklearn.metrics import f1_score

    from riskscope.probes import auc_rows, auc_weighted, bootstrap_counts, macro_f1_weighted

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    S = np.round(rng.normal(size=(5, 60)), 1)  # rounding makes ties
    np.testing.assert_allclose(auc_rows(y, S), [roc_auc_score(y, s) for s in S], atol=1e-12)
    W = bootstrap_counts(np.repeat(np.arange(30), 2), 20, seed=0)
    assert W.sum(1).tolist() == [60.0] * 20
    np.testing.assert_allclose(auc_weighted(y, S[0], W), [roc_auc_score(y, S[0], sample_weight=w) for w in W], atol=1e-12)
    yk, pred = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    expected = [f1_score(yk, pred, average="macro", labels=[0, 1, 2], sample_weight=w, zero_division=0.0) for w in W]
    np.testing.assert_allclose(macro_f1_weighted(yk, pred, W, 3), expected, atol=1e-12)


# ---------------------------------------------------------------- estimator contract


def test_sklearn_estimator_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SkipTestWarning for optional pandas / array-API checks
        results = check_estimator(LogisticProbe(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []


def test_clone_get_set_params_and_grid_search():
    X, y, groups = paired_data(n_pairs=40, n_layers=1)
    probe = LogisticProbe(C=0.5, penalty="l2")
    assert clone(probe).get_params() == probe.get_params()
    assert probe.set_params(C=2.0).C == 2.0
    search = GridSearchCV(LogisticProbe(), {"C": [0.01, 1.0]}, cv=3, scoring="roc_auc").fit(X[0], y)
    assert search.best_params_["C"] in (0.01, 1.0)
    assert search.predict_proba(X[0]).shape == (80, 2)


# ---------------------------------------------------------------- agreement with scikit-learn


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_l2_matches_sklearn(C):
    X, y, _ = paired_data(n_layers=3, seed=2)
    Z = standardized(X[2], slice(None))
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(Z, y)
    probe = LogisticProbe(C=C).fit(X[2], y)
    np.testing.assert_allclose(probe.coef_, sk.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.intercept_, sk.intercept_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.decision_function(X[2]), sk.decision_function(Z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.predict_proba(X[2]), sk.predict_proba(Z), atol=1e-7)


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_l1_matches_sklearn(C):
    X, y, _ = paired_data(n_layers=3, seed=3)
    Z = standardized(X[2], slice(None))
    # liblinear penalises the intercept; a huge intercept_scaling makes that negligible. Its coordinate order
    # is random: without random_state it draws a seed from numpy's global state, so whether it converged
    # depended on which tests ran before (a fresh-clone CI run hit ConvergenceWarning once).
    l1 = {"l1_ratio": 1.0} if SKLEARN >= (1, 8) else {"penalty": "l1"}  # `penalty` is deprecated since 1.8
    sk = LogisticRegression(C=C, solver="liblinear", tol=1e-10, max_iter=1_000_000, intercept_scaling=1e4,
                            random_state=0, **l1).fit(Z, y)
    probe = LogisticProbe(C=C, penalty="l1", tol=1e-10, max_iter=50_000).fit(X[2], y)
    assert probe.converged_
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=2e-4)
    np.testing.assert_array_equal(probe.coef_ == 0, np.abs(sk.coef_) < 1e-8)
    np.testing.assert_allclose(probe.decision_function(X[2]), sk.decision_function(Z), atol=1e-3)


def test_multinomial_matches_sklearn():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 6))
    y = np.argmax(X[:, :3] + 0.7 * rng.normal(size=(150, 3)), axis=1)
    Z = standardized(X, slice(None))
    sk = LogisticRegression(C=0.3, tol=1e-10, max_iter=100_000).fit(Z, y)
    probe = LogisticProbe(C=0.3).fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(Z), atol=1e-6)


def test_fit_many_float32_matches_sklearn_per_problem():
    X, y, groups = paired_data(n_pairs=60, n_layers=2, d=10, signal=(1.0, 2.0), seed=5)
    fold = group_folds(groups, 3, seed=0)
    masks = np.stack([fold != f for f in range(3)])
    Cs = [0.03, 10.0]
    fit = fit_many(X, y, masks, Cs, dtype=torch.float32, tol=1e-6)
    assert fit.converged.all()
    for layer in range(2):
        for m in range(3):
            Z = standardized(X[layer], masks[m])
            for c, C in enumerate(Cs):
                sk = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(Z[masks[m]], y[masks[m]])
                np.testing.assert_allclose(fit.coef[layer, m, c, 0], sk.coef_[0], rtol=1e-3, atol=1e-4)
                test = ~masks[m]
                ours = fit.decision_function(X)[layer, m, c, 0, test]
                assert abs(roc_auc_score(y[test], ours) - roc_auc_score(y[test], sk.decision_function(Z[test]))) < 1e-3


def test_fit_many_ridge_matches_sklearn():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1, 80, 7)) * rng.lognormal(0, 1, 7)
    t = X[0] @ rng.normal(size=7) + rng.normal(size=80)
    fit = fit_many(X, t, np.ones((1, 80), bool), [0.1, 10.0], loss="squared", dtype=torch.float64, tol=1e-10)
    Z = standardized(X[0], slice(None))
    for c, C in enumerate([0.1, 10.0]):
        sk = Ridge(alpha=1.0 / C).fit(Z, t)
        np.testing.assert_allclose(fit.coef[0, 0, c, 0], sk.coef_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rank", [16, 64])  # randomised top-16, and the exact dual (N x N) eigenbasis
def test_wide_features_more_columns_than_rows(rank):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1, 40, 300)).astype(np.float16)  # float16 stores are accepted
    y = (X[0, :, 0] + 0.5 * rng.normal(size=40) > 0).astype(float)
    fit = fit_many(X, y, np.ones((1, 40), bool), [1.0], dtype=torch.float64, tol=1e-9, precond_rank=rank)
    assert fit.converged.all()
    sk = LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(standardized(X[0].astype(np.float64), slice(None)), y)
    np.testing.assert_allclose(fit.coef[0, 0, 0, 0], sk.coef_[0], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def evaluation():
    X, y, groups = paired_data(n_pairs=100, n_layers=3, d=12)
    return evaluate_layers(X, y, groups, ProbeConfig(**FAST)), y, groups


def test_signal_found_and_shuffled_control_at_chance(evaluation):
    ev, _, _ = evaluation
    noise, weak, strong = ev.results
    assert strong.auc > 0.95 and strong.pair_accuracy > 0.95
    assert weak.auc > 0.6
    assert abs(noise.auc - 0.5) < 0.12
    for r in ev.results:
        assert abs(r.shuffled_auc - 0.5) < 0.12
    assert (ev.best.hook, ev.best.layer) == ("resid", 2)


def test_bootstrap_ci_contains_point_estimate(evaluation):
    ev, _, _ = evaluation
    for r in ev.results:
        lo, hi = r.auc_ci
        assert lo <= r.auc <= hi
        assert hi - lo < 0.4


def test_oof_scores_and_roc_are_consistent(evaluation):
    ev, y, _ = evaluation
    r = ev.results[2]
    assert r.oof_scores.shape == y.shape
    assert r.auc == pytest.approx(roc_auc_score(y, r.oof_scores))
    assert r.fpr[0] == 0 and r.tpr[-1] == 1
    assert len(r.C_per_fold) == 3 and set(r.C_per_fold) <= set(ProbeConfig().Cs)


def test_to_dict_is_strict_json_with_the_metrics_schema(evaluation):
    ev, _, _ = evaluation
    d = json.loads(json.dumps(ev.to_dict(arrays=True), allow_nan=False))
    assert d["best"] == {"hook": "resid", "layer": 2}
    row = d["results"][0]
    for key, kind in [("hook", str), ("layer", int), ("auc", float), ("f1", float), ("accuracy", float),
                      ("pair_accuracy", float), ("shuffled_auc", float)]:
        assert isinstance(row[key], kind), key
    assert len(row["auc_ci"]) == 2
    assert row["roc"]["thresholds"][0] is None  # +inf is not JSON


def test_dict_input_with_several_hooks_and_lexical():
    X, y, groups = paired_data(n_pairs=40, n_layers=2, signal=(0.0, 6.0))
    acts = {("resid", 0): X[0], ("resid", 1): X[1], ("mlp", 1): X[1][:, :5]}
    texts = [("the door was left open" if v else "the door was locked") + f" {i}" for i, v in enumerate(y)]
    ev = evaluate_layers(acts, y, groups, ProbeConfig(**FAST, shuffled_control=False), texts=texts)
    assert [(r.hook, r.layer) for r in ev.results] == [("resid", 0), ("resid", 1), ("mlp", 1)]
    assert ev.lexical is not None and ev.lexical.auc > 0.95
    assert np.isnan(ev.results[0].shuffled_auc)
    assert set(ev.to_dict()["lexical"]) >= {"auc", "pair_accuracy"}


def test_lexical_baseline_uses_given_folds():
    y = np.tile([1, 0], 20)
    groups = np.repeat(np.arange(20), 2)
    texts = [f"item {i} " + ("was shared with everyone" if v else "was shared with the team") for i, v in enumerate(y)]
    fold = group_folds(groups, 4, seed=1)
    res = lexical_baseline(texts, y, groups, fold, inner_folds=2)
    assert res.auc == 1.0 and res.pair_accuracy == 1.0
    assert len(res.C_per_fold) == 4


def test_category_target():
    rng = np.random.default_rng(8)
    n_pairs, K = 90, 3
    cat = np.repeat(rng.integers(0, K, n_pairs), 2)
    groups = np.repeat(np.arange(n_pairs), 2)
    centers = rng.normal(size=(K, 10)) * 2
    X = (centers[cat] + rng.normal(size=(2 * n_pairs, 10)))[None]
    names = np.array(["malware", "network", "privacy"])[cat]
    ev = evaluate_layers(X, names, groups, ProbeConfig(**FAST, target="category"))
    r = ev.results[0]
    assert r.classes == ("malware", "network", "privacy")
    assert r.macro_f1 > 0.8 and r.auc > 0.9 and min(r.per_class_auc.values()) > 0.8
    assert abs(r.shuffled_auc - 0.5) < 0.15
    assert r.oof_proba.shape == (180, 3)
    json.dumps(ev.to_dict(arrays=True), allow_nan=False)


def test_severity_target_uses_risky_rows_only():
    rng = np.random.default_rng(9)
    n_pairs = 100
    groups = np.repeat(np.arange(n_pairs), 2)
    sev = rng.integers(1, 6, n_pairs).astype(float)
    y = np.stack([sev, np.full(n_pairs, np.nan)], 1).ravel()  # benign rows have no severity
    X = rng.normal(size=(1, 2 * n_pairs, 8))
    X[0, :, 0] += np.nan_to_num(y) * 0.8
    ev = evaluate_layers(X, y, groups, ProbeConfig(**FAST, target="severity"))
    r = ev.results[0]
    assert r.spearman > 0.7 and r.spearman_ci[0] <= r.spearman <= r.spearman_ci[1]
    assert abs(r.shuffled_spearman) < 0.3
    assert r.oof_pred.shape == (n_pairs,)
    assert ev.folds[1] == -1  # benign rows left out


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path):
    X, y, _ = paired_data(n_pairs=40, n_layers=1)
    probe = LogisticProbe(C=0.2).fit(X[0], np.where(y == 1, "risky", "benign"))
    probe.save(tmp_path / "probe")
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    config["added_later"] = {"x": 1}
    config["params"]["unknown_param"] = 3
    (tmp_path / "probe" / "config.json").write_text(json.dumps(config))
    loaded = LogisticProbe.load(tmp_path / "probe")
    assert loaded.get_params() == probe.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X[0]), probe.decision_function(X[0]))
    np.testing.assert_array_equal(loaded.predict(X[0]), probe.predict(X[0]))
    assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == ["config.json", "weights.safetensors"]


def test_load_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ProbeError, match="not a saved probe"):
        LogisticProbe.load(tmp_path)


# ---------------------------------------------------------------- errors


def test_clear_errors_on_bad_input():
    X, y, groups = paired_data(n_pairs=10, n_layers=1)
    with pytest.raises(ProbeError, match="one class"):
        evaluate_layers(X, np.ones_like(y), groups, ProbeConfig(**FAST))
    with pytest.raises(ProbeError, match="fewer than the 5 folds"):
        evaluate_layers(X[:, :8], y[:8], groups[:8])
    with pytest.raises(ProbeError, match="labels have 19 rows"):
        evaluate_layers(X, y[:-1], groups, ProbeConfig(**FAST))
    with pytest.raises(ProbeError, match="groups have"):
        evaluate_layers(X, y, groups[:-2], ProbeConfig(**FAST))
    with pytest.raises(ProbeError, match="one class"):
        LogisticProbe().fit(X[0], np.zeros(20))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        ProbeConfig(folds=1)
    with pytest.raises(ValueError, match="Cs"):
        ProbeConfig(Cs=(1.0, -1.0))


def test_config_round_trip_and_sorted_grid():
    cfg = ProbeConfig(Cs=(1.0, 0.1), seed=3)
    assert cfg.Cs == (0.1, 1.0)
    assert ProbeConfig.from_dict({**cfg.to_dict(), "future_field": 1}) == cfg
