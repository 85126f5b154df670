"""riskscope: look inside open-weight language models for tacit-risk signals.

Layers (imports point down only; ``lint-imports`` checks the contract in pyproject.toml)::

    cli  >  service  >  pipeline  >  report  >  melbo  >  neurons · steering · scorers  >  effects
    >  probes  >  data  >  hooks  >  models  >  _io · errors

The names below are the public Python API. They are imported lazily, so
``import riskscope`` (and ``riskscope --help``) does not import torch.

>>> import riskscope as rs
>>> rs.HookPoint("resid_post", 3)
HookPoint(hook='resid_post', layer=3)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

_EXPORTS = {
    "RiskscopeError": "errors",
    "Dataset": "data", "list_builtins": "data", "load_dataset": "data",
    "CacheConfig": "data", "Store": "data", "cache_activations": "data",
    "HOOKS": "hooks", "Ablate": "hooks", "Add": "hooks", "Clamp": "hooks", "HookPoint": "hooks", "Scale": "hooks",
    "Set": "hooks", "capture": "hooks", "intervene": "hooks",
    "LoadedModel": "models", "load_model": "models",
    "Probe": "probes",
    "RunConfig": "pipeline", "RunResult": "pipeline", "run": "pipeline",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .data import CacheConfig, Dataset, Store, cache_activations, list_builtins, load_dataset
    from .errors import RiskscopeError
    from .hooks import HOOKS, Ablate, Add, Clamp, HookPoint, Scale, Set, capture, intervene
    from .models import LoadedModel, load_model
    from .pipeline import RunConfig, RunResult, run
    from .probes import Probe


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'riskscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *sorted(_EXPORTS)]
