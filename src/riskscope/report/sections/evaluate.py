"""The page of ``riskscope evaluate``: a bundle on an external labelled set, beside the lexical model.

Everything shown is read from the evaluation's result (``evaluation.json``): the page computes no metric.
Sections: summary (probe vs lexical with intervals, ΔAUC), calibration (reliability curve, ECE), the
pairs the lexical model gets wrong, categories, severity, inputs (truncated texts, unseen categories,
notes), the cross-validated figures of the run, and the configuration.

>>> html = evaluation_html({"probe_metrics": {"auc": 0.8}, "dataset": {"name": "x"}})
>>> "<html" in html and "0.80" in html
True
"""

from __future__ import annotations

import math

from .._charts import BLUE, GREY, VERMILION, Chart, new_figure, to_chart
from .._render import Section, fmt, fmt_ci, number, render_template, section

GOALS = {"auc": 0.80, "pair_accuracy": 0.88}
"""What the probe should reach on texts it has never seen."""


def _d(x) -> dict:
    return x if isinstance(x, dict) else {}


def _row(name: str, m: dict) -> list[str]:
    return [name, fmt(m.get("auc")), fmt_ci(m.get("auc_ci")), fmt(m.get("pair_accuracy")),
            fmt_ci(m.get("pair_accuracy_ci")), fmt(m.get("f1")), fmt_ci(m.get("f1_ci")), fmt(m.get("accuracy")),
            fmt_ci(m.get("accuracy_ci")), fmt(m.get("threshold"))]


def headline(result: dict) -> tuple[str, list[str]]:
    """One sentence on whether the probe beats wording on this set, and the supporting ones."""
    p, d = _d(result.get("probe_metrics")), _d(result.get("delta_auc"))
    ci = d.get("ci") if isinstance(d.get("ci"), list) and len(d.get("ci")) == 2 else [None, None]
    lo, hi = ci
    sentences = [f"AUC {fmt(p.get('auc'))} ({fmt_ci(p.get('auc_ci'))}), pair accuracy "
                 f"{fmt(p.get('pair_accuracy'))} ({fmt_ci(p.get('pair_accuracy_ci'))})."]
    goal = [k for k, v in GOALS.items() if not number(p.get(k)) >= v]
    sentences.append("It meets the goals (AUC ≥ 0.80, pair accuracy ≥ 0.88)." if not goal else
                     f"It misses the goal for {' and '.join({'auc': 'AUC'}.get(k, k.replace('_', ' ')) for k in goal)} "
                     f"(AUC ≥ 0.80, pair accuracy ≥ 0.88).")
    if not d:
        return "No lexical baseline: whether the probe beats wording is not tested here.", sentences
    lex = _d(result.get("lexical"))
    sentences.append(f"The lexical model trained on the run's texts reaches AUC {fmt(lex.get('auc'))} on this set; "
                     f"ΔAUC {fmt(d.get('value'), 3, True)} ({fmt_ci(d.get('ci'), 3)}, p = {fmt(d.get('p_value'), 3)}).")
    if number(lo) > 0:
        return "The probe beats the lexical model on this set (the ΔAUC interval excludes 0).", sentences
    if number(hi) < 0:
        return "The lexical model beats the probe on this set (the ΔAUC interval excludes 0).", sentences
    return "No evidence that the probe beats the lexical model on this set (the ΔAUC interval includes 0).", sentences


def reliability_chart(cal: dict) -> Chart | None:
    bins = [b for b in cal.get("bins") or [] if isinstance(b, dict) and b.get("n")]
    if not bins:
        return None
    fig, ax = new_figure(4.8, 3.6)
    ax.plot([0, 1], [0, 1], color=GREY, linestyle=":", label="perfect calibration")
    x = [number(b.get("mean_score")) for b in bins]
    y = [number(b.get("observed")) for b in bins]
    size = [20 + 180 * b["n"] / max(c["n"] for c in bins) for b in bins]
    ax.plot(x, y, color=BLUE, linewidth=1.6)
    ax.scatter(x, y, s=size, color=BLUE, alpha=0.8, label="probe (marker size: texts in bin)", zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability of risk")
    ax.set_ylabel("share risky")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return to_chart(fig, f"Reliability curve, ECE {fmt(cal.get('ece'), 3)}", "eval-reliability")


def subset_chart(rows: list[dict], what: str, key: str) -> Chart | None:
    if not rows or not any(math.isfinite(number(r.get("auc"))) for r in rows):
        return None
    fig, ax = new_figure(7.5, 0.35 * len(rows) + 1.2)
    names = [str(r.get("value")) for r in rows]
    ypos = list(range(len(rows)))
    auc = [number(r.get("auc")) for r in rows]
    err = [[max(0.0, a - number((r.get("auc_ci") or [None])[0])) if math.isfinite(a) else 0 for a, r in zip(auc, rows)],
           [max(0.0, number((r.get("auc_ci") or [None, None])[1]) - a) if math.isfinite(a) else 0
            for a, r in zip(auc, rows)]]
    err = [[0 if not math.isfinite(v) else v for v in side] for side in err]
    ax.errorbar(auc, ypos, xerr=err, fmt="o", color=BLUE, label="probe AUC (95% CI)")
    lex = [number(r.get("lexical_auc")) for r in rows]
    if any(math.isfinite(v) for v in lex):
        ax.plot(lex, ypos, "D", color=VERMILION, label="lexical AUC", markersize=5)
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUC")
    ax.legend(loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False, fontsize=8)
    return to_chart(fig, f"AUC by {what}", key)


def _subset_rows(rows: list[dict], seen: bool) -> list[list[str]]:
    out = []
    for r in rows:
        cells = [str(r.get("value")), str(r.get("n_pairs")), fmt(r.get("auc")), fmt_ci(r.get("auc_ci")),
                 fmt(r.get("pair_accuracy")), fmt_ci(r.get("pair_accuracy_ci")), fmt(r.get("lexical_auc")),
                 fmt(r.get("lexical_pair_accuracy"))]
        if seen:
            cells.append("yes" if r.get("seen_in_training") else "no (unseen)")
        out.append(cells)
    return out


def sections(result: dict) -> list[Section]:
    """The page's sections, in reading order."""
    p, lex = _d(result.get("probe_metrics")), result.get("lexical")
    rows = [_row("probe", p)] + ([_row("lexical (TF-IDF, run's texts)", _d(lex))] if lex else [])
    out = [section("summary", "Summary", "Probe and lexical model on the external set", "evaluate_summary",
                   rows=rows, delta=result.get("delta_auc"), misses=result.get("lexical_misses"), lexical=_d(lex),
                   probe=p)]
    cal = _d(result.get("calibration"))
    out.append(section("calibration", "Calibration", "Calibration", "evaluate_calibration",
                       chart=reliability_chart(cal), ece=cal.get("ece"),
                       bins=[[f"{fmt(b.get('lo'))}–{fmt(b.get('hi'))}", str(b.get("n")), fmt(b.get("mean_score")),
                              fmt(b.get("observed"))] for b in cal.get("bins") or [] if isinstance(b, dict)]))
    cats = [r for r in result.get("by_category") or [] if isinstance(r, dict)]
    seen = any("seen_in_training" in r for r in cats)
    if cats:
        out.append(section("categories", "Categories", "By category", "evaluate_subsets", what="category",
                           chart=subset_chart(cats, "category", "eval-cat"), rows=_subset_rows(cats, seen),
                           seen=seen))
    sev = [r for r in result.get("by_severity") or [] if isinstance(r, dict)]
    if sev:
        out.append(section("severity", "Severity", "By severity of the risky member", "evaluate_subsets",
                           what="severity", chart=subset_chart(sev, "severity", "eval-sev"),
                           rows=_subset_rows(sev, False), seen=False))
    out.append(section("inputs", "Inputs", "Inputs and notes", "evaluate_inputs", truncated={"count": None, "ids": [], "context_length": None, **_d(result.get("truncated"))},
                       categories={"unseen": None, "seen_in_training": None, **_d(result.get("categories"))}, notes=result.get("notes") or [],
                       cv=result.get("cv"), config=result.get("config") or {}, dataset=_d(result.get("dataset"))))
    return out


def evaluation_html(result: dict) -> str:
    """The offline HTML page of an evaluation result (``evaluation.json``)."""
    probe, ds = _d(result.get("probe")), _d(result.get("dataset"))
    head, sentences = headline(result)
    level = "good" if head.startswith("The probe beats") else "warning" if head.startswith("The lexical") else "caution"
    meta = [("Probe", f"{probe.get('name', 'n/a')} ({probe.get('positions', 'n/a')}), {probe.get('path', '')}"),
            ("Model", f"{probe.get('model', 'n/a')}"), ("Weights", str(probe.get("weight_hash", "n/a"))),
            ("External set", f"{ds.get('name', 'n/a')} ({ds.get('rows', 'n/a')} texts, {ds.get('pairs', 'n/a')} pairs)"),
            ("Run", str(result.get("run"))), ("Created", str(result.get("created", "n/a")))]
    secs = sections(result)
    return str(render_template("evaluate.html.j2", title=f"riskscope evaluation: {ds.get('name', '')}",
                               nav=[("verdict", "Verdict")] + [(s.anchor, s.nav) for s in secs], sections=secs,
                               meta=meta, verdict={"headline": head, "sentences": sentences, "level": level}))


__all__ = ["GOALS", "evaluation_html", "headline", "reliability_chart", "sections", "subset_chart"]
