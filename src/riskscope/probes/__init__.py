"""Linear probes on hidden activations: batched, nested grouped cross-validation.

Array code first; :class:`Probe` reads a model's activations and :func:`probe_for_run` a store. The pieces:

* :class:`LogisticProbe` - one scikit-learn-compatible probe (save/load with safetensors);
* :func:`fit_many` - many regularised models (layers x folds x C) in one batched torch solve;
* :func:`evaluate_layers` - per-(hook, layer) AUC with pair-bootstrap CI, F1, pair
  accuracy and a shuffled-label control, C chosen by inner grouped CV;
* :func:`lexical_baseline` - TF-IDF + logistic regression on the same folds;
* :class:`Probe` - a fitted linear readout at one hook point (any estimator with
  ``decision_function``/``coef_``, e.g. :class:`LinearReadout`), saved as a bundle, scoring texts;
* :func:`select_recipe` - the recipe (readout x hook x layer, layer sets, a stack with the lexical
  model) chosen by nested grouped CV, with ΔAUC against the lexical model (:class:`RecipeSelection`);
* :class:`LexicalModel` - the lexical model fitted once, saveable (a recipe may stack it);
* :func:`probe_for_run` - the run's probe: its bundle, else one fitted on its store (:func:`fit_probe`).
"""

from ._config import DEFAULT_CS, ProbeConfig, ProbeError
from ._crossval import CVScores, cross_val_scores
from ._evaluate import evaluate_layers
from ._folds import NestedFolds, group_folds, nested_folds, shuffle_labels
from ._lexical import LEXICAL_CS, lexical_baseline
from ._lexical_model import LexicalModel
from ._recipes import Candidate, NestedResult, RecipeConfig, RecipeSelection, select_recipe
from ._logistic import LogisticProbe
from ._for_run import fit_probe, probe_for_run
from ._metrics import (BinarySummary, auc_ci, auc_rows, auc_weighted, bootstrap_counts, macro_f1_weighted, pair_accuracy,
                       pair_count, spearman, summarize_binary)
from ._probe import FORMAT as PROBE_FORMAT, FORMAT_RECIPE as PROBE_FORMAT_RECIPE, Probe
from ._readout import LinearReadout
from ._results import CategoryLayerResult, LayerResult, LexicalResult, ProbeEvaluation, SeverityLayerResult
from ._solver import BatchFit, fit_many

__all__ = [
    "DEFAULT_CS", "LEXICAL_CS", "PROBE_FORMAT", "PROBE_FORMAT_RECIPE", "BatchFit", "BinarySummary", "CVScores",
    "Candidate", "CategoryLayerResult", "LayerResult", "LexicalModel", "NestedResult", "RecipeConfig",
    "RecipeSelection", "select_recipe",
    "LexicalResult", "LinearReadout", "LogisticProbe", "NestedFolds", "Probe", "ProbeConfig", "ProbeError",
    "ProbeEvaluation", "SeverityLayerResult", "auc_ci", "auc_rows", "auc_weighted", "bootstrap_counts",
    "cross_val_scores", "evaluate_layers", "fit_many", "fit_probe", "group_folds", "lexical_baseline",
    "macro_f1_weighted", "nested_folds", "pair_accuracy", "pair_count", "probe_for_run", "shuffle_labels", "spearman",
    "summarize_binary",
]
