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


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _ci(d: dict, key: str) -> tuple[float, float]:
    v = d.get(key)
    return (_num(v[0]), _num(v[1])) if isinstance(v, list) and len(v) == 2 else (math.nan, math.nan)


def _delta(n: dict) -> str:
    lo, hi = _ci(n, "delta_ci")
    p = _num(n.get("p_value"))
    return (f"ΔAUC {fmt(_num(n.get('delta_auc')), 3, signed=True)} [{fmt(lo, 3, signed=True)}, "
            f"{fmt(hi, 3, signed=True)}]" + (f", p = {fmt(p, 3)}" if math.isfinite(p) else ""))


def _beats(n: dict | None) -> bool:
    return isinstance(n, dict) and math.isfinite(_ci(n, "delta_ci")[0]) and _ci(n, "delta_ci")[0] > 0


def recipe_verdict(run: Run, rec: dict) -> Verdict:
    """The verdict of a run whose recipe was chosen by nested CV (metrics.json ``recipe``).

    "Beats wording" is claimed only when the nested ΔAUC interval (probe - lexical, paired bootstrap on the
    same outer folds) lies above 0; whether the model senses risk *beyond* wording is judged on the best
    activation-only recipe, also when a stack with the lexical model wins."""
    chosen, act = rec.get("chosen") or {}, rec.get("best_activations") or {}
    nested, nested_act = rec.get("nested"), rec.get("nested_activations") or rec.get("nested")
    auc, (lo, hi) = _num(chosen.get("auc")), _ci(chosen, "auc_ci")
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    name = chosen.get("name", "?")
    stacked = bool(chosen.get("uses_lexical"))
    if not isinstance(nested, dict):
        return Verdict(f"Recipe {name}: CV AUC {fmt(auc)}{ci}; no lexical baseline, so no comparison with wording.",
                       [f"The recipe separates risky from benign texts {_strength(auc)}."], "caution")
    lex = _num(nested.get("lexical_auc"))
    beyond = _beats(nested_act)
    if stacked:
        claim = ("the activations add to the wording" if _beats(nested) else "the stack does not clearly beat wording")
    else:
        claim = "beats wording" if beyond else "does not clearly beat wording"
    headline = f"Recipe {name}: CV AUC {fmt(auc)}{ci} vs lexical {fmt(lex)}; {claim} (nested {_delta(nested)})."
    says = [f"The recipe was chosen by nested cross-validation among {len(rec.get('candidates') or [])} "
            f"candidates (readouts x hooks x layers, layer sets" + (", stacks with the lexical model)" if
                                                                    any(c.get("uses_lexical") for c in
                                                                        rec.get("candidates") or []) else ")") +
            f"; the whole selection, scored on outer folds it never saw, reaches AUC "
            f"{fmt(_num(nested.get('auc')))} (its margin over the lexical model: {_delta(nested)})."]
    if stacked:
        says.append(f"It stacks the lexical model, so it does not answer whether the model senses risk beyond "
                    f"wording; the best activation-only recipe, {act.get('name', '?')} (CV AUC "
                    f"{fmt(_num(act.get('auc')))}), does: nested {_delta(nested_act)}.")
    if beyond:
        says.append("That interval lies above 0: the activations carry a risk signal the surface words alone do not.")
        level = "good"
    else:
        says.append("That interval reaches 0 or below, so a gain over surface wording is not established.")
        level = "caution"
    b = run.best
    if b is not None and math.isfinite(b.shuffled_auc) and abs(b.shuffled_auc - 0.5) > 0.1:
        says.append(f"Warning: the shuffled-label control scored {fmt(b.shuffled_auc)}, far from chance (0.50); "
                    "labels may leak into the features or folds, so treat every number here with suspicion.")
        level = "warning"
    if auc < 0.6 and level == "good":
        level = "caution"
    return Verdict(headline, says, level)


def verdict(run: Run) -> Verdict:
    """The verdict of a run: green when the probe beats the lexical baseline over its whole interval and the
    shuffled-label control is at chance, amber when the gain is not established or AUC < 0.6, red when the
    control is more than 0.1 from chance. A run with a recipe (metrics.json ``recipe``) is judged on the
    nested ΔAUC test (:func:`recipe_verdict`)."""
    rec = run.metrics.get("recipe") if isinstance(run.metrics, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("chosen"), dict):
        return recipe_verdict(run, rec)
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


__all__ = ["Verdict", "recipe_verdict", "verdict"]
