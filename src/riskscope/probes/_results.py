"""Named results of a probing run, each with a JSON-ready ``to_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._io import json_float
from ._config import ProbeConfig




def _jf(x) -> float | None:
    return json_float(x, None)  # metrics.json keeps full precision


def _fl(a: np.ndarray | tuple | list) -> list[float | None]:
    return [_jf(v) for v in np.asarray(a, dtype=np.float64).ravel()]


@dataclass(frozen=True, eq=False)
class LayerResult:
    """Binary risky-vs-benign probe on one (hook, layer), from out-of-fold scores."""

    hook: str
    """Hook point name, e.g. ``resid_post``."""
    layer: int
    """Layer index."""
    auc: float
    """ROC-AUC of the out-of-fold scores over all rows."""
    auc_ci: tuple[float, float]
    """Percentile bootstrap interval of the AUC, resampling pairs."""
    f1: float
    """F1 of the risky class at probability 0.5."""
    accuracy: float
    """Accuracy at probability 0.5."""
    pair_accuracy: float
    """Share of pairs whose risky member scores higher (ties 0.5)."""
    shuffled_auc: float
    """AUC of the same pipeline on shuffled labels (chance is 0.5)."""
    shuffled_pair_accuracy: float
    """Pair accuracy of the shuffled-label control."""
    fold_auc: tuple[float, ...]
    """AUC within each outer test fold (immune to score-scale differences between folds)."""
    C_per_fold: tuple[float, ...]
    """``C`` chosen by inner CV in each outer fold."""
    oof_scores: np.ndarray = field(repr=False)
    """(N,) out-of-fold decision values (logits)."""
    fpr: np.ndarray = field(repr=False)
    """ROC curve false-positive rates (sklearn ``roc_curve``)."""
    tpr: np.ndarray = field(repr=False)
    """ROC curve true-positive rates."""
    thresholds: np.ndarray = field(repr=False)
    """ROC curve thresholds on the logit scale (the first is +inf)."""
    readout: str = "last"
    """Token readout of the features (``last``, ``mean``, ``max``, ``span``)."""
    inner_oof: np.ndarray | None = field(default=None, repr=False)
    """(F, N) inner-validation scores of each outer fold's training rows (NaN elsewhere), for choosing
    recipes inside the outer folds."""

    @property
    def score(self) -> float:
        """The metric used to rank layers (AUC)."""
        return self.auc

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``arrays`` adds the ROC curve and out-of-fold scores."""
        d: dict[str, Any] = {
            "hook": self.hook, "layer": int(self.layer), "readout": self.readout, "auc": _jf(self.auc),
            "auc_ci": _fl(self.auc_ci),
            "f1": _jf(self.f1), "accuracy": _jf(self.accuracy), "pair_accuracy": _jf(self.pair_accuracy),
            "shuffled_auc": _jf(self.shuffled_auc), "shuffled_pair_accuracy": _jf(self.shuffled_pair_accuracy),
            "fold_auc": _fl(self.fold_auc), "C_per_fold": _fl(self.C_per_fold),
        }
        if arrays:
            d["roc"] = {"fpr": _fl(self.fpr), "tpr": _fl(self.tpr), "thresholds": _fl(self.thresholds)}
            d["oof_scores"] = _fl(self.oof_scores)
        return d


@dataclass(frozen=True, eq=False)
class CategoryLayerResult:
    """Multinomial (softmax) category probe on one (hook, layer)."""

    hook: str
    """Hook point name."""
    layer: int
    """Layer index."""
    classes: tuple[str, ...]
    """Class names in column order."""
    accuracy: float
    """Out-of-fold accuracy."""
    macro_f1: float
    """Out-of-fold macro-averaged F1."""
    auc: float
    """Macro one-vs-rest ROC-AUC of the out-of-fold probabilities."""
    per_class_auc: dict[str, float]
    """One-vs-rest ROC-AUC of each class."""
    macro_f1_ci: tuple[float, float]
    """Bootstrap interval of macro-F1, resampling groups."""
    shuffled_macro_f1: float
    """Macro-F1 of the shuffled-label control (chance about 1 / classes)."""
    shuffled_auc: float
    """Macro AUC of the shuffled-label control (chance 0.5)."""
    C_per_fold: tuple[float, ...]
    """``C`` chosen by inner CV in each outer fold."""
    oof_proba: np.ndarray = field(repr=False)
    """(N, classes) out-of-fold probabilities."""

    @property
    def score(self) -> float:
        """The metric used to rank layers (macro AUC)."""
        return self.auc

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``arrays`` adds the out-of-fold probabilities."""
        d: dict[str, Any] = {
            "hook": self.hook, "layer": int(self.layer), "classes": list(self.classes),
            "accuracy": _jf(self.accuracy), "macro_f1": _jf(self.macro_f1), "macro_f1_ci": _fl(self.macro_f1_ci),
            "auc": _jf(self.auc), "per_class_auc": {k: _jf(v) for k, v in self.per_class_auc.items()},
            "shuffled_macro_f1": _jf(self.shuffled_macro_f1), "shuffled_auc": _jf(self.shuffled_auc),
            "C_per_fold": _fl(self.C_per_fold),
        }
        if arrays:
            d["oof_proba"] = np.where(np.isfinite(self.oof_proba), self.oof_proba, 0.0).tolist()
        return d


@dataclass(frozen=True, eq=False)
class SeverityLayerResult:
    """Ridge probe of severity (risky rows) on one (hook, layer)."""

    hook: str
    """Hook point name."""
    layer: int
    """Layer index."""
    spearman: float
    """Spearman rho between out-of-fold predictions and severity."""
    spearman_ci: tuple[float, float]
    """Bootstrap interval of rho, resampling groups."""
    shuffled_spearman: float
    """Rho of the shuffled-label control (chance 0)."""
    alpha_per_fold: tuple[float, ...]
    """Ridge ``alpha = 1 / C`` chosen by inner CV in each outer fold."""
    oof_pred: np.ndarray = field(repr=False)
    """(N_risky,) out-of-fold predicted severity."""

    @property
    def score(self) -> float:
        """The metric used to rank layers (Spearman rho)."""
        return self.spearman

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``arrays`` adds the out-of-fold predictions."""
        d: dict[str, Any] = {
            "hook": self.hook, "layer": int(self.layer), "spearman": _jf(self.spearman),
            "spearman_ci": _fl(self.spearman_ci), "shuffled_spearman": _jf(self.shuffled_spearman),
            "alpha_per_fold": _fl(self.alpha_per_fold),
        }
        if arrays:
            d["oof_pred"] = _fl(self.oof_pred)
        return d


@dataclass(frozen=True, eq=False)
class LexicalResult:
    """TF-IDF word 1-2 gram + logistic regression baseline on the same folds."""

    auc: float
    """Out-of-fold ROC-AUC."""
    pair_accuracy: float
    """Share of pairs whose risky text scores higher (ties 0.5)."""
    accuracy: float
    """Out-of-fold accuracy at probability 0.5."""
    C_per_fold: tuple[float, ...]
    """``C`` chosen by inner grouped CV in each outer fold."""
    oof_scores: np.ndarray = field(repr=False)
    """(N,) out-of-fold decision values."""
    inner_oof: np.ndarray | None = field(default=None, repr=False)
    """(F, N) inner-validation scores at the chosen ``C`` of each outer fold's training rows (NaN elsewhere)."""

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``arrays`` adds the out-of-fold scores."""
        d: dict[str, Any] = {
            "auc": _jf(self.auc), "pair_accuracy": _jf(self.pair_accuracy), "accuracy": _jf(self.accuracy),
            "C_per_fold": _fl(self.C_per_fold),
        }
        if arrays:
            d["oof_scores"] = _fl(self.oof_scores)
        return d


AnyLayerResult = LayerResult | CategoryLayerResult | SeverityLayerResult


@dataclass(frozen=True, eq=False)
class ProbeEvaluation:
    """Every (hook, layer) result of one :func:`evaluate_layers` call.

    ``to_dict()`` gives the ``metrics.json`` body; the caller adds model and
    dataset fields.
    """

    target: str
    """``binary``, ``category`` or ``severity``."""
    results: tuple[AnyLayerResult, ...]
    """One result per (hook, layer), in input order."""
    config: ProbeConfig
    """The configuration used."""
    folds: np.ndarray = field(repr=False)
    """(N,) outer fold of each row, for reuse by :func:`lexical_baseline`."""
    lexical: LexicalResult | None = None
    """The lexical baseline on the same folds, when texts were given."""

    @property
    def best(self) -> AnyLayerResult:
        """The result with the highest score (AUC, macro AUC or rho); first wins ties."""
        scores = [r.score if np.isfinite(r.score) else -np.inf for r in self.results]
        return self.results[int(np.argmax(scores))]

    def result(self, hook: str, layer: int) -> AnyLayerResult:
        """The result of one (hook, layer)."""
        for r in self.results:
            if r.hook == hook and r.layer == layer:
                return r
        raise KeyError(f"no result for hook {hook!r} layer {layer}")

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """``{"target", "results": [...], "lexical": {...} | None, "best": {"hook", "layer"}, "config"}``."""
        best = self.best
        return {
            "target": self.target,
            "results": [r.to_dict(arrays) for r in self.results],
            "lexical": None if self.lexical is None else self.lexical.to_dict(arrays),
            "best": {"hook": best.hook, "layer": int(best.layer)},
            "config": self.config.to_dict(),
        }
