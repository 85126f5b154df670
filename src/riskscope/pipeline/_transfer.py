"""Metrics of a probe on an external labelled set: intervals by resampling pairs, calibration, and the
lexical transfer baseline (TF-IDF trained on the run's own texts, scoring the external ones).

Every interval resamples whole groups (a pair's two texts together; a text without a pair is its own
group) with :func:`riskscope.probes.bootstrap_counts`, and every AUC is
:func:`riskscope.probes.auc_weighted` under those counts, so the probe and the lexical model are compared
on the very same resamples (a paired bootstrap).

>>> y = np.array([1, 0, 1, 0]); g = np.array([0, 0, 1, 1])
>>> m = binary_metrics(y, np.array([0.9, 0.2, 0.6, 0.4]), g, threshold=0.5, n_boot=50, seed=0)
>>> m["auc"], m["pair_accuracy"], m["accuracy"], m["f1"]
(1.0, 1.0, 1.0, 1.0)
>>> reliability(np.array([0.05, 0.15, 0.95]), np.array([0, 0, 1]), bins=10)["ece"]
0.083333
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._io import json_float
from ..probes import auc_weighted, bootstrap_counts, group_folds, summarize_binary

LEXICAL_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
"""C grid of the lexical transfer model (the grid of :func:`riskscope.probes.lexical_baseline`)."""


def _ci(values: np.ndarray, level: float = 0.95) -> list[float | None]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [None, None]
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return [json_float(lo), json_float(hi)]


def pair_outcomes(y: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, outcome)``: for each matched pair (two rows, one labelled 1), the index of its risky row and
    1 / 0.5 / 0 as the risky member scores above, level with or below its partner."""
    y, scores, groups = np.asarray(y), np.asarray(scores, dtype=np.float64), np.asarray(groups)
    members: dict = {}
    for i, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(i)
    rows, out = [], []
    for idx in members.values():
        if len(idx) == 2 and int(y[idx].sum()) == 1:
            pos, neg = (idx[0], idx[1]) if y[idx[0]] == 1 else (idx[1], idx[0])
            rows.append(pos)
            d = scores[pos] - scores[neg]
            out.append(1.0 if d > 0 else 0.5 if d == 0 else 0.0)
    return np.asarray(rows, dtype=np.int64), np.asarray(out, dtype=np.float64)


def _weighted_mean(W: np.ndarray, values: np.ndarray) -> np.ndarray:
    tot = W.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (W @ values) / tot, np.nan)


def binary_metrics(y, scores, groups, *, threshold: float, n_boot: int, seed: int,
                   counts: np.ndarray | None = None) -> dict:
    """AUC, pair accuracy, accuracy and F1 at ``scores >= threshold``, each with a 95 % pair-bootstrap
    interval, plus the confusion counts and class means (from :func:`riskscope.probes.summarize_binary`).

    ``counts``: the (B, N) resampling counts to use (to pair two models on the same resamples)."""
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    s = summarize_binary(y, scores, groups, threshold=threshold, n_boot=0)
    W = bootstrap_counts(groups, n_boot, seed) if counts is None else counts
    pred = (scores >= threshold).astype(int)
    both = s.n_pos > 0 and s.n_neg > 0
    auc_b = auc_weighted(y, scores, W) if both and len(W) else np.full(len(W), np.nan)
    acc_b = _weighted_mean(W, (pred == y).astype(float))
    tp, fp, fn = W @ ((y == 1) & (pred == 1)), W @ ((y == 0) & (pred == 1)), W @ ((y == 1) & (pred == 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_b = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    rows, outcome = pair_outcomes(y, scores, groups)
    pa_b = _weighted_mean(W[:, rows], outcome) if len(rows) else np.full(len(W), np.nan)
    return {"n": int(len(y)), "n_pos": s.n_pos, "n_neg": s.n_neg, "n_pairs": s.n_pairs,
            "auc": json_float(s.auc), "auc_ci": _ci(auc_b),
            "pair_accuracy": json_float(s.pair_accuracy), "pair_accuracy_ci": _ci(pa_b),
            "accuracy": json_float(s.accuracy), "accuracy_ci": _ci(acc_b),
            "f1": json_float(s.f1), "f1_ci": _ci(f1_b),
            "precision": json_float(s.precision), "recall": json_float(s.recall),
            "threshold": json_float(threshold), "tn": s.tn, "fp": s.fp, "fn": s.fn, "tp": s.tp,
            "mean_pos": json_float(s.mean_pos), "mean_neg": json_float(s.mean_neg)}


def delta_auc(y, a, b, groups, *, n_boot: int, seed: int) -> dict:
    """AUC(a) - AUC(b) on the same rows, with a paired pair-bootstrap 95 % interval and a two-sided
    bootstrap p-value for "no difference": ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` over resamples, each
    share counted as ``(k + 1) / (B + 1)`` so that it is never 0."""
    y = np.asarray(y).astype(int)
    W = bootstrap_counts(np.asarray(groups), n_boot, seed)
    d_b = auc_weighted(y, a, W) - auc_weighted(y, b, W)
    d_b = d_b[np.isfinite(d_b)]
    from sklearn.metrics import roc_auc_score

    value = float(roc_auc_score(y, a) - roc_auc_score(y, b))
    if len(d_b) == 0:
        return {"value": json_float(value), "ci": [None, None], "p_value": None, "n_boot": 0}
    B = len(d_b)
    p = min(1.0, 2 * min(((d_b <= 0).sum() + 1) / (B + 1), ((d_b >= 0).sum() + 1) / (B + 1)))
    return {"value": json_float(value), "ci": _ci(d_b), "p_value": json_float(p), "n_boot": int(B)}


def reliability(scores, y, bins: int = 10) -> dict:
    """The reliability curve of probabilities ``scores`` against labels ``y`` over ``bins`` equal-width
    bins of [0, 1], and the expected calibration error ``sum_b n_b / N * |observed_b - mean score_b|``."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum(np.digitize(scores, edges[1:-1], right=False), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        mean_s = float(scores[m].mean()) if n else float("nan")
        obs = float(y[m].mean()) if n else float("nan")
        if n:
            ece += n / len(y) * abs(obs - mean_s)
        rows.append({"lo": json_float(edges[b]), "hi": json_float(edges[b + 1]), "n": n,
                     "mean_score": json_float(mean_s), "observed": json_float(obs)})
    return {"bins": rows, "ece": json_float(ece)}


def fit_lexical(texts: Sequence[str], y, groups, *, Cs: Sequence[float] = LEXICAL_CS, inner_folds: int = 4,
                seed: int = 0):
    """TF-IDF word 1-2 grams (sublinear tf) + logistic regression fitted on all of ``texts``, ``C`` chosen by
    grouped CV (pairs kept together), as :func:`riskscope.probes.lexical_baseline` does in each fold.
    Returns the fitted scikit-learn pipeline (``predict_proba`` scores new texts) and the chosen ``C``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    texts = list(texts)
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    k = max(2, min(inner_folds, len(np.unique(groups))))
    inner = group_folds(groups, k, seed)
    splits = [(np.flatnonzero(inner != f), np.flatnonzero(inner == f)) for f in range(k)]
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                         LogisticRegression(max_iter=10_000, tol=1e-8))
    search = GridSearchCV(pipe, {"logisticregression__C": list(Cs)}, scoring="roc_auc", cv=splits,
                          error_score=np.nan)
    with threadpool_limits(1):
        search.fit(texts, y)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def subset_rows(rows: Sequence, key) -> dict:
    """Row indices by ``key(row)``; a pair goes where its risky member's key is (severity, category)."""
    by_pair: dict = {}
    for i, r in enumerate(rows):
        if r.pair_id is not None:
            by_pair.setdefault(r.pair_id, []).append(i)
    out: dict = {}
    done: set = set()
    for i, r in enumerate(rows):
        if i in done:
            continue
        members = by_pair.get(r.pair_id, [i]) if r.pair_id is not None else [i]
        lead = next((rows[j] for j in members if rows[j].label == 1), r)
        out.setdefault(key(lead), []).extend(members)
        done.update(members)
    return {k: np.asarray(sorted(v)) for k, v in out.items()}


__all__ = ["LEXICAL_CS", "binary_metrics", "delta_auc", "fit_lexical", "pair_outcomes",
           "reliability", "subset_rows"]
