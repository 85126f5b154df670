"""Steering: the vector value type, llama.cpp control-vector files, generation and the caution demo."""

from ._caution import (
    NEUTRAL_PROMPTS, CautionDemo, SteerSample, caution_demo, diff_of_means_vector, generate, generate_many,
    probe_vector, random_like, risk_mentions, save_risk_vector, steer_compare,
)
from ._gguf import ARCH, export_control_vector, import_control_vector, read_control_vector_info
from ._vector import SteeringVector

__all__ = [
    "ARCH", "NEUTRAL_PROMPTS", "CautionDemo", "SteerSample", "SteeringVector", "caution_demo",
    "diff_of_means_vector", "export_control_vector", "generate", "generate_many", "import_control_vector",
    "probe_vector", "random_like", "read_control_vector_info", "risk_mentions", "save_risk_vector",
    "steer_compare",
]
