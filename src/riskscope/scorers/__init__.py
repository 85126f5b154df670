"""Scorers: texts -> scores. The ask-the-model baseline, per-token probe traces, the scorer protocol with
the probe and perplexity-filter scorers the service runs."""

from ._ask import (
    DEFAULT_TEMPLATES, AskEvaluation, AskResult, AskTemplate, ask_baseline, ask_scores, ask_templates, load_templates,
)
from ._perplexity import (
    LengthBin, PerplexityCalibration, PerplexityConfig, PerplexityFilter, TextPerplexity, calibrate_perplexity,
    text_perplexities, token_nll, window_means,
)
from ._probe_scorer import ProbeScorer, bundle_digest, bundle_folder
from ._protocol import ScoreBatch, Scorer
from ._trace import TokenTrace, TokenTraces, pick_trace_texts, token_traces

__all__ = [
    "DEFAULT_TEMPLATES", "AskEvaluation", "AskResult", "AskTemplate", "LengthBin", "PerplexityCalibration",
    "PerplexityConfig", "PerplexityFilter", "ProbeScorer", "ScoreBatch", "Scorer", "TextPerplexity", "TokenTrace",
    "TokenTraces", "ask_baseline", "ask_scores", "ask_templates", "bundle_digest", "bundle_folder", "calibrate_perplexity",
    "load_templates", "pick_trace_texts", "text_perplexities", "token_nll", "token_traces", "window_means",
]
