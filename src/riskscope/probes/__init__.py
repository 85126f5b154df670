"""Linear probes on hidden activations: batched, nested grouped cross-validation.

Pure array code: no model and no store. The pieces:

* :class:`LogisticProbe` - one scikit-learn-compatible probe (save/load with safetensors);
* :func:`fit_many` - many regularised models (layers x folds x C) in one batched torch solve;
* :func:`evaluate_layers` - per-(hook, layer) AUC with pair-bootstrap CI, F1, pair
  accuracy and a shuffled-label control, C chosen by inner grouped CV;
* :func:`lexical_baseline` - TF-IDF + logistic regression on the same folds.
"""

from ._config import DEFAULT_CS, ProbeConfig, ProbeError
from ._crossval import CVScores, cross_val_scores
from ._evaluate import evaluate_layers
from ._folds import NestedFolds, group_folds, nested_folds, shuffle_labels
from ._lexical import lexical_baseline
from ._logistic import LogisticProbe
from ._bundle import Probe
from ._metrics import (BinarySummary, auc_ci, auc_rows, auc_weighted, bootstrap_counts, macro_f1_weighted, pair_accuracy,
                       pair_count, spearman, summarize_binary)
from ._results import CategoryLayerResult, LayerResult, LexicalResult, ProbeEvaluation, SeverityLayerResult
from ._solver import BatchFit, fit_many

__all__ = [
    "DEFAULT_CS", "BatchFit", "CVScores", "CategoryLayerResult", "LayerResult", "LexicalResult", "LogisticProbe",
    "NestedFolds", "Probe", "ProbeConfig", "ProbeError", "ProbeEvaluation", "SeverityLayerResult", "cross_val_scores",
    "evaluate_layers", "fit_many", "group_folds", "lexical_baseline", "nested_folds", "pair_accuracy",
    "shuffle_labels", "auc_ci", "auc_rows", "auc_weighted", "bootstrap_counts", "macro_f1_weighted",
    "BinarySummary", "pair_count", "spearman", "summarize_binary",
]
