"""Lexical baseline: how far do surface words alone get on the same folds?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from ._config import ProbeError
from ._folds import check_inputs, group_folds
from ._metrics import pair_accuracy
from ._results import LexicalResult

LEXICAL_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
"""C grid of the baseline: TF-IDF rows have unit norm, so useful C sit higher than for activations."""


def lexical_baseline(
    texts: Sequence[str],
    y: np.ndarray | Sequence[int],
    groups: np.ndarray | Sequence,
    folds: np.ndarray | int = 5,
    *,
    Cs: Sequence[float] = LEXICAL_CS,
    inner_folds: int = 4,
    seed: int = 0,
) -> LexicalResult:
    """TF-IDF word 1-2 grams + logistic regression, cross-validated on the probes' folds.

    The vectoriser is fitted inside each training fold only (it is part of the
    pipeline), and ``C`` is chosen by inner grouped CV on that training fold.

    Args:
        texts: one text per row.
        y: 0/1 labels (1 = risky).
        groups: pair id per row.
        folds: outer fold id per row (e.g. ``ProbeEvaluation.folds``; rows
            with -1 are left out) or a number of grouped folds to make.
        Cs: grid for the inner search.
        inner_folds: inner grouped folds.
        seed: seed for folds made here.

    Example:
        >>> texts = ["the door was locked", "the door was left open"] * 10
        >>> res = lexical_baseline(texts, [0, 1] * 10, np.repeat(np.arange(10), 2), 5, inner_folds=2)
        >>> res.auc
        1.0
    """
    texts = list(texts)
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    n_folds = folds if isinstance(folds, (int, np.integer)) else len(np.unique(np.asarray(folds)[np.asarray(folds) >= 0]))
    check_inputs(len(texts), y, groups, int(n_folds), binary=True)
    fold = group_folds(groups, int(folds), seed) if isinstance(folds, (int, np.integer)) else np.asarray(folds)
    if len(fold) != len(texts):
        raise ProbeError(f"folds have {len(fold)} rows but texts have {len(texts)}")
    oof = np.full(len(texts), np.nan)
    outer = np.unique(fold[fold >= 0])
    inner_oof = np.full((len(outer), len(texts)), np.nan)
    chosen = []
    for f in outer:
        train, test = np.flatnonzero((fold != f) & (fold >= 0)), np.flatnonzero(fold == f)
        inner = group_folds(groups[train], inner_folds, seed + 1 + int(f))
        splits = [(np.flatnonzero(inner != g), np.flatnonzero(inner == g)) for g in range(inner_folds)]
        pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(max_iter=10_000, tol=1e-8),
        )
        search = GridSearchCV(pipe, {"logisticregression__C": list(Cs)}, scoring="roc_auc", cv=splits, error_score=np.nan)
        with threadpool_limits(1):  # tiny sparse fits: BLAS threads only add contention (7x slower on 2 cores)
            search.fit([texts[i] for i in train], y[train])
        chosen.append(float(search.best_params_["logisticregression__C"]))
        oof[test] = search.decision_function([texts[i] for i in test])
        with threadpool_limits(1):
            for tr, va in splits:  # the chosen C's inner-validation scores, for choosing recipes that stack it
                model = clone(search.best_estimator_).fit([texts[i] for i in train[tr]], y[train[tr]])
                inner_oof[int(np.flatnonzero(outer == f)[0]), train[va]] = model.decision_function(
                    [texts[i] for i in train[va]])
    used = fold >= 0
    return LexicalResult(
        auc=float(roc_auc_score(y[used], oof[used])),
        pair_accuracy=pair_accuracy(y[used], oof[used], groups[used]),
        accuracy=float(accuracy_score(y[used], (oof[used] > 0).astype(int))),
        C_per_fold=tuple(chosen),
        oof_scores=oof,
        inner_oof=inner_oof,
    )
