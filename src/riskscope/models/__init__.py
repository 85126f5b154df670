"""Models: loading, named bundled weights, per-family layouts."""

from ._load import LoadedModel, load_model
from ._sources import NAMED_MODELS, riskscope_home
from .adapters import ArchSpec, Layout, resolve_layout

__all__ = ["ArchSpec", "Layout", "LoadedModel", "NAMED_MODELS", "load_model", "resolve_layout", "riskscope_home"]
