"""Per-layer probe evaluation: nested grouped CV, metrics, bootstrap CIs, shuffled control."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

from ._config import ProbeConfig, ProbeError
from ._crossval import CVScores, cross_val_scores
from ._folds import NestedFolds, check_inputs, nested_folds, shuffle_labels
from ._lexical import lexical_baseline
from ._metrics import auc_ci, macro_f1_ci, pair_accuracy, spearman, spearman_ci
from ._results import AnyLayerResult, CategoryLayerResult, LayerResult, ProbeEvaluation, SeverityLayerResult

Acts = np.ndarray | Mapping[tuple[str, int], np.ndarray]


def _stack(acts: Acts, hook: str) -> list[tuple[str, list[int], np.ndarray]]:
    """Group activations into (hook, layers, X_LND) blocks of equal width."""
    if isinstance(acts, Mapping):
        blocks: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = {}
        for (h, layer), a in acts.items():
            a = np.asarray(a)
            if a.ndim != 2:
                raise ProbeError(f"activations for ({h!r}, {layer}) must be (rows, features), got shape {a.shape}")
            blocks.setdefault((h, a.shape[1]), []).append((int(layer), a))
        out = []
        for (h, _), items in blocks.items():
            rows = {a.shape[0] for _, a in items}
            if len(rows) != 1:
                raise ProbeError(f"activations of hook {h!r} have different row counts {sorted(rows)}")
            out.append((h, [lay for lay, _ in items], np.stack([a for _, a in items])))
        return out
    X = np.asarray(acts)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3:
        raise ProbeError(f"activations must be (layers, rows, features) or a dict of (rows, features), got shape {X.shape}")
    return [(hook, list(range(X.shape[0])), X)]


def evaluate_layers(
    acts: Acts,
    y: np.ndarray | Sequence,
    groups: np.ndarray | Sequence,
    config: ProbeConfig | None = None,
    *,
    hook: str = "resid",
    texts: Sequence[str] | None = None,
    readout: str = "last",
    eval_acts: Acts | None = None,
) -> ProbeEvaluation:
    """Cross-validated linear probes on every (hook, layer).

    Args:
        acts: ``X_LND`` array (layers, rows, features) named by ``hook``, or a
            dict ``{(hook, layer): (rows, features)}``; all share rows.
        y: per row: 0/1 (``binary``), class labels (``category``) or severity
            with NaN for rows that have none, e.g. benign members (``severity``).
        groups: pair id of each row; pairs never straddle a fold.
        config: folds, Cs, penalty, target, seeds (default :class:`ProbeConfig`).
        hook: the hook name for an array ``acts``.
        texts: the rows' texts; when given, the lexical baseline is added.
        readout: the token readout ``acts`` hold (recorded in each result).
        eval_acts: features the fitted probes score, shaped like ``acts``, when they differ from the
            training features (the ``span`` readout trains on the tokens where twins differ and is
            scored on the mean over tokens, as a single text is at scoring time). Binary target only.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.tile([1, 0], 40); groups = np.repeat(np.arange(40), 2)
        >>> X = rng.normal(size=(2, 80, 8)); X[1, :, 0] += 3 * y
        >>> ev = evaluate_layers(X, y, groups, ProbeConfig(folds=3, inner_folds=2, n_bootstrap=50))
        >>> ev.best.layer, ev.best.auc > 0.8
        (1, True)
    """
    config = config or ProbeConfig()
    blocks = _stack(acts, hook)
    y = np.asarray(y)
    groups = np.asarray(groups)
    n_rows = blocks[0][2].shape[1]
    for h, _, X in blocks:
        if X.shape[1] != n_rows:
            raise ProbeError(f"hook {h!r} has {X.shape[1]} rows but others have {n_rows}")
    check_inputs(n_rows, y, groups, config.folds, binary=config.target == "binary")
    if texts is not None and len(texts) != n_rows:
        raise ProbeError(f"texts have {len(texts)} rows but activations have {n_rows}")

    if config.target == "binary":
        folds = nested_folds(groups, config.folds, config.inner_folds, config.seed)
        run = _binary
        y_used, keep = y.astype(np.float64), np.arange(n_rows)
    elif config.target == "category":
        folds = nested_folds(groups, config.folds, config.inner_folds, config.seed)
        run = _category
        y_used, keep = y, np.arange(n_rows)
    else:
        sev = np.asarray(y, dtype=np.float64)
        keep = np.flatnonzero(np.isfinite(sev))
        check_inputs(len(keep), sev[keep], groups[keep], config.folds, binary=False)
        folds = nested_folds(groups[keep], config.folds, config.inner_folds, config.seed)
        run = _severity
        y_used = sev[keep]

    results: list[AnyLayerResult] = []
    eval_blocks = _stack(eval_acts, hook) if eval_acts is not None else [None] * len(blocks)
    if eval_acts is not None:
        if config.target != "binary":
            raise ProbeError("eval_acts is for binary probes only")
        if [(h, lay, X.shape) for h, lay, X in eval_blocks] != [(h, lay, X.shape) for h, lay, X in blocks]:
            raise ProbeError("eval_acts must hold the same hooks, layers and shapes as acts")
    for (h, layers, X), ev in zip(blocks, eval_blocks):
        kw = {} if ev is None else {"X_eval": ev[2]}
        part = run(X[:, keep] if len(keep) < n_rows else X, y_used, groups[keep], folds, config, h, layers, **kw)
        if config.target == "binary":
            part = [replace(r, readout=readout) for r in part]
        results.extend(part)
    fold_all = np.full(n_rows, -1)
    fold_all[keep] = folds.fold
    lexical = None
    if texts is not None and config.target == "binary":
        lexical = lexical_baseline(texts, y, groups, fold_all, seed=config.seed, inner_folds=config.inner_folds)
    return ProbeEvaluation(target=config.target, results=tuple(results), config=config, folds=fold_all, lexical=lexical)


def _label_sets(y: np.ndarray, groups: np.ndarray, config: ProbeConfig) -> np.ndarray:
    """(T, N): the real labels, then a shuffled copy when the control is on."""
    sets = [y]
    if config.shuffled_control:
        sets.append(shuffle_labels(y, groups, np.random.default_rng(config.seed + 7919)))
    return np.stack(sets)


def _binary(X, y, groups, folds: NestedFolds, config: ProbeConfig, hook: str, layers: list[int],
            X_eval=None) -> list[LayerResult]:
    y_T = _label_sets(y, groups, config)
    cv: CVScores = cross_val_scores(X, y_T, folds, config, "logistic", X_eval_LND=X_eval)
    out = []
    yi = y.astype(int)
    for li, layer in enumerate(layers):
        s = cv.oof[0, li, 0]
        auc = float(roc_auc_score(yi, s))
        fpr, tpr, thr = roc_curve(yi, s)
        pred = (s > 0).astype(int)
        if config.shuffled_control:
            ys, ss = y_T[1].astype(int), cv.oof[1, li, 0]
            sh_auc, sh_pair = float(roc_auc_score(ys, ss)), pair_accuracy(ys, ss, groups)
        else:
            sh_auc = sh_pair = float("nan")
        out.append(LayerResult(
            hook=hook, layer=layer, auc=auc,
            auc_ci=auc_ci(yi, s, groups, config.n_bootstrap, config.ci_level, config.seed),
            f1=float(f1_score(yi, pred, zero_division=0.0)), accuracy=float(accuracy_score(yi, pred)),
            pair_accuracy=pair_accuracy(yi, s, groups), shuffled_auc=sh_auc, shuffled_pair_accuracy=sh_pair,
            fold_auc=_fold_aucs(yi, s, folds.fold),
            C_per_fold=tuple(float(c) for c in cv.chosen_C[0, li]), oof_scores=s, fpr=fpr, tpr=tpr, thresholds=thr,
            inner_oof=None if cv.inner_oof is None else cv.inner_oof[0, li],
        ))
    return out


def _fold_aucs(y: np.ndarray, s: np.ndarray, fold: np.ndarray) -> tuple[float, ...]:
    out = []
    for f in np.unique(fold):
        m = fold == f
        out.append(float(roc_auc_score(y[m], s[m])) if len(np.unique(y[m])) == 2 else float("nan"))
    return tuple(out)


def _softmax(z_KN: np.ndarray) -> np.ndarray:
    z = z_KN - z_KN.max(0, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(0, keepdims=True)).T  # (N, K)


def _macro_auc(y: np.ndarray, proba: np.ndarray, K: int) -> tuple[float, dict[int, float]]:
    per = {}
    for k in range(K):
        yk = (y == k).astype(int)
        per[k] = float(roc_auc_score(yk, proba[:, k])) if 0 < yk.sum() < len(yk) else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per


def _category(X, y, groups, folds, config: ProbeConfig, hook: str, layers: list[int]) -> list[CategoryLayerResult]:
    classes, yk = np.unique(np.asarray(y), return_inverse=True)
    yk = yk.reshape(-1)
    K = len(classes)
    if K < 2:
        raise ProbeError(f"category labels contain one class only ({classes.tolist()})")
    y_T = _label_sets(yk, groups, config)
    cv = cross_val_scores(X, y_T.astype(np.float64), folds, config, "multinomial", n_classes=K)
    names = tuple(str(c) for c in classes)
    out = []
    for li, layer in enumerate(layers):
        proba = _softmax(cv.oof[0, li])
        pred = proba.argmax(1)
        auc, per = _macro_auc(yk, proba, K)
        macro = float(f1_score(yk, pred, average="macro", labels=np.arange(K), zero_division=0.0))
        ci = macro_f1_ci(yk, pred, K, groups, config.n_bootstrap, config.ci_level, config.seed)
        if config.shuffled_control:
            ps = _softmax(cv.oof[1, li])
            sh_f1 = float(f1_score(y_T[1], ps.argmax(1), average="macro", labels=np.arange(K), zero_division=0.0))
            sh_auc = _macro_auc(y_T[1], ps, K)[0]
        else:
            sh_f1 = sh_auc = float("nan")
        out.append(CategoryLayerResult(
            hook=hook, layer=layer, classes=names, accuracy=float(accuracy_score(yk, pred)), macro_f1=macro, auc=auc,
            per_class_auc={names[k]: v for k, v in per.items()}, macro_f1_ci=ci, shuffled_macro_f1=sh_f1,
            shuffled_auc=sh_auc, C_per_fold=tuple(float(c) for c in cv.chosen_C[0, li]), oof_proba=proba,
        ))
    return out


def _severity(X, y, groups, folds, config: ProbeConfig, hook: str, layers: list[int]) -> list[SeverityLayerResult]:
    if np.ptp(y) == 0:
        raise ProbeError(f"severity is constant ({y[0]}); nothing to predict")
    y_T = _label_sets(y, groups, config)
    cv = cross_val_scores(X, y_T, folds, config, "squared")
    out = []
    for li, layer in enumerate(layers):
        pred = cv.oof[0, li, 0]
        sh = spearman(y_T[1], cv.oof[1, li, 0]) if config.shuffled_control else float("nan")
        out.append(SeverityLayerResult(
            hook=hook, layer=layer, spearman=spearman(y, pred),
            spearman_ci=spearman_ci(y, pred, groups, config.n_bootstrap, config.ci_level, config.seed),
            shuffled_spearman=sh, alpha_per_fold=tuple(1.0 / float(c) for c in cv.chosen_C[0, li]), oof_pred=pred,
        ))
    return out
