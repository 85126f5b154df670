"""Next-token effects of interventions, measured in batches with block replay (see :func:`run_effects`)."""

from ._measure import (
    NEUTRAL_WORDS, RISK_WORDS, InterventionEffect, LinearReadout, PointProbe, TokenShift, fit_point_probe,
    run_effects, token_text, word_token_ids,
)

__all__ = [
    "NEUTRAL_WORDS", "RISK_WORDS", "InterventionEffect", "LinearReadout", "PointProbe", "TokenShift",
    "fit_point_probe", "run_effects", "token_text", "word_token_ids",
]
