"""Assemble the report sections into one self-contained HTML file."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from . import _analysis as A
from . import _charts as C
from ._html import Raw, details, e, figure, note, page, para, section, table
from ._live import live_sections
from ._run import HOOK_ORDER, Run, load_run


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


def _header(run: Run) -> Raw:
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
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items if v)
    v = A.verdict(run)
    body = f'<p class="headline">{e(v.headline)}</p><p>{e(" ".join(v.sentences))}</p>'
    extra = "" if run.best_declared or run.best is None else str(note(
        "metrics.json names no best probe that matches its results; the layer with the highest AUC is used."))
    return Raw(f'<header class="top"><h1>Tacit cyber-risk probe report</h1>'
               f'<p class="sub">{" &middot; ".join(e(x) for x in (model_name, ds_name, date) if x != "n/a")}</p>'
               f'<dl class="meta">{meta}</dl><div class="verdict {e(v.level)}" id="verdict">{body}</div>{extra}'
               "</header>")


def _dataset(run: Run) -> Raw:
    ds, p = _get(run.manifest, "dataset", default={}), run.predictions
    parts = []
    total = {k: ds.get(k) if isinstance(ds, dict) else None for k in ("rows", "risky", "benign", "pairs")}
    if p is not None:
        rows = []
        cats = np.array(p.category, dtype=object)
        for c in sorted(set(p.category)):
            idx = np.flatnonzero(cats == c)
            risky = int(p.label_N[idx].sum())
            sev = p.severity_N[idx][(p.label_N[idx] == 1) & (p.severity_N[idx] >= 0)]
            rows.append([c, risky, len(idx) - risky, A.pair_accuracy(p, idx)[1],
                         A.fmt(float(sev.mean()), 1) if len(sev) else "n/a"])
        n_risky = int(p.label_N.sum())
        rows.append(["all categories", n_risky, len(p) - n_risky, A.pair_accuracy(p)[1], ""])
        for k, v in (("rows", len(p)), ("risky", n_risky), ("benign", len(p) - n_risky),
                     ("pairs", A.pair_accuracy(p)[1])):
            total[k] = total[k] if total[k] is not None else v
        parts.append(table(["Category", "Risky", "Benign", "Matched pairs", "Mean severity (risky)"], rows,
                           num_cols=(1, 2, 3, 4), row_classes=[""] * (len(rows) - 1) + ["total"]))
        if isinstance(ds, dict) and isinstance(ds.get("rows"), int) and ds["rows"] != len(p):
            parts.append(note(f"predictions.jsonl holds {len(p)} texts but the manifest lists {ds['rows']}."))
    elif isinstance(_get(ds, "categories"), dict):
        parts.append(table(["Category", "Count"], sorted(ds["categories"].items()), num_cols=(1,)))
        parts.append(note("predictions.jsonl is missing: counts come from the manifest, "
                          "without the risky/benign split."))
    else:
        parts.append(note("No per-category counts: neither predictions.jsonl nor manifest.dataset.categories exist."))
    words = {"rows": "texts", "risky": "risky", "benign": "benign", "pairs": "matched pairs"}
    summary = ", ".join(f"{total[k]} {w}" for k, w in words.items() if total[k] is not None)
    lead = para(f"{summary}.") if summary else ""
    paired = isinstance(total["pairs"], int) and total["pairs"] > 0
    return section("dataset", "Dataset", lead, *parts,
                   intro="Texts come in matched pairs: a risky scenario and a benign twin that differs only in "
                         "the detail that makes it risky." if paired else "")


def _layers(run: Run) -> Raw:
    parts = [Raw('<ul class="legend">'
                 "<li><b>AUC</b> (blue, shaded band = 95% CI): how well the probe ranks risky above benign; "
                 "0.5 is chance, 1.0 perfect.</li>"
                 "<li><b>Shuffled-label AUC</b> (grey): the same probe trained on shuffled labels; it should sit "
                 "near 0.5. If it rises, the setup leaks labels.</li>"
                 "<li><b>Lexical baseline</b> (red dashed): a bag-of-words classifier on the raw text. The probe "
                 "is only interesting where it clearly beats this line.</li>"
                 "<li><b>F1</b> (orange) and <b>pair accuracy</b> (green): F1 at threshold 0.5; share of pairs "
                 "whose risky text scores above its benign twin.</li></ul>")]
    if run.lexical is None:
        parts.append(note("metrics.json has no lexical baseline; the charts omit it."))
    for hook in run.hooks:
        rs = run.by_hook(hook)
        parts.append(Raw(f"<h3>{e(hook)}</h3>"))
        parts.append(figure(C.layer_chart(rs, run.lexical, run.best, hook, key=f"layers-{hook}"),
                            f"{hook}: {len(rs)} layer{'s' if len(rs) != 1 else ''} probed."))
    return section("layers", "Probe quality per layer", *parts,
                   intro="One chart per hook point (where in each block the activations were read). "
                         "Read the blue line against the grey and red controls.")


def _roc(run: Run) -> Raw:
    have = sorted((r for r in run.results if r.roc is not None and math.isfinite(r.auc)), key=lambda r: -r.auc)[:3]
    if not have:
        return section("roc", "ROC curves", note("metrics.json holds no ROC curves; section skipped."))
    parts = [Raw('<figure class="narrow">'), Raw(C.roc_chart(have, run.lexical)),
             Raw(f"<figcaption>{e('Best layers: ' + ', '.join(r.name for r in have))}. A curve hugging the "
                 "top-left corner catches most risky texts while flagging few benign ones.</figcaption></figure>")]
    if run.lexical is None or run.lexical.roc is None:
        parts.append(note("No ROC curve for the lexical baseline in metrics.json."))
    return section("roc", "ROC curves", *parts,
                   intro="Each point is one threshold: the share of risky texts caught (up) against the share "
                         "of benign texts wrongly flagged (right).")


def _no_predictions(anchor: str, title: str) -> Raw:
    return section(anchor, title, note("predictions.jsonl is missing from the run folder; section skipped."))


def _best_name(run: Run) -> str:
    return run.best.name if run.best is not None else "best probe"


def _categories(run: Run) -> Raw:
    if run.predictions is None:
        return _no_predictions("categories", "Per-category results")
    rows = A.category_table(run.predictions)
    body, total = rows[:-1], rows[-1]
    body.sort(key=lambda r: (math.isnan(r.auc), r.auc))
    cells = [[r.category, r.risky, r.benign, A.fmt(r.auc, 3), A.fmt_ci(r.auc_ci),
              A.fmt(r.pair_accuracy, 3), r.pairs, A.fmt(r.mean_risky, 3), A.fmt(r.mean_benign, 3)]
             for r in body + [total]]
    return section("categories", "Per-category results", table(
        ["Category", "Risky", "Benign", "AUC", "95% CI", "Pair accuracy", "Pairs", "Mean score risky",
         "Mean score benign"], cells, num_cols=range(1, 9), row_classes=[""] * len(body) + ["total"]),
        note("AUC is n/a where a category lacks risky or benign texts. 95% intervals resample whole pairs "
             f"({A.N_BOOT} bootstrap draws); they are n/a below {A.MIN_BOOT_UNITS} pairs and wide for small "
             "categories."),
        intro=f"Out-of-fold predictions of {_best_name(run)}, weakest category first. The weak categories "
              "are where the probe is least trustworthy.")


def _severity(run: Run) -> Raw:
    p = run.predictions
    if p is None:
        return _no_predictions("severity", "Score by severity")
    if not (p.severity_N >= 0).any():
        return section("severity", "Score by severity", note("predictions.jsonl has no severity values; skipped."))
    parts = [figure(C.severity_chart(p, A.THRESHOLD), "Boxes: quartiles of all texts at that level; "
                    "dots: individual texts coloured by label; dashed line: decision threshold.")]
    risky = (p.label_N == 1) & (p.severity_N >= 0)
    sev, score = p.severity_N[risky], p.score_N[risky]
    if len(np.unique(sev)) >= 2 and len(np.unique(score)) >= 2:
        rho = float(spearmanr(sev, score).statistic)
        trend = ("more severe risks tend to score higher" if rho > 0.2 else
                 "more severe risks tend to score lower" if rho < -0.2 else "severity barely relates to the score")
        parts.insert(0, para(f"Among risky texts, Spearman correlation of severity and score is {A.fmt(rho)}: "
                             f"{trend}."))
    if (p.severity_N < 0).any():
        parts.append(note(f"{int((p.severity_N < 0).sum())} texts without a severity are not shown."))
    return section("severity", "Score by severity", *parts,
                   intro="Does the probe react more strongly to worse risks? Benign twins have severity 0.")


def _confusion(run: Run) -> Raw:
    if run.predictions is None:
        return _no_predictions("confusion", "Confusion matrix")
    c = A.confusion(run.predictions)

    def share(n, d):
        return f"{n} <small>({A.pct(n / d) if d else 'n/a'})</small>"

    mat = Raw('<div class="scroll"><table class="confusion"><thead><tr><th></th><th scope="col">predicted benign'
              '</th><th scope="col">predicted risky</th></tr></thead><tbody>'
              f'<tr><th scope="row">actually benign</th><td class="hit">{share(c.tn, c.tn + c.fp)}</td>'
              f'<td class="miss">{share(c.fp, c.tn + c.fp)}</td></tr>'
              f'<tr><th scope="row">actually risky</th><td class="miss">{share(c.fn, c.fn + c.tp)}</td>'
              f'<td class="hit">{share(c.tp, c.fn + c.tp)}</td></tr></tbody></table></div>')
    stats = table(["Metric", "Value", "Meaning"], [
        ["Accuracy", A.fmt(c.accuracy, 3), "share of all texts labelled correctly"],
        ["Precision", A.fmt(c.precision, 3), "of texts flagged risky, share that are risky"],
        ["Recall", A.fmt(c.recall, 3), "of risky texts, share flagged"],
        ["False-positive rate", A.fmt(c.false_positive_rate, 3), "of benign texts, share wrongly flagged"]],
        num_cols=(1,))
    return section("confusion", "Confusion matrix at threshold 0.5",
                   para(f"The probe catches {c.tp} of {c.tp + c.fn} risky texts and wrongly flags {c.fp} of "
                        f"{c.fp + c.tn} benign texts."), Raw(f'<div class="grid2">{mat}{stats}</div>'),
                   intro=f"Texts with score at least {A.THRESHOLD} from {_best_name(run)} count as flagged.")


def _example_table(examples: list[A.Example], wrong_word: str, right_word: str) -> Raw:
    rows = [[A.fmt(x.score, 3), A.fmt(x.twin_score, 3), x.category, x.severity if x.severity >= 0 else "n/a",
             Raw(f'<span class="tag {"bad" if x.wrong else "ok"}">{e(wrong_word if x.wrong else right_word)}</span>'),
             Raw(f'<span title="{e(x.id)}">{e(x.text)}</span>')] for x in examples]
    return table(["Score", "Twin score", "Category", "Severity", "At 0.5", "Text"], rows, num_cols=(0, 1, 3),
                 cls="examples")


def _examples(run: Run) -> Raw:
    p = run.predictions
    if p is None:
        return _no_predictions("errors", "Most confident mistakes")
    low, high = A.worst_examples(p, 1), A.worst_examples(p, 0)
    return section(
        "errors", "Most confident mistakes",
        Raw("<h3>Risky texts with the lowest scores (missed risks)</h3>"),
        _example_table(low, "missed", "caught") if low else note("No risky texts."),
        Raw("<h3>Benign texts with the highest scores (false alarms)</h3>"),
        _example_table(high, "false alarm", "cleared") if high else note("No benign texts."),
        intro="The ten worst-scored texts of each kind. 'Twin score' is the score of the other text of the "
              "same matched pair: a twin scored on the same side suggests the probe missed the detail that "
              "makes the difference.")


def _metrics_table(run: Run) -> Raw:
    extras = sorted({k for r in run.results for k in r.extra})
    order = {h: i for i, h in enumerate(HOOK_ORDER)}
    rs = sorted(run.results, key=lambda r: (order.get(r.hook, len(order)), r.hook, r.layer))
    rows = [[r.hook, r.layer, A.fmt(r.auc, 3), A.fmt_ci(r.auc_ci, 3),
             A.fmt(r.f1, 3), A.fmt(r.accuracy, 3), A.fmt(r.pair_accuracy, 3), A.fmt(r.shuffled_auc, 3)]
            + [_scalar(r.extra.get(k)) for k in extras] for r in rs]
    classes = ["best" if r is run.best else "" for r in rs]
    if run.lexical is not None:
        rows.append(["lexical baseline", "", A.fmt(run.lexical.auc, 3), "", "", "",
                     A.fmt(run.lexical.pair_accuracy, 3), ""] + [""] * len(extras))
        classes.append("total")
    return section("metrics", "All per-layer metrics", table(
        ["Hook", "Layer", "AUC", "95% CI", "F1", "Accuracy", "Pair accuracy", "Shuffled AUC"] + extras, rows,
        num_cols=[1, 2, 3, 4, 5, 6, 7] + [8 + i for i in range(len(extras))], row_classes=classes),
        intro="Every probe trained, cross-validated. The highlighted row is the best probe.")


def _scalar(v) -> str:
    if isinstance(v, float):
        return A.fmt(v, 3)
    return "n/a" if v is None else str(v)


def _config(run: Run) -> Raw:
    if run.manifest is None:
        return section("config", "Run configuration", note("manifest.json is missing; no configuration to show."))
    man = dict(run.manifest)
    cfg = man.pop("config", None)
    dump = lambda obj: json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)  # noqa: E731
    parts = [details("Configuration (manifest.json: config)", dump(cfg)) if cfg is not None
             else note("manifest.json has no config."), details("Manifest (everything else)", dump(man))]
    return section("config", "Run configuration", *parts, intro="Exactly what was run, for reproducing it.")


_SECTIONS = [("dataset", "Dataset", _dataset), ("layers", "Per layer", _layers), ("roc", "ROC", _roc),
             ("categories", "Categories", _categories), ("severity", "Severity", _severity),
             ("confusion", "Confusion matrix", _confusion), ("errors", "Mistakes", _examples),
             ("metrics", "All metrics", _metrics_table), ("config", "Configuration", _config)]


_LIVE_AFTER = "errors"
"""The live-model sections (ask, neurons, traces, steering: :mod:`._live`) follow this section."""


def render(run: Run) -> str:
    """The report of a loaded run as an HTML string."""
    title = f"riskscope report: {run.metrics.get('model') or _get(run.manifest, 'model', 'model') or run.path.name}"
    sections = []
    for anchor, name, build in _SECTIONS:
        sections.append((anchor, name, build(run)))
        if anchor == _LIVE_AFTER:
            sections.extend(live_sections(run))
    return page(title, _header(run), [("verdict", "Verdict")] + [(a, t) for a, t, _ in sections],
                [body for _, _, body in sections])


def write_report(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out_path`` (default ``run_dir/report.html``); return its path."""
    run = load_run(run_dir)
    out = Path(out_path) if out_path is not None else run.path / "report.html"
    html = render(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
