"""Nested grouped cross-validation on top of :func:`fit_many`.

Every layer, outer fold, inner fold, ``C`` and label set (real and shuffled)
is fitted in one batched call per chunk of layers. ``C`` is chosen for each
(layer, outer fold) from the inner folds only; the outer test fold is scored
once, by the outer-training model with that ``C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._config import ProbeConfig
from ._folds import NestedFolds
from ._metrics import auc_rows
from ._solver import Loss, fit_many


@dataclass(frozen=True, eq=False)
class CVScores:
    """Out-of-fold scores of every layer for every label set."""

    oof: np.ndarray
    """(T, L, K, N) out-of-fold decision values (logits for classifiers, predictions for ridge)."""
    chosen_C: np.ndarray
    """(T, L, F) the ``C`` chosen by inner CV for each outer fold."""
    inner_score: np.ndarray
    """(T, L, F, C) mean inner-validation score of each ``C`` (higher is better)."""
    inner_oof: np.ndarray | None = None
    """(T, L, F, N) inner-validation decision values at the chosen ``C`` of outer fold ``f`` for its
    training rows (each lies in one inner validation fold); NaN on its test rows. Binary targets only."""


def layers_per_chunk(n_layers: int, n_rows: int, n_features: int, n_problems: int, itemsize: int, budget_gb: float) -> int:
    """How many layers fit the memory budget: activations plus ~16 solver vectors per problem."""
    per_layer = itemsize * (3 * n_rows * n_features + 16 * n_problems * n_features + 6 * n_problems * n_rows)
    per_layer += 8 * (2 * n_rows * n_features)  # float64 copies while computing fold statistics
    return int(max(1, min(n_layers, (budget_gb * 2**30) // max(per_layer, 1))))


def _inner_metric(loss: Loss, y: np.ndarray, z_CKN: np.ndarray, n_classes: int) -> np.ndarray:
    """Validation score of each C (higher is better): AUC, minus log-loss, or minus MSE. (C,)"""
    if loss == "logistic":
        return auc_rows(y, z_CKN[:, 0])
    if loss == "multinomial":
        z = z_CKN - z_CKN.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))  # (C, K, N)
        yk = y.astype(int)
        return logp[:, yk, np.arange(len(yk))].mean(1)
    return -np.mean((z_CKN[:, 0] - y[None]) ** 2, axis=1)


def cross_val_scores(
    X_LND: np.ndarray,
    y_TN: np.ndarray,
    folds: NestedFolds,
    config: ProbeConfig,
    loss: Loss,
    n_classes: int = 1,
    X_eval_LND: np.ndarray | None = None,
) -> CVScores:
    """Nested-CV out-of-fold scores for ``T`` label sets sharing the same folds.

    Args:
        X_LND: activations (layers, rows, features).
        y_TN: label sets, e.g. the real labels and a shuffled copy.
        folds: outer and inner grouped folds.
        config: Cs, penalty, tolerance, precision and memory budget.
        loss: ``logistic``, ``multinomial`` or ``squared``.
        n_classes: classes for ``multinomial``.
        X_eval_LND: features the fitted models score (inner validation and outer test rows), when they
            differ from the training features ``X_LND`` (e.g. a readout only available for training).
    """
    X_LND = np.asarray(X_LND)
    y_TN = np.asarray(y_TN, dtype=np.float64)
    L, N, D = X_LND.shape
    T = y_TN.shape[0]
    F, G, _ = folds.inner_train.shape
    masks = folds.masks  # (F + F G, N)
    n_masks = masks.shape[0]
    all_masks = np.tile(masks, (T, 1))  # (T (F + F G), N)
    all_y = np.repeat(y_TN, n_masks, axis=0)
    Cs = np.asarray(config.Cs)
    K = n_classes if loss == "multinomial" else 1
    dtype = torch.float32 if config.dtype == "float32" else torch.float64
    per_chunk = layers_per_chunk(L, N, D, all_masks.shape[0] * len(Cs) * K, dtype.itemsize, config.max_memory_gb)

    oof = np.zeros((T, L, K, N))
    chosen = np.zeros((T, L, F))
    inner_score = np.zeros((T, L, F, len(Cs)))
    inner_oof = np.full((T, L, F, N), np.nan) if loss == "logistic" else None
    for start in range(0, L, per_chunk):
        Xc = X_LND[start : start + per_chunk]
        fit = fit_many(
            Xc, all_y, all_masks, Cs,
            penalty=config.penalty, l1_ratio=config.l1_ratio, loss=loss, n_classes=K if loss == "multinomial" else None,
            standardize=config.standardize, tol=config.tol, max_iter=config.max_iter, dtype=dtype,
        )
        Xe = Xc if X_eval_LND is None else np.asarray(X_eval_LND)[start : start + per_chunk]
        z = fit.decision_function(Xe).reshape(len(Xc), T, n_masks, len(Cs), K, N)
        del fit
        for t in range(T):
            y = y_TN[t]
            for li in range(len(Xc)):
                layer = start + li
                for f in range(F):
                    vals = np.stack([
                        _inner_metric(loss, y[val], z[li, t, F + f * G + g][..., val], K)
                        for g, val in enumerate(folds.inner_val[f])
                    ])  # (G, C); NaN where a validation fold has one class only
                    ok = np.isfinite(vals).any(0)
                    mean = np.full(len(Cs), -np.inf)
                    mean[ok] = np.nanmean(vals[:, ok], axis=0)
                    best = int(np.argmax(mean))  # ties: the smallest C (strongest regularisation)
                    inner_score[t, layer, f] = mean
                    chosen[t, layer, f] = Cs[best]
                    test = folds.fold == f
                    oof[t, layer][:, test] = z[li, t, f, best][:, test]
                    if inner_oof is not None:
                        for g, val in enumerate(folds.inner_val[f]):
                            inner_oof[t, layer, f, val] = z[li, t, F + f * G + g, best, 0, val]
    return CVScores(oof=oof, chosen_C=chosen, inner_score=inner_score, inner_oof=inner_oof)
