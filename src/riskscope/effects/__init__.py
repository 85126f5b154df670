"""Next-token effects of interventions, measured in batches with block replay (see :func:`run_effects`)."""

from ._measure import (
    NEUTRAL_WORDS, RISK_WORDS, InterventionEffect, TokenShift, run_effects, token_text, word_token_ids,
)

__all__ = ["NEUTRAL_WORDS", "RISK_WORDS", "InterventionEffect", "TokenShift", "run_effects", "token_text",
           "word_token_ids"]
