"""Pair-aware metrics and bootstrap confidence intervals.

Reported point estimates use scikit-learn's metric functions. Resampling
needs thousands of evaluations per layer, and one ``roc_auc_score`` call
costs ~1-20 ms of input validation alone, so bootstrap and inner-CV AUCs use
the vectorised Mann-Whitney form below (``auc_rows``, ``auc_weighted``),
which the tests check equals ``roc_auc_score`` to 1e-12, ties included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import rankdata, spearmanr


def pair_accuracy(y: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Share of pairs whose risky member scores higher than its benign member.

    Only groups of exactly two rows with one ``1`` and one ``0`` count; ties
    count 0.5. Returns NaN when there are no such pairs.

    Example:
        >>> pair_accuracy(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.3, 0.3]), np.array([0, 0, 1, 1]))
        0.75
    """
    y, scores, groups = np.asarray(y), np.asarray(scores, dtype=np.float64), np.asarray(groups)
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    n_groups = inv.max() + 1
    count = np.bincount(inv, minlength=n_groups)
    n_pos = np.bincount(inv, weights=(y == 1).astype(float), minlength=n_groups)
    s_pos = np.bincount(inv, weights=np.where(y == 1, scores, 0.0), minlength=n_groups)
    s_neg = np.bincount(inv, weights=np.where(y == 1, 0.0, scores), minlength=n_groups)
    ok = (count == 2) & (n_pos == 1)
    if not ok.any():
        return float("nan")
    diff = s_pos[ok] - s_neg[ok]
    return float(np.mean(np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))))


def auc_rows(y: np.ndarray, scores_SN: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``scores_SN`` against binary ``y`` (midranks for ties): (S,).

    Example:
        >>> auc_rows(np.array([0, 1, 1]), np.array([[0.1, 0.5, 0.5], [0.5, 0.5, 0.1]])).tolist()
        [1.0, 0.25]
    """
    y = np.asarray(y) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(np.shape(scores_SN)[0], np.nan)
    ranks = rankdata(np.asarray(scores_SN, dtype=np.float64), axis=1, method="average")
    return (ranks[:, y].sum(1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc_weighted(y: np.ndarray, scores: np.ndarray, weights_BN: np.ndarray) -> np.ndarray:
    """ROC-AUC of one score vector under many row weightings (e.g. bootstrap counts): (B,).

    Equals ``roc_auc_score(y, scores, sample_weight=w)`` for each row ``w``;
    NaN where a weighting leaves one class only.
    """
    y = np.asarray(y) == 1
    _, u = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    u = u.reshape(-1)
    U = int(u.max()) + 1
    W = np.asarray(weights_BN, dtype=np.float64)
    B = W.shape[0]
    flat = (np.arange(B)[:, None] * U + u[None, :])  # (B, N) index into (B, U)
    wp = np.bincount(flat[:, y].ravel(), W[:, y].ravel(), B * U).reshape(B, U)
    wn = np.bincount(flat[:, ~y].ravel(), W[:, ~y].ravel(), B * U).reshape(B, U)
    below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each score value
    tot = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (wp * (below + 0.5 * wn)).sum(1) / tot, np.nan)


def bootstrap_counts(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) how often each row is drawn when whole groups are resampled with replacement."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    inv = inv.reshape(-1)
    G = int(inv.max()) + 1
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, G, size=(n_boot, G))
    counts = np.zeros((n_boot, G))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    return counts[:, inv]


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (float("nan"), float("nan"))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return (float(lo), float(hi))


def macro_f1_weighted(y: np.ndarray, pred: np.ndarray, weights_BN: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 over ``n_classes`` labels under many row weightings: (B,).

    Equals ``f1_score(y, pred, average="macro", labels=range(K), sample_weight=w, zero_division=0)``.
    """
    W = np.asarray(weights_BN, dtype=np.float64)
    K = n_classes
    cell = np.asarray(y).astype(int) * K + np.asarray(pred).astype(int)
    cm = np.stack([np.bincount(cell, w, K * K) for w in W]).reshape(-1, K, K)  # (B, true, pred)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    denom = cm.sum(2) + cm.sum(1)  # 2 TP + FN + FP
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return f1.mean(1)


def bootstrap_ci(
    metric: Callable[[np.ndarray], float],
    groups: np.ndarray,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of ``metric(rows)`` over resamples of whole groups.

    ``metric`` gets an index array of rows (groups drawn with replacement,
    each contributing all its rows); resamples where it returns NaN or raises
    ``ValueError`` (e.g. one class only) are skipped. Returns (NaN, NaN) when
    ``n_boot`` is 0 or no resample is usable.
    """
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    groups = np.asarray(groups)
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(inv.max() + 1))
    ends = np.append(starts[1:], len(inv))
    rows_of = [order[s:e] for s, e in zip(starts, ends)]
    rng = np.random.default_rng(seed)
    n_groups = len(rows_of)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, n_groups, n_groups)
        idx = np.concatenate([rows_of[g] for g in pick])
        try:
            v = metric(idx)
        except ValueError:
            continue
        if np.isfinite(v):
            values.append(v)
    if not values:
        return (float("nan"), float("nan"))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(values), [a, 1.0 - a])
    return (float(lo), float(hi))


def auc_ci(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of ROC-AUC resampling pairs (groups) with replacement."""
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    return _percentile(auc_weighted(y, scores, bootstrap_counts(groups, n_boot, seed)), level)


def macro_f1_ci(
    y: np.ndarray, pred: np.ndarray, n_classes: int, groups: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 resampling groups."""
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    return _percentile(macro_f1_weighted(y, pred, bootstrap_counts(groups, n_boot, seed), n_classes), level)


def spearman(y: np.ndarray, pred: np.ndarray) -> float:
    """Spearman rank correlation (scipy); NaN when either side is constant."""
    if np.ptp(y) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(spearmanr(y, pred).statistic)


def spearman_ci(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Bootstrap interval of Spearman's rho resampling groups."""
    return bootstrap_ci(lambda i: spearman(y[i], pred[i]), groups, n_boot, level, seed)


def pair_count(y: np.ndarray, groups: np.ndarray) -> int:
    """How many groups are matched pairs: exactly two rows, one labelled ``1`` (what :func:`pair_accuracy` counts).

    Example:
        >>> pair_count(np.array([1, 0, 1, 0, 1]), np.array(["a", "a", "b", "b", "c"]))
        2
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) == 0:
        return 0
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    count = np.bincount(inv)
    n_pos = np.bincount(inv, weights=(y == 1).astype(float), minlength=len(count))
    return int(((count == 2) & (n_pos == 1)).sum())


@dataclass(frozen=True)
class BinarySummary:
    """Metrics of binary scores on one set of rows, e.g. one category of a run's out-of-fold predictions."""

    n_pos: int
    """Rows labelled 1 (risky)."""
    n_neg: int
    """Rows labelled 0 (benign)."""
    n_pairs: int
    """Matched pairs among the rows (see :func:`pair_count`)."""
    auc: float
    """ROC-AUC (scikit-learn); NaN unless both classes are present."""
    auc_ci: tuple[float, float]
    """Pair-bootstrap percentile interval of the AUC (:func:`auc_ci`); NaN when not computed."""
    pair_accuracy: float
    """Share of pairs whose positive member scores higher (:func:`pair_accuracy`)."""
    mean_pos: float
    """Mean score of the positive rows (NaN if none)."""
    mean_neg: float
    """Mean score of the negative rows (NaN if none)."""
    tn: int
    """Negatives scored below the threshold."""
    fp: int
    """Negatives scored at or above the threshold."""
    fn: int
    """Positives scored below the threshold."""
    tp: int
    """Positives scored at or above the threshold."""

    @property
    def accuracy(self) -> float:
        n = self.tn + self.fp + self.fn + self.tp
        return (self.tp + self.tn) / n if n else float("nan")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def false_positive_rate(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")

    @property
    def f1(self) -> float:
        """F1 of the positive class (0 when there is nothing to score, as scikit-learn's ``zero_division=0``)."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0


def summarize_binary(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, threshold: float = 0.5,
                     n_boot: int = 1000, level: float = 0.95, seed: int = 0, min_groups: int = 0) -> BinarySummary:
    """AUC with its pair-bootstrap interval, pair accuracy, class means and the confusion counts at
    ``scores >= threshold``, all from the functions above (one definition of each metric).

    ``min_groups``: with fewer resampling units (groups) than this the interval is left NaN.

    Example:
        >>> y = np.tile([1, 0], 20); g = np.repeat(np.arange(20), 2); s = np.where(y == 1, 0.8, 0.3)
        >>> m = summarize_binary(y, s, g, n_boot=50)
        >>> m.auc, m.auc_ci, m.pair_accuracy, m.n_pairs, m.tp, m.fp
        (1.0, (1.0, 1.0), 1.0, 20, 20, 0)
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score

    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    both = n_pos > 0 and n_neg > 0
    nan2 = (float("nan"), float("nan"))
    enough = len(np.unique(groups)) >= min_groups if len(groups) else False
    ci = auc_ci(y, scores, groups, n_boot, level, seed) if both and enough else nan2
    cm = confusion_matrix(y, (scores >= threshold).astype(int), labels=[0, 1]) if len(y) else np.zeros((2, 2), int)
    return BinarySummary(
        n_pos=n_pos, n_neg=n_neg, n_pairs=pair_count(y, groups),
        auc=float(roc_auc_score(y, scores)) if both else float("nan"), auc_ci=ci,
        pair_accuracy=pair_accuracy(y, scores, groups) if len(y) else float("nan"),
        mean_pos=float(scores[y == 1].mean()) if n_pos else float("nan"),
        mean_neg=float(scores[y == 0].mean()) if n_neg else float("nan"),
        tn=int(cm[0, 0]), fp=int(cm[0, 1]), fn=int(cm[1, 0]), tp=int(cm[1, 1]))
