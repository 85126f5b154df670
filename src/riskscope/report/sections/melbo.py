"""The page of a MELBO run folder, from the files ``riskscope.melbo.save_run`` writes.

Reads ``config.json`` and ``metrics.json`` (both required), ``clusters.json`` and
``completions.jsonl``; writes ``report.html`` next to them. All numbers are the run's own.

>>> from riskscope.report import write_melbo_report
>>> write_melbo_report("runs/melbo")                 # doctest: +SKIP
PosixPath('runs/melbo/report.html')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._io import iter_jsonl
from ...errors import RiskscopeError
from ...melbo import EvalConfig, MelboConfig
from .._charts import Chart, new_figure, to_chart
from .._render import Section, fmt_g, number, render_template, section, show, write_html
from .._run import read_json

SUMMARY_KEYS = (("diversity", "diversity (mean pairwise cosine distance)"), ("diversity_fluent", "diversity among fluent"),
                ("fluency_mean", "fluency (mean log-lik / token)"), ("fluent_fraction", "fluent fraction"),
                ("same_as_unsteered_fraction", "identical to unsteered"),
                ("distance_to_unsteered_mean", "distance to unsteered"))


@dataclass(frozen=True)
class MelboRun:
    """What the page reads from a MELBO run folder."""

    path: Path
    """The run folder."""
    config: dict
    """``config.json``."""
    melbo: MelboConfig
    """The training configuration (``config.json: melbo``)."""
    eval: EvalConfig | None
    """The evaluation configuration (``config.json: eval``)."""
    metrics: dict
    """``metrics.json``."""
    clusters: dict | None
    """``clusters.json`` (None when absent or null)."""
    completions: list[dict] | None
    """``completions.jsonl`` rows (None when absent)."""

    @property
    def kind(self) -> str:
        """``adapters`` or ``vectors``."""
        return "adapters" if self.melbo.adapter_rank else "vectors"


def load_melbo_run(out_dir: str | os.PathLike) -> MelboRun:
    """Read a MELBO run folder; a RiskscopeError names the file (and line or field) that is missing or broken."""
    path = Path(out_dir)
    if not path.is_dir():
        raise RiskscopeError(f"{path}: MELBO run folder not found")
    for name in ("config.json", "metrics.json"):
        if not (path / name).is_file():
            raise RiskscopeError(f"{path / name}: not found; run `riskscope melbo --out {path}` first to write it")
    config, metrics = read_json(path / "config.json"), read_json(path / "metrics.json")
    try:
        melbo = MelboConfig.from_dict(config.get("melbo") or {})
        ecfg = EvalConfig.from_dict(config["eval"]) if isinstance(config.get("eval"), dict) else None
    except (RiskscopeError, TypeError, ValueError) as exc:
        raise RiskscopeError(f"{path / 'config.json'}: field 'melbo' or 'eval': {exc}") from None
    clusters = None
    if (path / "clusters.json").is_file():
        text = (path / "clusters.json").read_text(encoding="utf-8")
        clusters = None if text.strip() == "null" else read_json(path / "clusters.json")
    completions = None
    if (path / "completions.jsonl").is_file():
        where = path / "completions.jsonl"
        completions = [row for _, row in iter_jsonl(where.read_text(encoding="utf-8"), str(where))]
    return MelboRun(path, config, melbo, ecfg, metrics, clusters, completions)


# --- charts --------------------------------------------------------------------------------------------------


def _curves_chart(curves_VS: list) -> Chart | None:
    curves = [[number(x) for x in c] for c in curves_VS if isinstance(c, list)]
    if not curves or not curves[0]:
        return None
    fig, ax = new_figure(5.6, 3.2)
    for c in curves:
        ax.plot(c, lw=0.7, alpha=0.5)
    S = min(len(c) for c in curves)
    ax.plot(np.nanmean([c[:S] for c in curves], 0), lw=2, color="k", label="mean")
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.set_title("training curve of every vector")
    ax.legend(loc="lower right")
    return to_chart(fig, "Training curve of every learned vector and their mean", "melbo-curves")


def _objective_chart(objective: dict) -> Chart | None:
    learned = [v for v in map(number, objective.get("learned") or []) if np.isfinite(v)]
    random = [v for v in map(number, objective.get("random") or []) if np.isfinite(v)]
    if not learned:
        return None
    fig, ax = new_figure(4.2, 3.2)
    data, labels = [learned], ["learned"]
    if random:
        data.append(random)
        labels.append("random (same R)")
    ax.boxplot(data)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for k, d in enumerate(data, 1):
        ax.scatter(np.full(len(d), k) + np.linspace(-0.12, 0.12, len(d)), d, s=8, alpha=0.6)
    if min(min(d) for d in data) > 0:
        ax.set_yscale("log")
        ax.set_ylabel("objective (log)")
    else:
        ax.set_ylabel("objective")
    ax.set_title("objective: learned vs random")
    return to_chart(fig, "Objective of the learned vectors against random vectors of the same norm", "melbo-objective")


def _sweep_chart(sweep: dict) -> Chart | None:
    curve = [c for c in sweep.get("curve") or [] if isinstance(c, dict) and number(c.get("radius")) > 0]
    if not curve:
        return None
    r = [number(c["radius"]) for c in curve]
    fig, ax = new_figure(5.6, 3.2)
    ax.plot(r, [number(c.get("diversity_fluent")) for c in curve], "o-", label="diversity among fluent (score)")
    ax.plot(r, [number(c.get("diversity")) for c in curve], "s--", alpha=0.7, label="diversity (all)")
    ax.plot(r, [number(c.get("fluent_fraction")) for c in curve], "^:", alpha=0.7, label="fluent fraction")
    chosen = number(sweep.get("chosen"))
    if np.isfinite(chosen):
        ax.axvline(chosen, color="k", lw=1, ls="--")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(r, [f"{x:.3g}" for x in r])
    ax.set_xlabel("radius R")
    ax.set_title(f"radius sweep: chose R = {fmt_g(chosen)}")
    ax.legend(fontsize=8)
    return to_chart(fig, "Diversity and fluency of completions per radius of the sweep", "melbo-sweep")


def _fluency_chart(rows: list[dict]) -> Chart | None:
    rows = [r for r in rows if r.get("prompts") == "train" and r.get("sample") == 0 and np.isfinite(number(r.get("fluency")))]
    if not rows:
        return None
    fig, ax = new_figure(4.6, 3.2)
    for name in ("learned", "random"):
        vals = [r["fluency"] for r in rows if r.get("set") == name]
        if vals:
            ax.hist(vals, bins=20, alpha=0.55, label=name)
    for r in (x for x in rows if x.get("set") == "unsteered"):
        ax.axvline(r["fluency"], color="k", lw=1)
    ax.set_xlabel("mean log-likelihood per token (unsteered model)")
    ax.set_title("fluency (black: unsteered)")
    if any(r.get("set") in ("learned", "random") for r in rows):
        ax.legend()
    return to_chart(fig, "Fluency of the learned and random vectors' completions", "melbo-fluency")


# --- sections ------------------------------------------------------------------------------------------------


def _completion(r: dict) -> dict:
    return {"prompt": str(r.get("prompt", ""))[:60], "sample": r.get("sample", ""), "text": str(r.get("text", "")),
            "fluency": fmt_g(r.get("fluency")), "fluent": bool(r.get("fluent", True))}


def _facts(run: MelboRun) -> list[tuple[str, str]]:
    cfg, c, m = run.melbo, run.config, run.metrics
    model = c.get("model") if isinstance(c.get("model"), dict) else {}
    radius = m.get("radius") if isinstance(m.get("radius"), dict) else {}
    seconds = m.get("seconds") if isinstance(m.get("seconds"), dict) else {}
    objective = m.get("objective") if isinstance(m.get("objective"), dict) else {}
    n = len(objective.get("learned") or []) or cfg.n_vectors
    facts = [("model", model.get("model")), ("family", model.get("family")),
             ("perturbation", f"{cfg.kind} added to mlp_out.{show(c.get('source'))}"),
             ("target", f"resid_post.{show(c.get('target'))}"),
             ("R", f"{fmt_g(c.get('radius'), 4)} ({radius.get('chosen_by', 'given')}; residual norm "
                   f"{fmt_g(radius.get('residual_norm'), 4)})"),
             ("p, q", f"{cfg.p:g}, {cfg.q:g}"), ("positions", cfg.positions), ("orthogonal", cfg.ortho),
             (run.kind, n), ("steps", cfg.steps), ("chat template", "yes" if cfg.chat else "no (raw)"),
             ("speed", f"{fmt_g(m.get('vector_steps_per_second'))} vector-steps/s"),
             ("time", ", ".join(f"{k} {fmt_g(v, 2)} s" for k, v in seconds.items()))]
    return [(k, str(v)) for k, v in facts if v is not None]


def _summary(run: MelboRun) -> tuple[list[str], list[list[str]]]:
    m = run.metrics
    cols = [(s, p) for p in ("train", "eval") for s in ("learned", "random")
            if isinstance(m.get(s), dict) and m[s].get(p)]
    head = [""] + [f"{s} · {p} prompts" for s, p in cols]
    obj = m.get("objective") if isinstance(m.get("objective"), dict) else {}
    rows = [["objective (mean)"] + [fmt_g(obj.get(s + "_mean")) if p == "train" else "–" for s, p in cols]]
    rows += [[label] + [fmt_g(m[s][p].get(k)) for s, p in cols] for k, label in SUMMARY_KEYS]
    return head, rows


def _extension_note(sweep: dict) -> str:
    n = sweep.get("extended", 0)
    note = (f" The best radius was the top of the grid, so {n} larger one{'s were' if n != 1 else ' was'} tried."
            if isinstance(n, int) and n > 0 else "")
    if sweep.get("at_top"):
        note += (" The chosen R is still the largest tried: diversity may keep rising beyond it "
                 "(raise --grid-extend or pass a wider --radius-grid).")
    return note


def _sets(rows: list[dict], kind: str) -> list[dict]:
    """Learned and random completions, one collapsible block per vector and prompt set."""
    out = []
    for set_name in ("learned", "random"):
        mine_set = [r for r in rows if r.get("set") == set_name]
        blocks = []
        for j in sorted({r.get("vector") for r in mine_set if isinstance(r.get("vector"), int)}):
            mine = [r for r in mine_set if r.get("vector") == j]
            obj = mine[0].get("objective")
            for pset in ("train", "eval"):
                sub = [_completion(r) for r in mine if r.get("prompts") == pset]
                if sub:
                    extra = f" · objective {fmt_g(obj)}" if obj is not None and pset == "train" else ""
                    blocks.append({"summary": f"{set_name} #{j} · {pset} prompts{extra}", "rows": sub})
        if blocks:
            out.append({"name": set_name, "blocks": blocks})
    return out


def melbo_sections(run: MelboRun) -> list[Section]:
    """The sections of a MELBO page, in reading order."""
    m, c, e = run.metrics, run.config, run.eval
    rows = run.completions
    sections = [section("setup", "Setup", "Setup", "melbo_setup", facts=_facts(run),
                        prompts=[str(p) for p in c.get("prompts") or []],
                        eval_prompts=[str(p) for p in (e.eval_prompts if e else ())])]
    head, summary = _summary(run)
    sections.append(section(
        "controls", "Learned vs random", "Learned vs random vectors", "melbo_controls", head=head, rows=summary,
        margin=fmt_g(e.fluency_margin if e else None), min_distinct=fmt_g(e.min_distinct if e else None),
        charts=[ch for ch in (_objective_chart(m.get("objective") or {}), _fluency_chart(rows or [])) if ch]))
    sweep = m.get("radius_sweep")
    if isinstance(sweep, dict):
        sections.append(section(
            "radius", "Choosing R", "Choosing R", "melbo_radius", chart=_sweep_chart(sweep),
            vectors=show(sweep.get("vectors_per_radius")), steps=show(sweep.get("steps")), note=_extension_note(sweep),
            rows=[[fmt_g(x.get("radius"), 4), fmt_g(x.get("diversity_fluent")), fmt_g(x.get("fluent_fraction")),
                   fmt_g(x.get("objective_mean"))] for x in sweep.get("curve") or [] if isinstance(x, dict)]))
    sections.append(section("training", "Training", "Training", "melbo_training",
                            chart=_curves_chart(m.get("training_curves") or [])))
    sections.append(section("unsteered", "Unsteered", "Unsteered completions", "melbo_unsteered",
                            rows=[_completion(r) for r in rows or [] if r.get("set") == "unsteered"],
                            have=rows is not None))
    cl = run.clusters
    if cl:
        sil = number(cl.get("silhouette"))
        title = f"Behaviours: {cl.get('k')} cluster(s)" + (f", silhouette {sil:.3f}" if np.isfinite(sil) else "")
        cards = [{"cluster": x.get("cluster"), "size": x.get("size"), "vectors": ", ".join(map(str, x.get("vectors") or [])),
                  "representative": x.get("representative"), "objective": fmt_g(x.get("mean_objective")),
                  "fluency": fmt_g(x.get("mean_fluency")),
                  "texts": [str(t) for t in x.get("representative_completions") or []]}
                 for x in cl.get("clusters") or [] if isinstance(x, dict)]
        sections.append(section("clusters", "Behaviours", title, "melbo_clusters", cards=cards, kind=run.kind))
    sections.append(section("completions", "All completions", "All completions", "melbo_completions",
                            sets=_sets(rows or [], run.kind), have=rows is not None))
    sections.append(section("files", "Files", "Files", "melbo_files"))
    return sections


def render_melbo(run: MelboRun) -> str:
    """The page of a loaded MELBO run as an HTML string."""
    sections = melbo_sections(run)
    return str(render_template("melbo.html.j2", title="MELBO report", kind=run.kind,
                               nav=[(s.anchor, s.nav) for s in sections], sections=sections))


def melbo_report_html(out_dir: str | os.PathLike) -> str:
    """The page of the MELBO run saved in ``out_dir``, as HTML (``melbo.save_run(..., report=this)``)."""
    run = load_melbo_run(out_dir)
    try:
        return render_melbo(run)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise RiskscopeError(f"{run.path}: unexpected content in the MELBO files ({type(exc).__name__}: {exc})") \
            from None


def write_melbo_report(out_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the page of the MELBO run in ``out_dir`` to ``out_path`` (default ``out_dir/report.html``)."""
    html = melbo_report_html(out_dir)
    return write_html(Path(out_path) if out_path is not None else Path(out_dir) / "report.html", html)


__all__ = ["MelboRun", "load_melbo_run", "melbo_report_html", "melbo_sections", "render_melbo", "write_melbo_report"]
