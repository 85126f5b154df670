"""Numbers the report computes itself: per-category AUC, pair accuracy, confusion, worst errors, verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score

from ._run import NAN, Predictions, Run

THRESHOLD = 0.5
N_BOOT = 500
MIN_BOOT_UNITS = 10
"""Fewer resampling units (pairs) than this give no interval: the bootstrap would be meaningless."""


def fmt(x, digits: int = 2) -> str:
    """``0.8712 -> "0.87"``; NaN, None and non-numbers -> ``"n/a"``."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_ci(ci: tuple[float, float], digits: int = 2) -> str:
    """``(0.81, 0.9) -> "0.81–0.90"``; ``"n/a"`` unless both ends are finite."""
    lo, hi = fmt(ci[0], digits), fmt(ci[1], digits)
    return "n/a" if "n/a" in (lo, hi) else f"{lo}–{hi}"


def pct(x) -> str:
    return "n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{100 * x:.0f}%"


def _pairs(p: Predictions, idx: np.ndarray) -> np.ndarray:
    """(P, 2) row indices [risky, benign] of complete pairs among rows ``idx``."""
    members: dict[str, list[int]] = {}
    for i in idx:
        if p.pair_id[i] is not None:
            members.setdefault(p.pair_id[i], []).append(int(i))
    out = []
    for m in members.values():
        risky = [i for i in m if p.label_N[i] == 1]
        benign = [i for i in m if p.label_N[i] == 0]
        if len(risky) == 1 and len(benign) == 1:
            out.append((risky[0], benign[0]))
    return np.array(out, dtype=int).reshape(-1, 2)


def pair_accuracy(p: Predictions, idx: np.ndarray | None = None) -> tuple[float, int]:
    """Share of matched pairs whose risky text scores above its benign twin (ties count half)."""
    pairs = _pairs(p, np.arange(len(p)) if idx is None else idx)
    if not len(pairs):
        return NAN, 0
    r, b = p.score_N[pairs[:, 0]], p.score_N[pairs[:, 1]]
    return float(np.mean((r > b) + 0.5 * (r == b))), len(pairs)


def _auc_rows_BR(label_BR: np.ndarray, score_BR: np.ndarray, real_BR: np.ndarray) -> np.ndarray:
    """(B,) rank-based AUC of each row of a batch; entries where ``real_BR`` is False are ignored."""
    ranks = rankdata(np.where(real_BR, score_BR, np.inf), axis=1)  # padding ranks above every real score
    pos, neg = real_BR & (label_BR == 1), real_BR & (label_BR == 0)
    n1, n0 = pos.sum(1), neg.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n1 > 0) & (n0 > 0), ((ranks * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0), np.nan)


def bootstrap_auc_ci(p: Predictions, idx: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the AUC, resampling whole pairs (unpaired texts resample alone)."""
    units: dict[object, list[int]] = {}
    for i in idx:
        units.setdefault(p.pair_id[i] if p.pair_id[i] is not None else ("row", int(i)), []).append(int(i))
    groups = list(units.values())
    if len(groups) < MIN_BOOT_UNITS:
        return NAN, NAN
    width = max(len(g) for g in groups)
    table_UK = np.full((len(groups), width), -1)
    for u, g in enumerate(groups):
        table_UK[u, :len(g)] = g
    rng = np.random.default_rng(seed)
    aucs = []
    batch = max(1, min(N_BOOT, 2_000_000 // table_UK.size))
    for start in range(0, N_BOOT, batch):
        draw = rng.integers(0, len(groups), (min(batch, N_BOOT - start), len(groups)))
        rows_BR = table_UK[draw].reshape(len(draw), -1)
        real = rows_BR >= 0
        rows_BR = np.where(real, rows_BR, 0)
        aucs.append(_auc_rows_BR(p.label_N[rows_BR], p.score_N[rows_BR], real))
    aucs = np.concatenate(aucs)
    aucs = aucs[np.isfinite(aucs)]
    if len(aucs) < N_BOOT // 2:
        return NAN, NAN
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


@dataclass(frozen=True)
class CategoryRow:
    category: str
    risky: int
    benign: int
    auc: float
    auc_ci: tuple[float, float]
    pair_accuracy: float
    pairs: int
    mean_risky: float
    mean_benign: float


def _category_row(p: Predictions, name: str, idx: np.ndarray) -> CategoryRow:
    y, s = p.label_N[idx], p.score_N[idx]
    both = 0 < y.sum() < len(y)
    auc = float(roc_auc_score(y, s)) if both else NAN
    acc, n_pairs = pair_accuracy(p, idx)
    return CategoryRow(name, int(y.sum()), int(len(y) - y.sum()), auc,
                       bootstrap_auc_ci(p, idx) if both else (NAN, NAN), acc, n_pairs,
                       float(s[y == 1].mean()) if y.any() else NAN,
                       float(s[y == 0].mean()) if (y == 0).any() else NAN)


def category_table(p: Predictions) -> list[CategoryRow]:
    """One row per category (sorted by name) and a last row "all categories"."""
    cats = np.array(p.category, dtype=object)
    rows = [_category_row(p, c, np.flatnonzero(cats == c)) for c in sorted(set(p.category))]
    return rows + [_category_row(p, "all categories", np.arange(len(p)))]


@dataclass(frozen=True)
class Confusion:
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def accuracy(self) -> float:
        n = self.tn + self.fp + self.fn + self.tp
        return (self.tp + self.tn) / n if n else NAN

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else NAN

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else NAN

    @property
    def false_positive_rate(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else NAN


def confusion(p: Predictions, threshold: float = THRESHOLD) -> Confusion:
    """Counts at ``score >= threshold`` -> risky."""
    m = confusion_matrix(p.label_N, (p.score_N >= threshold).astype(int), labels=[0, 1])
    return Confusion(int(m[0, 0]), int(m[0, 1]), int(m[1, 0]), int(m[1, 1]))


@dataclass(frozen=True)
class Example:
    score: float
    twin_score: float
    category: str
    severity: int
    id: str
    text: str
    wrong: bool


def worst_examples(p: Predictions, label: int, k: int = 10) -> list[Example]:
    """Risky texts with the lowest scores (label 1) or benign texts with the highest (label 0)."""
    twin: dict[int, int] = {}
    for r, b in _pairs(p, np.arange(len(p))):
        twin[int(r)], twin[int(b)] = int(b), int(r)
    idx = np.flatnonzero(p.label_N == label)
    order = idx[np.argsort(p.score_N[idx] if label == 1 else -p.score_N[idx], kind="stable")][:k]
    return [Example(float(p.score_N[i]), float(p.score_N[twin[i]]) if i in twin else NAN, p.category[i],
                    int(p.severity_N[i]), p.id[i], p.text[i],
                    bool((p.score_N[i] >= THRESHOLD) != (label == 1))) for i in order]


def _strength(auc: float) -> str:
    for cut, word in ((0.9, "very well"), (0.8, "well"), (0.7, "moderately well"), (0.6, "weakly")):
        if auc >= cut:
            return word
    return "barely better than chance" if auc > 0.5 else "no better than chance"


@dataclass(frozen=True)
class Verdict:
    headline: str
    sentences: list[str]
    level: str
    """"good", "caution" or "warning": the colour of the verdict box."""


def verdict(run: Run) -> Verdict:
    """One plain-language paragraph computed from the metrics."""
    b, lex = run.best, run.lexical
    if b is None or math.isnan(b.auc):
        return Verdict("No probe result has an AUC, so there is nothing to judge.", [], "warning")
    lo, hi = b.auc_ci
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    parts = []
    if lex is not None and math.isfinite(lex.auc):
        parts.append(f"lexical baseline {fmt(lex.auc)}")
    if math.isfinite(b.shuffled_auc):
        parts.append(f"shuffled-label control {fmt(b.shuffled_auc)}")
    headline = f"Best layer {b.name}: AUC {fmt(b.auc)}{ci}" + (f" vs {' and '.join(parts)}." if parts else ".")
    level = "good"
    says = [f"The probe separates risky from benign texts {_strength(b.auc)}."]
    if lex is not None and math.isfinite(lex.auc):
        floor = lo if math.isfinite(lo) else b.auc
        if floor > lex.auc:
            says.append("Its whole 95% interval lies above the lexical baseline, so the activations carry "
                        "a risk signal that the surface words alone do not.")
        elif b.auc > lex.auc:
            says.append("It beats the lexical baseline, but its 95% interval overlaps the baseline, "
                        "so the gain over surface wording is not established.")
            level = "caution"
        else:
            says.append("It does not beat the lexical baseline: the signal may be no more than surface wording.")
            level = "caution"
    if math.isfinite(b.pair_accuracy):
        says.append(f"In {pct(b.pair_accuracy)} of matched pairs it scores the risky text above its benign twin.")
    if math.isfinite(b.shuffled_auc):
        if abs(b.shuffled_auc - 0.5) <= 0.1:
            says.append("The shuffled-label control is near chance, as it should be.")
        else:
            says.append(f"Warning: the shuffled-label control scored {fmt(b.shuffled_auc)}, far from chance (0.50); "
                        "labels may leak into the features or folds, so treat every number here with suspicion.")
            level = "warning"
    if b.auc < 0.6 and level == "good":
        level = "caution"
    return Verdict(headline, says, level)
