"""``ask.json``: the ask-the-model baselines beside the best probe on the same texts.

The ask rows are ask.json's own numbers; the probe rows are metrics.json's (all texts) and,
for exactly the texts the model was asked about, :func:`riskscope.probes.summarize_binary`
on the probe's out-of-fold predictions with metrics.json's bootstrap settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...probes import summarize_binary
from .._render import Section, fmt, fmt_ci, section
from .._run import Run, read_json
from ._common import need

ANCHOR, NAV, TITLE = "ask", "Ask the model", "Asking the model directly"


def _row(name: str, auc, ci, pair, f1, acc, zero="—") -> list:
    return [name, fmt(auc, 3), fmt_ci(ci), fmt(pair, 3), fmt(f1, 3), fmt(acc, 3), zero]


def _probe_rows(run: Run, ids) -> list[list]:
    """The probe on the ask baseline's rows (same texts, same folds), the best probe on all rows, the lexical
    baseline."""
    rows = []
    best, p, boot = run.best, run.predictions, run.bootstrap
    src = run.predicted
    if src is not None and p is not None and isinstance(ids, list) and ids:
        where = {i: k for k, i in enumerate(p.id)}
        idx = np.asarray([where[str(i)] for i in ids if str(i) in where], dtype=int)
        if len(idx):
            s = summarize_binary(p.label_N[idx], p.score_N[idx], p.groups[idx], n_boot=boot.n, level=boot.level,
                                 seed=boot.seed)
            rows.append(_row(f"probe {src.name} on the same {len(idx)} texts", s.auc, s.auc_ci, s.pair_accuracy,
                             s.f1, s.accuracy))
    if best is not None:
        rows.append(_row(f"probe {best.name}, all texts", best.auc, best.auc_ci, best.pair_accuracy, best.f1,
                         best.accuracy))
    if run.lexical is not None:
        rows.append(_row("lexical baseline (bag of words), all texts", run.lexical.auc, None,
                         run.lexical.pair_accuracy, None, None))
    return rows


def _tokens(x) -> str:
    return "/".join(map(str, x)) if isinstance(x, list) else str(x)


def build(run: Run, path: Path) -> Section:
    """The section from ``path`` (ask.json)."""
    data = read_json(path)
    need(data, path, "results")
    results = data["results"] if isinstance(data["results"], list) else []
    ids = data.get("ids")
    n = len(ids) if isinstance(ids, list) and ids else (results[0].get("n_texts") if results else None)
    n = n if isinstance(n, int) and not isinstance(n, bool) else "n/a"
    rows = _probe_rows(run, ids)
    templates = []
    for r in results:
        t, ans = r.get("template") or {}, r.get("answer_tokens") or {}
        name = t.get("name", r.get("name", "?")) if isinstance(t, dict) else r.get("name", "?")
        rows.append(_row(f"ask: {name} ({_tokens(ans.get('positive', '?'))} vs {_tokens(ans.get('negative', '?'))})",
                         r.get("auc"), r.get("auc_ci"), r.get("pair_accuracy"), r.get("f1"), r.get("accuracy"),
                         fmt(r.get("zero_shot_accuracy"), 3)))
        if isinstance(t, dict):
            templates.append((name, t.get("prompt", "")))
    return section(ANCHOR, NAV, TITLE, "ask", n=n, rows=rows, templates=templates)


__all__ = ["ANCHOR", "NAV", "TITLE", "build"]
