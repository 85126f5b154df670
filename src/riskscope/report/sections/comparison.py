"""The comparison page of one run per model (``riskscope run --model A --model B``): best recipe, CV AUC and
the nested ΔAUC against the lexical model per model, all read from each run's ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .._render import Section, fmt, fmt_ci, render_template, section, write_html
from ._verdict import _beats


def _row(name: str, folder: str, metrics: dict) -> dict:
    rec = metrics.get("recipe") if isinstance(metrics.get("recipe"), dict) else {}
    chosen, act = rec.get("chosen") or {}, rec.get("best_activations") or {}
    nested = rec.get("nested") if isinstance(rec.get("nested"), dict) else {}
    nested_act = rec.get("nested_activations") if isinstance(rec.get("nested_activations"), dict) else nested
    return {"model": name, "run": folder, "recipe": chosen.get("name"), "cv_auc": chosen.get("auc"),
            "cv_auc_ci": chosen.get("auc_ci"), "nested_auc": nested.get("auc"), "lexical_auc": nested.get("lexical_auc"),
            "delta_auc": nested.get("delta_auc"), "delta_ci": nested.get("delta_ci"), "p_value": nested.get("p_value"),
            "best_activations": act.get("name"), "activations_auc": act.get("auc"),
            "activations_delta_auc": nested_act.get("delta_auc"), "activations_delta_ci": nested_act.get("delta_ci"),
            "beyond_wording": _beats(nested_act)}


def comparison_rows(runs: list[tuple[str, str | os.PathLike]]) -> list[dict]:
    """One row per ``(model name, run folder)`` from the folder's ``metrics.json`` (comparison.json's ``models``)."""
    out = []
    for name, folder in runs:
        path = Path(folder) / "metrics.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            from ...errors import RiskscopeError

            raise RiskscopeError(f"{path}: cannot read it ({e})") from None
        out.append(_row(name, Path(folder).name, metrics if isinstance(metrics, dict) else {}))
    return out


def _table(rows: list[dict]) -> Section:
    head = ["Model", "Recipe (best CV AUC)", "CV AUC", "95% CI", "Nested AUC", "Lexical AUC", "ΔAUC", "95% CI", "p",
            "Best activation-only recipe", "Its ΔAUC", "95% CI", "Beyond wording"]
    body = [[r["model"], r["recipe"] or "n/a", fmt(r["cv_auc"], 3), fmt_ci(r["cv_auc_ci"], 3), fmt(r["nested_auc"], 3),
             fmt(r["lexical_auc"], 3), fmt(r["delta_auc"], 3, signed=True), fmt_ci(r["delta_ci"], 3),
             fmt(r["p_value"], 3), r["best_activations"] or "n/a", fmt(r["activations_delta_auc"], 3, signed=True),
             fmt_ci(r["activations_delta_ci"], 3), "yes" if r["beyond_wording"] else "no"] for r in rows]
    finite = [r for r in rows if isinstance(r["activations_delta_auc"], (int, float))
              and math.isfinite(r["activations_delta_auc"])]
    lead = max(finite, key=lambda r: r["activations_delta_auc"])["model"] if finite else None
    return section("models", "Models", "One run per model", "comparison", head=head, rows=body,
                   links=[(r["model"], f"{r['run']}/report.html") for r in rows], lead=lead)


def render_comparison(rows: list[dict]) -> str:
    """The comparison page as an HTML string."""
    s = _table(rows)
    return str(render_template("comparison.html.j2", title="riskscope: models compared", nav=[(s.anchor, s.nav)],
                               sections=[s], n=len(rows)))


def write_comparison(out: str | os.PathLike, runs: list[tuple[str, str | os.PathLike]]) -> tuple[Path, Path]:
    """Write ``OUT/comparison.json`` and ``OUT/comparison.html`` for ``runs`` (model name, run folder)."""
    from ..._io import atomic_json

    out = Path(out)
    rows = comparison_rows(runs)
    return (atomic_json(out / "comparison.json", {"models": rows}),
            write_html(out / "comparison.html", render_comparison(rows)))


__all__ = ["comparison_rows", "render_comparison", "write_comparison"]
