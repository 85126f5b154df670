"""The verdict box: one plain-language paragraph computed from metrics.json's numbers (no new metrics)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._render import fmt, pct
from .._run import Run


@dataclass(frozen=True)
class Verdict:
    """The headline, the sentences under it and the box colour."""

    headline: str
    """One line: best layer, its AUC and interval against the controls."""
    sentences: list[str]
    """What the numbers mean, in order."""
    level: str
    """``good``, ``caution`` or ``warning``: the colour of the box."""


def _strength(auc: float) -> str:
    for cut, word in ((0.9, "very well"), (0.8, "well"), (0.7, "moderately well"), (0.6, "weakly")):
        if auc >= cut:
            return word
    return "barely better than chance" if auc > 0.5 else "no better than chance"


def verdict(run: Run) -> Verdict:
    """The verdict of a run: green when the probe beats the lexical baseline over its whole interval and the
    shuffled-label control is at chance, amber when the gain is not established or AUC < 0.6, red when the
    control is more than 0.1 from chance."""
    b, lex = run.best, run.lexical
    if b is None or math.isnan(b.auc):
        return Verdict("No probe result has an AUC, so there is nothing to judge.", [], "warning")
    lo, hi = b.auc_ci
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    parts = []
    if lex is not None and math.isfinite(lex.auc):
        parts.append(f"lexical baseline {fmt(lex.auc)}")
    if math.isfinite(b.shuffled_auc):
        parts.append(f"shuffled-label control {fmt(b.shuffled_auc)}")
    headline = f"Best layer {b.name}: AUC {fmt(b.auc)}{ci}" + (f" vs {' and '.join(parts)}." if parts else ".")
    level = "good"
    says = [f"The probe separates risky from benign texts {_strength(b.auc)}."]
    if lex is not None and math.isfinite(lex.auc):
        floor = lo if math.isfinite(lo) else b.auc
        if floor > lex.auc:
            says.append("Its whole 95% interval lies above the lexical baseline, so the activations carry "
                        "a risk signal that the surface words alone do not.")
        elif b.auc > lex.auc:
            says.append("It beats the lexical baseline, but its 95% interval overlaps the baseline, "
                        "so the gain over surface wording is not established.")
            level = "caution"
        else:
            says.append("It does not beat the lexical baseline: the signal may be no more than surface wording.")
            level = "caution"
    if math.isfinite(b.pair_accuracy):
        says.append(f"In {pct(b.pair_accuracy)} of matched pairs it scores the risky text above its benign twin.")
    if math.isfinite(b.shuffled_auc):
        if abs(b.shuffled_auc - 0.5) <= 0.1:
            says.append("The shuffled-label control is near chance, as it should be.")
        else:
            says.append(f"Warning: the shuffled-label control scored {fmt(b.shuffled_auc)}, far from chance (0.50); "
                        "labels may leak into the features or folds, so treat every number here with suspicion.")
            level = "warning"
    if b.auc < 0.6 and level == "good":
        level = "caution"
    return Verdict(headline, says, level)


__all__ = ["Verdict", "verdict"]
