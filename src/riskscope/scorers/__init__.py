"""Scorers: texts -> scores. The ask-the-model baseline and per-token probe traces."""

from ._ask import (
    DEFAULT_TEMPLATES, AskEvaluation, AskResult, AskTemplate, ask_baseline, ask_scores, load_templates,
)
from ._trace import TokenTrace, TokenTraces, pick_trace_texts, token_traces

__all__ = [
    "DEFAULT_TEMPLATES", "AskEvaluation", "AskResult", "AskTemplate", "TokenTrace", "TokenTraces", "ask_baseline",
    "ask_scores", "load_templates", "pick_trace_texts", "token_traces",
]
