"""riskscope: look inside open-weight language models for tacit-risk signals.

Layers (arrows point down): cli/report -> analyses (probes, ...) -> store, datasets
-> hooks -> models. The names below are the public Python API.
"""

__version__ = "0.1.0"

from .datasets import Dataset, list_builtins, load_dataset  # noqa: E402
from .errors import RiskscopeError  # noqa: E402
from .hooks import HOOKS, Ablate, Add, Clamp, HookPoint, Scale, Set, capture, intervene  # noqa: E402
from .models import LoadedModel, load_model  # noqa: E402
from .store import CacheConfig, Store, cache_activations  # noqa: E402

__all__ = [
    "HOOKS", "Ablate", "Add", "CacheConfig", "Clamp", "Dataset", "HookPoint", "LoadedModel", "RiskscopeError",
    "Scale", "Set", "Store", "__version__", "cache_activations", "capture", "intervene", "list_builtins",
    "load_dataset", "load_model",
]
