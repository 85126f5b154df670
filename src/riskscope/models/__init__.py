"""Models: loading, named bundled weights, per-family layouts."""

from ._load import LoadedModel, check_device, check_dtype, load_model, quiet_transformers
from ._placement import check_max_memory, check_placement, execution_device, read_device_map
from ._sources import NAMED_MODELS, named_gguf, riskscope_home
from .adapters import ArchSpec, Layout, RotaryBlock, RotaryParts, resolve_layout, rotate_half

__all__ = ["ArchSpec", "Layout", "LoadedModel", "NAMED_MODELS", "RotaryBlock", "RotaryParts", "check_device",
           "check_dtype", "check_max_memory", "check_placement", "execution_device", "load_model", "named_gguf",
           "quiet_transformers", "read_device_map", "resolve_layout", "riskscope_home", "rotate_half"]
