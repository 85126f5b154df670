"""The probe sections: header and verdict, dataset, layers, ROC, categories, severity, confusion, mistakes,
all metrics and configuration.

Every figure comes from ``metrics.json`` or, for subsets of the texts (categories, the
confusion matrix), from :func:`riskscope.probes.summarize_binary` on ``predictions.jsonl``:
the report computes no metric of its own. The "all categories" row shows metrics.json's AUC,
interval and pair accuracy of the probe whose predictions these are.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime

import numpy as np

from ...probes import BinarySummary, spearman, summarize_binary
from .._render import Section, fmt, fmt_ci, section
from .._run import HOOK_ORDER, Predictions, Run
from ._probe_charts import layer_chart, roc_chart, severity_chart
from ._verdict import verdict

THRESHOLD = 0.5
"""Scores at least this count as flagged risky."""
MIN_BOOT_UNITS = 10
"""Fewer resampling units (pairs) than this in a category give no interval: the bootstrap would be meaningless."""
ALL = "all categories"


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _date(value) -> str:
    if not isinstance(value, str) or not value:
        return "n/a"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return value


def header(run: Run) -> dict:
    """The context of the page header: subtitle, metadata list and verdict."""
    man, met = run.manifest or {}, run.metrics
    model = _get(man, "model", default={})
    model_name = str(_get(model, "model") or met.get("model") or "unknown model")
    shape = ", ".join(f"{k} {model[k]}" for k in ("family", "n_layers", "d_model", "d_mlp", "dtype")
                      if isinstance(model, dict) and model.get(k) is not None)
    ds = _get(man, "dataset", default={})
    ds_name = str(_get(ds, "name") or met.get("dataset") or "unknown dataset")
    counts = ", ".join(f"{ds[k]} {k}" for k in ("rows", "pairs") if isinstance(ds, dict) and ds.get(k) is not None)
    folds, target = met.get("folds"), met.get("target")
    evaluation = " ".join(x for x in (f"{folds}-fold cross-validation" if folds else "",
                                      f"(target: {target})" if target else "") if x)
    date = _date(man.get("created"))
    items = [("Model", model_name + (f" ({shape})" if shape else "")),
             ("Weights", _get(model, "weight_hash")), ("Dataset", ds_name + (f" ({counts})" if counts else "")),
             ("Run date", date), ("Evaluation", evaluation or None),
             ("riskscope", man.get("riskscope_version")), ("Run folder", str(run.path))]
    return {"subtitle": [x for x in (model_name, ds_name, date) if x != "n/a"],
            "meta": [(k, str(v)) for k, v in items if v], "verdict": verdict(run),
            "best_declared": run.best_declared or run.best is None}


# --- numbers from predictions.jsonl, through riskscope.probes ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summaries:
    """:class:`~riskscope.probes.BinarySummary` of each category (sorted by name) and of all texts."""

    by_category: dict[str, BinarySummary]
    """One summary per category."""
    total: BinarySummary
    """All texts; AUC, interval and pair accuracy from metrics.json when it has the predicted probe."""


def summaries(run: Run) -> Summaries | None:
    """Per-category and overall metrics of the out-of-fold predictions (None without predictions.jsonl)."""
    p = run.predictions
    if p is None:
        return None
    boot, groups = run.bootstrap, p.groups
    cats = np.array(p.category, dtype=object)

    def summary(idx: np.ndarray, n_boot: int) -> BinarySummary:
        return summarize_binary(p.label_N[idx], p.score_N[idx], groups[idx], threshold=THRESHOLD, n_boot=n_boot,
                                level=boot.level, seed=boot.seed, min_groups=MIN_BOOT_UNITS)

    by_cat = {c: summary(np.flatnonzero(cats == c), boot.n) for c in sorted(set(p.category))}
    src = run.predicted if _recipe(run) is None else None  # a recipe's predictions are not the point's
    total = summary(np.arange(len(p)), 0 if src is not None else boot.n)
    if src is not None:  # one source for each fact: the run's own numbers for the run's own probe
        total = dataclasses.replace(total, auc=src.auc, auc_ci=src.auc_ci, pair_accuracy=src.pair_accuracy)
    return Summaries(by_cat, total)


def _examples(p: Predictions, label: int, k: int = 10) -> list[dict]:
    """Risky texts with the lowest scores (label 1) or benign texts with the highest (label 0)."""
    members: dict[str, list[int]] = {}
    for i, pid in enumerate(p.pair_id):
        if pid is not None:
            members.setdefault(pid, []).append(i)
    twin: dict[int, int] = {}
    for m in members.values():
        if len(m) == 2 and p.label_N[m[0]] != p.label_N[m[1]]:
            twin[m[0]], twin[m[1]] = m[1], m[0]
    idx = np.flatnonzero(p.label_N == label)
    order = idx[np.argsort(p.score_N[idx] if label == 1 else -p.score_N[idx], kind="stable")][:k]
    return [{"score": fmt(p.score_N[i], 3), "twin": fmt(p.score_N[twin[i]], 3) if i in twin else "n/a",
             "category": p.category[i], "severity": int(p.severity_N[i]) if p.severity_N[i] >= 0 else "n/a",
             "id": p.id[i], "text": p.text[i], "wrong": bool((p.score_N[i] >= THRESHOLD) != (label == 1))}
            for i in order]


# --- sections ------------------------------------------------------------------------------------------------


def _dataset(run: Run, sums: Summaries | None) -> Section:
    ds, p = _get(run.manifest, "dataset", default={}), run.predictions
    total = {k: ds.get(k) if isinstance(ds, dict) else None for k in ("rows", "risky", "benign", "pairs")}
    rows, categories, mismatch = [], None, None
    if p is not None and sums is not None:
        cats = np.array(p.category, dtype=object)
        for c, s in sums.by_category.items():
            idx = np.flatnonzero(cats == c)
            sev = p.severity_N[idx][(p.label_N[idx] == 1) & (p.severity_N[idx] >= 0)]
            rows.append([c, s.n_pos, s.n_neg, s.n_pairs, fmt(float(sev.mean()), 1) if len(sev) else "n/a"])
        t = sums.total
        rows.append([ALL, t.n_pos, t.n_neg, t.n_pairs, ""])
        for k, v in (("rows", len(p)), ("risky", t.n_pos), ("benign", t.n_neg), ("pairs", t.n_pairs)):
            total[k] = total[k] if total[k] is not None else v
        if isinstance(ds, dict) and isinstance(ds.get("rows"), int) and ds["rows"] != len(p):
            mismatch = f"predictions.jsonl holds {len(p)} texts but the manifest lists {ds['rows']}."
    elif isinstance(_get(ds, "categories"), dict):
        categories = sorted((str(k), str(v)) for k, v in ds["categories"].items())
    words = {"rows": "texts", "risky": "risky", "benign": "benign", "pairs": "matched pairs"}
    summary = ", ".join(f"{total[k]} {w}" for k, w in words.items() if total[k] is not None)
    paired = isinstance(total["pairs"], int) and total["pairs"] > 0
    return section("dataset", "Dataset", "Dataset", "dataset", summary=summary, rows=rows, categories=categories,
                   mismatch=mismatch, paired=paired)


def _layers(run: Run) -> Section:
    hooks = []
    for k, hook in enumerate(run.hooks):
        rs = run.by_hook(hook)
        hooks.append({"hook": hook, "n": len(rs),
                      "chart": layer_chart(rs, run.lexical, run.best, hook, key=f"layers-{k}")})
    return section("layers", "Per layer", "Probe quality per layer", "layers", hooks=hooks,
                   has_lexical=run.lexical is not None)


def _roc(run: Run) -> Section:
    have = sorted((r for r in run.results if r.roc is not None and math.isfinite(r.auc)), key=lambda r: -r.auc)[:3]
    return section("roc", "ROC", "ROC curves", "roc", chart=roc_chart(have, run.lexical) if have else None,
                   names=", ".join(r.name for r in have),
                   lexical_curve=run.lexical is not None and run.lexical.roc is not None)


def _recipe(run: Run) -> dict | None:
    """metrics.json's recipe selection, when the saved probe is the recipe it chose."""
    rec = run.metrics.get("recipe") if isinstance(run.metrics, dict) else None
    saved = run.metrics.get("saved") if isinstance(run.metrics, dict) else None
    ok = isinstance(rec, dict) and isinstance(rec.get("chosen"), dict)
    return rec if ok and (not isinstance(saved, dict) or saved.get("kind") == "recipe") else None


def _probe_name(run: Run) -> str:
    rec = _recipe(run)
    if rec is not None:
        return f"the recipe {rec['chosen'].get('name', '?')}"
    return run.predicted.name if run.predicted is not None else "the chosen probe"


def _nested_rows(rec: dict) -> list[list]:
    rows = []
    for label, key in (("chosen by nested CV (any recipe)", "nested"),
                       ("chosen by nested CV (activations only)", "nested_activations")):
        n = rec.get(key)
        if not isinstance(n, dict) or (key == "nested_activations" and n == rec.get("nested")
                                       and not rec["chosen"].get("uses_lexical")):
            continue
        rows.append([label, fmt(n.get("auc"), 3), fmt_ci(n.get("auc_ci"), 3), fmt(n.get("lexical_auc"), 3),
                     fmt(n.get("delta_auc"), 3, signed=True), fmt_ci(n.get("delta_ci"), 3), fmt(n.get("p_value"), 3),
                     "yes" if n.get("beats_lexical") else "no", ", ".join(map(str, n.get("chosen_per_fold") or []))])
    return rows


def _recipes(run: Run) -> Section | None:
    rec = run.metrics.get("recipe") if isinstance(run.metrics, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("chosen"), dict):
        return None
    chosen, act = rec["chosen"].get("name"), (rec.get("best_activations") or {}).get("name")
    cands = [c for c in rec.get("candidates") or [] if isinstance(c, dict)]
    rows = [[c.get("name"), c.get("kind"), fmt(c.get("auc"), 3), fmt_ci(c.get("auc_ci"), 3),
             fmt(c.get("pair_accuracy"), 3)] for c in cands]
    classes = ["best" if c.get("name") == chosen else "total" if c.get("name") == act else "" for c in cands]
    if run.lexical is not None:
        rows.append(["lexical baseline (TF-IDF 1-2 grams)", "words", fmt(run.lexical.auc, 3), "",
                     fmt(run.lexical.pair_accuracy, 3)])
        classes.append("")
    return section("recipes", "Recipes", "Recipe chosen by nested cross-validation", "recipes", chosen=chosen,
                   best_activations=act, stacked=bool(rec["chosen"].get("uses_lexical")),
                   head=["Recipe", "Kind", "CV AUC", "95% CI", "Pair accuracy"], rows=rows, classes=classes,
                   nested_head=["Selection", "Nested AUC", "95% CI", "Lexical AUC", "ΔAUC", "95% CI", "p",
                                "Beats wording", "Chosen in each outer fold"],
                   nested_rows=_nested_rows(rec), top_k=_get(rec, "config", "top_k"),
                   saved=_get(run.metrics, "saved", "name"))


def _categories(run: Run, sums: Summaries | None) -> Section:
    rows = []
    if sums is not None:
        body = sorted(sums.by_category.items(), key=lambda kv: (math.isnan(kv[1].auc), kv[1].auc))
        for name, s in body + [(ALL, sums.total)]:
            rows.append([name, s.n_pos, s.n_neg, fmt(s.auc, 3), fmt_ci(s.auc_ci), fmt(s.pair_accuracy, 3),
                         s.n_pairs, fmt(s.mean_pos, 3), fmt(s.mean_neg, 3)])
    return section("categories", "Categories", "Per-category results", "categories", rows=rows,
                   probe=_probe_name(run), n_boot=run.bootstrap.n, min_units=MIN_BOOT_UNITS)


def _severity(run: Run) -> Section:
    p, ctx = run.predictions, {"chart": None, "rho": None, "trend": "", "missing": 0, "has_values": False}
    if p is not None and (p.severity_N >= 0).any():
        ctx["has_values"] = True
        ctx["chart"] = severity_chart(p, THRESHOLD)
        risky = (p.label_N == 1) & (p.severity_N >= 0)
        rho = spearman(p.severity_N[risky], p.score_N[risky]) if risky.sum() > 1 else math.nan
        if math.isfinite(rho):
            ctx["rho"] = rho
            ctx["trend"] = ("more severe risks tend to score higher" if rho > 0.2 else
                            "more severe risks tend to score lower" if rho < -0.2 else
                            "severity barely relates to the score")
        ctx["missing"] = int((p.severity_N < 0).sum())
    return section("severity", "Severity", "Score by severity", "severity", has_predictions=p is not None, **ctx)


def _confusion(run: Run, sums: Summaries | None) -> Section:
    return section("confusion", "Confusion matrix", "Confusion matrix at threshold 0.5", "confusion",
                   c=sums.total if sums is not None else None, threshold=THRESHOLD, probe=_probe_name(run))


def _errors(run: Run) -> Section:
    p = run.predictions
    return section("errors", "Mistakes", "Most confident mistakes", "errors", has_predictions=p is not None,
                   low=_examples(p, 1) if p is not None else [], high=_examples(p, 0) if p is not None else [])


def _scalar(v) -> str:
    if isinstance(v, float):
        return fmt(v, 3)
    return "n/a" if v is None else str(v)


def _metrics(run: Run) -> Section:
    extras = sorted({k for r in run.results for k in r.extra})
    order = {h: i for i, h in enumerate(HOOK_ORDER)}
    rs = sorted(run.results, key=lambda r: (order.get(r.hook, len(order)), r.hook, r.layer))
    rows = [[r.hook, r.layer, fmt(r.auc, 3), fmt_ci(r.auc_ci, 3), fmt(r.f1, 3), fmt(r.accuracy, 3),
             fmt(r.pair_accuracy, 3), fmt(r.shuffled_auc, 3)] + [_scalar(r.extra.get(k)) for k in extras] for r in rs]
    classes = ["best" if r is run.best else "" for r in rs]
    if run.lexical is not None:
        rows.append(["lexical baseline", "", fmt(run.lexical.auc, 3), "", "", "", fmt(run.lexical.pair_accuracy, 3),
                     ""] + [""] * len(extras))
        classes.append("total")
    head = ["Hook", "Layer", "AUC", "95% CI", "F1", "Accuracy", "Pair accuracy", "Shuffled AUC"] + extras
    numeric = [all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                   for v in (r.extra.get(k) for r in rs)) for k in extras]
    return section("metrics", "All metrics", "All per-layer metrics", "metrics", head=head, rows=rows,
                   classes=classes, num=tuple(range(1, 8)) + tuple(8 + i for i, n in enumerate(numeric) if n),
                   free=(0,) + tuple(8 + i for i, n in enumerate(numeric) if not n))


def _config(run: Run) -> Section:
    man = dict(run.manifest) if run.manifest is not None else None
    cfg = man.pop("config", None) if man is not None else None
    return section("config", "Configuration", "Run configuration", "config", manifest=man, config=cfg)


def probe_sections(run: Run) -> tuple[list[Section], list[Section]]:
    """The sections before the live-model ones (dataset .. mistakes) and after them (all metrics, configuration)."""
    sums = summaries(run)
    recipes = _recipes(run)
    before = [_dataset(run, sums), *([recipes] if recipes is not None else []), _layers(run), _roc(run),
              _categories(run, sums), _severity(run), _confusion(run, sums), _errors(run)]
    return before, [_metrics(run), _config(run)]


__all__ = ["MIN_BOOT_UNITS", "THRESHOLD", "Summaries", "header", "probe_sections", "summaries"]
