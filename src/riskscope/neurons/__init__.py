"""Neurons: ranking by probe weight and effect size, direct logit attribution, clamping with controls."""

from ._clamp import ClampResult, EffectsConfig, NeuronEffects, check_store_model, neuron_effects, validation_rows
from ._rank import (
    LogitAttribution, NeuronRanking, NeuronStat, check_neurons, direct_logit_attribution, rank_neurons,
)

__all__ = [
    "ClampResult", "EffectsConfig", "LogitAttribution", "NeuronEffects", "NeuronRanking", "NeuronStat",
    "check_neurons", "check_store_model", "direct_logit_attribution", "neuron_effects",
    "rank_neurons", "validation_rows",
]
