"""``report.html``: one self-contained page (inline SVG, no network), all model text escaped."""

from __future__ import annotations

import html
import io
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._run import MelboResult

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;vertical-align:top}
th{background:#f5f5f5;text-align:left}.num{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;margin:0;font:13px/1.35 ui-monospace,monospace}
.card{border:1px solid #ccc;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.muted{color:#777}.bad{color:#a33}figure{margin:.5em 0;display:inline-block}
details{margin:.3em 0}summary{cursor:pointer}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{nd}f}"
    return _e(x)


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.find("<svg"):], flags=re.S)


def _figure(w: float = 5.2, h: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.add_subplot(1, 1, 1)


def _curves_plot(res: "MelboResult") -> str:
    curves = res.training.curves_SV.numpy()  # (S, V)
    fig, ax = _figure()
    for j in range(curves.shape[1]):
        ax.plot(curves[:, j], lw=0.7, alpha=0.5)
    ax.plot(curves.mean(1), lw=2, color="k", label="mean")
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.set_title("training curve of every vector")
    ax.legend(loc="lower right")
    return _svg(fig)


def _objective_plot(res: "MelboResult") -> str:
    fig, ax = _figure(4.2, 3.2)
    data = [res.training.objective_V.numpy()]
    labels = ["learned"]
    if res.random_objective:
        data.append(np.asarray(res.random_objective))
        labels.append("random (same R)")
    ax.boxplot(data)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for k, d in enumerate(data, 1):
        ax.scatter(np.full(len(d), k) + np.linspace(-0.12, 0.12, len(d)), d, s=8, alpha=0.6)
    ax.set_yscale("log")
    ax.set_ylabel("objective (log)")
    ax.set_title("objective: learned vs random")
    return _svg(fig)


def _extension_note(sweep: dict) -> str:
    n = sweep.get("extended", 0)
    note = f" The best radius was the top of the grid, so {n} larger one{'s were' if n > 1 else ' was'} tried." if n else ""
    if sweep.get("at_top"):
        note += (" The chosen R is still the largest tried: diversity may keep rising beyond it "
                 "(raise --grid-extend or pass a wider --radius-grid).")
    return note


def _sweep_plot(sweep: dict) -> str:
    curve = sweep["curve"]
    r = [c["radius"] for c in curve]
    fig, ax = _figure()
    ax.plot(r, [c["diversity_fluent"] for c in curve], "o-", label="diversity among fluent (score)")
    ax.plot(r, [c["diversity"] for c in curve], "s--", alpha=0.7, label="diversity (all)")
    ax.plot(r, [c["fluent_fraction"] for c in curve], "^:", alpha=0.7, label="fluent fraction")
    ax.axvline(sweep["chosen"], color="k", lw=1, ls="--")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(r, [f"{x:.3g}" for x in r])
    ax.set_xlabel("radius R")
    ax.set_title(f"radius sweep: chose R = {sweep['chosen']:.3g}")
    ax.legend(fontsize=8)
    return _svg(fig)


def _fluency_plot(res: "MelboResult") -> str:
    fig, ax = _figure(4.6, 3.2)
    rows = [r for r in res.completions if r["prompts"] == "train" and r["sample"] == 0 and r["fluency"] is not None]
    for name in ("learned", "random"):
        vals = [r["fluency"] for r in rows if r["set"] == name]
        if vals:
            ax.hist(vals, bins=20, alpha=0.55, label=name)
    for r in (x for x in rows if x["set"] == "unsteered"):
        ax.axvline(r["fluency"], color="k", lw=1)
    ax.set_xlabel("mean log-likelihood per token (unsteered model)")
    ax.set_title("fluency (black: unsteered)")
    ax.legend()
    return _svg(fig)


def _summary_table(res: "MelboResult") -> str:
    m = res.metrics
    keys = [("diversity", "diversity (mean pairwise cosine distance)"),
            ("diversity_fluent", "diversity among fluent"),
            ("fluency_mean", "fluency (mean log-lik / token)"), ("fluent_fraction", "fluent fraction"),
            ("same_as_unsteered_fraction", "identical to unsteered"),
            ("distance_to_unsteered_mean", "distance to unsteered")]
    cols = [(s, p) for p in ("train", "eval") for s in ("learned", "random") if m.get(s, {}).get(p)]
    head = "".join(f"<th>{_e(s)} · {_e(p)} prompts</th>" for s, p in cols)
    obj = m.get("objective", {})
    body = ("<tr><td>objective (mean)</td>" + "".join(
        f"<td class=num>{_fmt(obj.get(s + '_mean')) if p == 'train' else '–'}</td>" for s, p in cols) + "</tr>")
    for k, label in keys:
        body += f"<tr><td>{_e(label)}</td>" + "".join(f"<td class=num>{_fmt(m[s][p].get(k))}</td>"
                                                      for s, p in cols) + "</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _completion_table(rows: list[dict]) -> str:
    out = "<table><tr><th>prompt</th><th>sample</th><th>completion</th><th>fluency</th></tr>"
    for r in rows:
        flag = "" if r["fluent"] else " class=bad"
        out += (f"<tr><td>{_e(r['prompt'][:60])}</td><td class=num>{r['sample']}</td>"
                f"<td><pre>{_e(r['text'])}</pre></td><td class=num{flag}>{_fmt(r['fluency'])}</td></tr>")
    return out + "</table>"


def render_report(res: "MelboResult") -> str:
    cfg, m = res.config, res.metrics
    prompts = list(res.prompts.texts)
    eval_prompts = list(res.eval_config.eval_prompts) if res.eval_config else []
    kind = "adapters" if res.adapters else "vectors"
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>MELBO report</title><style>{_CSS}</style>"
             f"</head><body><h1>MELBO: unsupervised steering {kind}</h1>"]
    radius = m.get("radius", {})
    facts = [("model", res.model.get("model")), ("family", res.model.get("family")),
             ("perturbation", f"{cfg.kind} added to mlp_out.{res.source}"),
             ("target", f"resid_post.{res.target}"), ("R", f"{res.radius:.4g} ({radius.get('chosen_by', 'given')}; "
                                                          f"residual norm {radius.get('residual_norm', 0):.4g})"),
             ("p, q", f"{cfg.p:g}, {cfg.q:g}"), ("positions", cfg.positions), ("orthogonal", cfg.ortho),
             (kind, len(res.vectors or res.adapters)), ("steps", cfg.steps),
             ("chat template", "yes" if cfg.chat else "no (raw)"),
             ("speed", f"{m.get('vector_steps_per_second', float('nan')):.3g} vector-steps/s"),
             ("time", ", ".join(f"{k} {v:.1f} s" for k, v in m.get("seconds", {}).items()))]
    parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts) + "</table>")
    parts.append("<h2>Prompts</h2><ol start=0>" + "".join(f"<li><pre>{_e(p)}</pre></li>" for p in prompts) + "</ol>")
    if eval_prompts:
        parts.append("<p>Held-out prompts (generalisation):</p><ol start=0>"
                     + "".join(f"<li><pre>{_e(p)}</pre></li>" for p in eval_prompts) + "</ol>")
    parts.append("<h2>Learned vs random vectors</h2><p class=muted>Random vectors have the same norm R; the seed "
                 "reports they 'typically lead to uninteresting re-phrasings'. Fluent = mean token log-likelihood "
                 f"within {res.eval_config.fluency_margin if res.eval_config else '–'} nats of the unsteered "
                 "completion's, and not a loop (at least "
                 f"{res.eval_config.min_distinct if res.eval_config else '–'} of its token trigrams distinct, or "
                 "as many as the unsteered completion's).</p>" + _summary_table(res))
    parts.append(f"<figure>{_objective_plot(res)}</figure><figure>{_fluency_plot(res)}</figure>")
    if res.sweep:
        parts.append("<h2>Choosing R</h2><p class=muted>Each radius trained "
                     f"{res.sweep['vectors_per_radius']} vectors for {res.sweep['steps']} steps; the score is the "
                     "mean pairwise cosine distance of completions, counting pairs with a non-fluent completion "
                     "as 0." + _extension_note(res.sweep) + "</p>" + f"<figure>{_sweep_plot(res.sweep)}</figure>")
        parts.append("<table><tr><th>R</th><th>score</th><th>fluent fraction</th><th>objective</th></tr>" + "".join(
            f"<tr><td class=num>{c['radius']:.4g}</td><td class=num>{_fmt(c['diversity_fluent'])}</td>"
            f"<td class=num>{_fmt(c['fluent_fraction'])}</td><td class=num>{_fmt(c['objective_mean'])}</td></tr>"
            for c in res.sweep["curve"]) + "</table>")
    parts.append(f"<h2>Training</h2><figure>{_curves_plot(res)}</figure>")
    base = [r for r in res.completions if r["set"] == "unsteered"]
    parts.append("<h2>Unsteered completions</h2>" + _completion_table(base))
    if res.clusters:
        cl = res.clusters
        sil = f", silhouette {cl['silhouette']:.3f}" if cl["silhouette"] is not None else ""
        parts.append(f"<h2>Behaviours: {cl['k']} cluster(s){_e(sil)}</h2><p class=muted>Vectors grouped by the "
                     "embeddings of their greedy completions; read one representative per cluster.</p>")
        for c in cl["clusters"]:
            comps = "".join(f"<p class=muted>prompt {i}:</p><pre>{_e(t)}</pre>"
                            for i, t in enumerate(c["representative_completions"]))
            parts.append(f"<div class=card><b>cluster {c['cluster']}</b> · {c['size']} {kind} "
                         f"({_e(', '.join(map(str, c['vectors'])))}) · representative #{c['representative']} · "
                         f"objective {_fmt(c['mean_objective'])} · fluency {_fmt(c['mean_fluency'])}{comps}</div>")
    for set_name in ("learned", "random"):
        rows = [r for r in res.completions if r["set"] == set_name]
        if not rows:
            continue
        parts.append(f"<h2>All completions: {set_name}</h2>")
        for j in sorted({r["vector"] for r in rows}):
            mine = [r for r in rows if r["vector"] == j]
            obj = mine[0].get("objective")
            for pset in ("train", "eval"):
                sub = [r for r in mine if r["prompts"] == pset]
                if sub:
                    parts.append(f"<details><summary>{set_name} #{j} · {pset} prompts"
                                 f"{' · objective ' + _fmt(obj) if obj is not None and pset == 'train' else ''}"
                                 f"</summary>{_completion_table(sub)}</details>")
    parts.append("<h2>Files</h2><p class=muted>config.json, vectors/ (SteeringVector: hook mlp_out), random_vectors/,"
                 " completions.jsonl, metrics.json, clusters.json, report.html</p></body></html>")
    return "\n".join(parts)


__all__ = ["render_report"]
