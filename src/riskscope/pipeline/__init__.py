"""The main job: cache -> probes -> live-model analyses -> report, on run folders.

``run(RunConfig(...)) -> RunResult`` is the whole job in one call; ``probe_run`` (``riskscope probe``) and
``analyze_run`` (``riskscope analyze``) work on run folders already on disk; ``evaluate`` (``riskscope evaluate``)
scores an external labelled set with a run's bundle, beside the lexical transfer baseline.

The names are imported lazily, so the CLI can read :class:`RunConfig`'s defaults and the option parsers
(:func:`parse_layers` ...) without importing torch.

>>> from riskscope.pipeline import parse_skip
>>> parse_skip("ask,caution")
('neurons', 'effects', 'traces', 'vectors')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ANALYSES": "_parse", "parse_hooks": "_parse", "parse_layers": "_parse", "parse_module_paths": "_parse",
    "parse_positions": "_parse", "parse_skip": "_parse", "READOUTS": "_parse", "DEFAULT_READOUTS": "_parse", "parse_readouts": "_parse",
    "ProbeRunConfig": "_config", "RunConfig": "_config", "check_dataset": "_config",
    "ProbeOutputs": "_probe", "fit_probes": "_probe", "probe_run": "_probe", "write_probe_outputs": "_probe",
    "targets": "_targets", "store_path": "_folder",
    "RUN_FILES": "_folder", "analysis_switches": "_folder", "analyze_run": "_folder", "check_run_folder": "_folder",
    "open_run_store": "_folder", "run_folds": "_folder", "run_model_settings": "_folder",
    "AnalysisConfig": "_analyses", "AnalysisOutputs": "_analyses", "run_analyses": "_analyses",
    "EVAL_FILES": "_evaluate", "EVAL_FORMAT": "_evaluate", "EvaluateConfig": "_evaluate", "Evaluation": "_evaluate",
    "Prepared": "_evaluate", "evaluate": "_evaluate", "load_evaluation_model": "_evaluate",
    "prepare_evaluation": "_evaluate", "write_evaluation": "_evaluate",
    "binary_metrics": "_transfer", "delta_auc": "_transfer", "fit_lexical": "_transfer", "reliability": "_transfer",
    "ModelsResult": "_models", "model_configs": "_models", "model_folder": "_models", "run_models": "_models",
    "RUN_FORMAT": "_run", "RunResult": "_run", "cache_config": "_run", "hook_points": "_run", "run": "_run",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._analyses import AnalysisConfig, AnalysisOutputs, run_analyses
    from ._config import ProbeRunConfig, RunConfig, check_dataset
    from ._evaluate import (EVAL_FILES, EVAL_FORMAT, EvaluateConfig, Evaluation, Prepared, evaluate,
                            load_evaluation_model, prepare_evaluation, write_evaluation)
    from ._transfer import binary_metrics, delta_auc, fit_lexical, reliability
    from ._folder import (
        RUN_FILES, analysis_switches, analyze_run, check_run_folder, open_run_store, run_folds, run_model_settings,
        store_path,
    )
    from ._parse import (ANALYSES, DEFAULT_READOUTS, READOUTS, parse_hooks, parse_layers, parse_module_paths, parse_positions,
                         parse_readouts, parse_skip)
    from ._probe import ProbeOutputs, fit_probes, probe_run, write_probe_outputs
    from ._models import ModelsResult, model_configs, model_folder, run_models
    from ._run import RUN_FORMAT, RunResult, cache_config, hook_points, run
    from ._targets import targets


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'riskscope.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
