"""``riskscope probe``, ``score``, ``report`` and ``run`` (the main job): configs in, the Python API does the work."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import _common as c
from ..errors import RiskscopeError
from ..pipeline import ProbeRunConfig, RunConfig

# Per target: the metric that ranks layers, and the table's columns (label, metrics.json field).
# The field names are those of the probes' results (riskscope.probes: LayerResult, CategoryLayerResult,
# SeverityLayerResult .to_dict()), documented in docs/metrics.md.
TABLE_COLUMNS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "binary": ("auc", (("AUC", "auc"), ("95% CI", "auc_ci"), ("pair acc", "pair_accuracy"),
                       ("shuffled AUC", "shuffled_auc"))),
    "category": ("auc", (("macro AUC", "auc"), ("macro F1", "macro_f1"), ("F1 95% CI", "macro_f1_ci"),
                         ("shuffled AUC", "shuffled_auc"), ("shuffled F1", "shuffled_macro_f1"))),
    "severity": ("spearman", (("Spearman rho", "spearman"), ("95% CI", "spearman_ci"),
                              ("shuffled rho", "shuffled_spearman"))),
}


def _fmt(x) -> str:
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return "n/a" if x is None else f"{x:.3f}"


def summary_table(metrics: dict, top: int = 8) -> None:
    """The best ``top`` layers of a ``metrics.json`` body, with intervals and controls, on stdout."""
    from rich.table import Table

    target = metrics.get("target", "binary")
    key, columns = TABLE_COLUMNS.get(target, TABLE_COLUMNS["binary"])
    rows = sorted(metrics["results"], key=lambda r: -(r.get(key) if r.get(key) is not None else -1))[:top]
    t = Table(title=f"top layers ({target}, {metrics.get('folds')}-fold CV grouped by pair)")
    t.add_column("hook")
    t.add_column("layer", justify="right")
    for label, _ in columns:
        t.add_column(label, justify="right")
    for r in rows:
        t.add_row(r["hook"], str(r["layer"]), *(_fmt(r.get(name)) for _, name in columns))
    c.out.print(t)
    lex = metrics.get("lexical")
    if lex:
        c.out.print(f"lexical baseline (TF-IDF 1-2 gram LR, same folds): AUC {_fmt(lex.get('auc'))}, "
                    f"pair accuracy {_fmt(lex.get('pair_accuracy'))}")


def probe(
    path: Path = typer.Argument(..., help="run folder (with store/) or an activation store"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="where to write results (default: the run "
                                           "folder)"),
    folds: int = c.FoldsOpt,
    penalty: str = c.PenaltyOpt,
    target: str = c.TargetOpt,
    hooks: Optional[str] = typer.Option(None, help="only these hooks (comma list); default all in the store"),
    hook: Optional[str] = typer.Option(None, help="hook of the probe to bundle (default: best by CV score)"),
    layer: Optional[int] = typer.Option(None, help="layer of the probe to bundle (default: best); negative ok"),
    n_bootstrap: int = c.BootstrapOpt,
    seed: int = c.SeedOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Train per-layer probes with grouped CV, controls and CIs; write metrics.json, predictions and the bundle."""
    from ..pipeline import ProbeRunConfig, probe_run

    cfg = ProbeRunConfig(folds=folds, penalty=penalty, target=target, n_bootstrap=n_bootstrap, seed=seed,
                         hooks=hooks or None, hook=hook, layer=layer)
    with c.err.status("fitting probes ..."):
        metrics = probe_run(path, out_dir, cfg)
    if json_out:
        c.print_json({k: metrics[k] for k in ("best", "chosen", "saved", "lexical", "seconds") if k in metrics})
    else:
        summary_table(metrics)
        recipe_line(metrics)


def score(
    texts: list[str] = typer.Argument(None, help="texts to score (or use --input)"),
    probe_path: Path = typer.Option(..., "--probe", "-p", help="run folder or probe bundle directory"),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL with 'text' and optional 'id'"),
    output: Optional[Path] = typer.Option(None, "--output", help="write JSONL here instead of stdout"),
    batch_size: int = c.BatchOpt,
    truncate: bool = c.TruncateOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: Optional[bool] = c.RunTrustOpt,
    module_paths: Optional[str] = c.RunPathsOpt,
) -> None:
    """Score texts with a saved probe: probability of risk per text."""
    ids, items = _score_inputs(texts, input_file)  # bad input fails before anything loads
    if batch_size < 1:
        raise RiskscopeError(f"--batch-size must be >= 1, got {batch_size}")
    if output is not None:
        from .._io import check_output_file

        check_output_file(output, "--output")
    from ..pipeline import run_model_settings
    from ..probes import Probe

    probe_obj = Probe.load(probe_path)
    run_dir = probe_path if (probe_path / "probe").is_dir() else probe_path.parent
    recorded = run_model_settings(run_dir)
    lm = c.load_lm(probe_obj.model_id, dtype, device,
                   recorded.get("trust_remote_code", False) if trust_remote_code is None else trust_remote_code,
                   module_paths if module_paths is not None else recorded.get("module_paths"))
    probe_obj.check(lm)
    scores = probe_obj.score(items, lm=lm, batch_size=batch_size, truncate=truncate)
    if input_file is None and output is None:
        for text, s in zip(items, scores):
            c.out.print(f"{s:.4f}\t{text}", highlight=False, soft_wrap=True, markup=False)
        return
    lines = "".join(json.dumps({"id": i, "score": round(float(s), 6)}) + "\n" for i, s in zip(ids, scores))
    if output is None:
        sys.stdout.write(lines)
    else:
        from .._io import atomic_text

        atomic_text(output, lines)
        c.err.print(f"wrote {len(ids)} scores to {output}")


def _score_inputs(texts: Optional[list[str]], input_file: Optional[Path]) -> tuple[list, list[str]]:
    from .._io import iter_jsonl

    if input_file is None:
        if not texts:
            raise RiskscopeError("give texts to score as arguments or --input FILE.jsonl")
        return list(range(len(texts))), list(texts)
    try:
        raw = input_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RiskscopeError(f"{input_file}: not UTF-8 (byte {e.start})") from None
    ids, items = [], []
    for n, rec in iter_jsonl(raw, str(input_file), objects=False):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"].strip():
            raise RiskscopeError(f"{input_file}:{n}: field 'text' is missing, empty or not a string")
        ids.append(rec.get("id", n))
        items.append(rec["text"])
    if not items:
        raise RiskscopeError(f"{input_file}: no rows to score (the file is empty)")
    return ids, items


def report(
    run_dir: Path = typer.Argument(..., help="run folder"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default RUN/report.html)"),
) -> None:
    """Write the self-contained HTML report of a run folder."""
    from ..report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise RiskscopeError(f"{run_dir} has no metrics.json; run `riskscope probe {run_dir}` first")
    c.out.print(f"report: {write_report(run_dir, out_file)}")


def run(
    out_dir: Path = typer.Option(Path(c.default(RunConfig, "out")), "--out", "-o",
                                 help="run folder (resumed if it holds an unfinished run of the same inputs); with "
                                      "several --model, the folder of one run per model and comparison.html"),
    models: list[str] = typer.Option([c.default(RunConfig, "model")], "--model", "-m",
                                     help=c.MODEL_HELP + "; repeat for one run per model and a comparison page"),
    dataset: str = c.DatasetOpt,
    limit: Optional[int] = c.LimitOpt,
    layers: str = c.LayersOpt,
    hooks: str = c.HooksOpt,
    positions: str = typer.Option(c.default(RunConfig, "positions"), help="last | mean | token indices like 0,-1"),
    readouts: str = typer.Option("", "--readouts", help="readouts cached from the same forward and competing for "
                                 "the recipe: last,mean,max,span (default: last,mean,span with --positions last)"),
    readout_hooks: str = typer.Option(c.default(RunConfig, "readout_hooks"), "--readout-hooks",
                                      help="hooks whose points get the readouts beyond last"),
    top_k: int = typer.Option(c.default(ProbeRunConfig, "top_k"), "--top-k",
                              help="layers averaged in a layer-set recipe (< 2: no layer sets)"),
    no_stack: bool = typer.Option(False, "--no-stack", help="no recipe stacking the lexical model"),
    store_dtype: str = c.StoreDTypeOpt,
    batch_size: int = c.BatchOpt,
    chunk_rows: int = c.ChunkRowsOpt,
    truncate: bool = c.TruncateOpt,
    folds: int = c.FoldsOpt,
    penalty: str = c.PenaltyOpt,
    target: str = c.TargetOpt,
    n_bootstrap: int = c.BootstrapOpt,
    seed: int = c.SeedOpt,
    skip: str = typer.Option("", "--skip", help=c.SKIP_HELP + ", or all (they need --target binary)"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: bool = c.TrustOpt,
    module_paths: Optional[str] = c.PathsOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """The main job: cache activations (several readouts from one forward), choose the probe recipe by nested
    cross-validation against the lexical baseline, run the live-model analyses (neurons with random controls,
    ask-the-model baseline, per-token traces, risk vector + steering demo), write the report. Same as the
    Python API's riskscope.run(RunConfig(...))."""
    from ..pipeline import model_folder, parse_skip

    model = models[0] if models else "default"
    many = len(models) > 1
    cfg = RunConfig(out=out_dir / model_folder(model) if many else out_dir, model=model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                    module_paths=module_paths, dataset=dataset, limit=limit, layers=layers, hooks=hooks,
                    positions=positions, readouts=readouts or None, readout_hooks=readout_hooks,
                    store_dtype=store_dtype, batch_size=batch_size, chunk_rows=chunk_rows,
                    truncate=truncate, analyses=parse_skip(skip), report=not no_report,
                    probe=ProbeRunConfig(folds=folds, penalty=penalty, target=target, n_bootstrap=n_bootstrap,
                                         seed=seed, top_k=top_k, stack_lexical=not no_stack))
    from ..pipeline import run as run_job

    if many:
        from ..pipeline import model_configs, run_models

        model_configs(cfg, models, out_dir)  # every cheap check before the first model loads
        with c.Steps() as steps:
            done = run_models(cfg, models, out_dir, load=lambda k: c.load_lm(k.model, dtype, device,
                                                                               trust_remote_code, module_paths),
                              status=steps.status, progress=steps.advance)
        if json_out:
            c.print_json({"runs": [str(r.run_dir) for r in done.runs], "comparison": str(done.comparison_html),
                          "models": json.loads(done.comparison_json.read_text())["models"]})
            return
        for r in done.runs:
            c.out.print(f"[bold]{r.config.model}[/bold]", highlight=False)
            recipe_line(r.metrics)
        c.out.print(f"comparison: [bold]{done.comparison_html}[/bold]")
        return
    lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    with c.Steps() as steps:
        res = run_job(cfg, lm, status=steps.status, progress=steps.advance)
    for note in res.notes:
        c.err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    st = res.cache
    cache = {"store": str(res.store.root), "rows": len(res.store.rows), "points": res.store.manifest["points"],
             "chunks_written": st.chunks_written, "chunks_reused": st.chunks_done_before, "tokens": st.tokens,
             "padded_fraction": st.padded_fraction, "seconds": st.seconds}
    files = res.analyses.files if res.analyses is not None else {}
    if json_out:
        rec = res.metrics.get("recipe") or {}
        c.print_json({"run": str(res.run_dir), "cache": cache, "best": res.metrics["best"],
                      "lexical": res.metrics.get("lexical"), "saved": res.metrics.get("saved"),
                      "recipe": {k: rec.get(k) for k in ("chosen", "best_activations", "nested",
                                                         "nested_activations")} if rec else None,
                      "analyses": files, "notes": list(res.notes),
                      "report": str(res.report) if res.report else None, "seconds": res.seconds})
        return
    summary_table(res.metrics)
    recipe_line(res.metrics)
    if files:
        c.out.print("analyses: " + ", ".join(sorted({Path(f).name for f in files.values()})))
    c.out.print(f"run folder: [bold]{res.run_dir}[/bold]" +
                (f"   report: [bold]{res.report}[/bold]" if res.report else ""))


def recipe_line(metrics: dict) -> None:
    """One line on the recipe chosen by nested CV and its ΔAUC against the lexical model."""
    rec = metrics.get("recipe") or {}
    chosen, nested = rec.get("chosen") or {}, rec.get("nested")
    if not chosen:
        return
    line = f"recipe: {chosen.get('name')} (CV AUC {chosen.get('auc', float('nan')):.3f})"
    for label, n in (("nested", nested), ("activations only", rec.get("nested_activations"))):
        if isinstance(n, dict) and (label == "nested" or chosen.get("uses_lexical")):
            lo, hi = n.get("delta_ci") or (None, None)
            line += (f"; {label}: AUC {n['auc']:.3f}, ΔAUC vs lexical {n['delta_auc']:+.3f} "
                     f"[{lo if lo is None else f'{lo:+.3f}'}, {hi if hi is None else f'{hi:+.3f}'}]")
    c.out.print(line, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``probe``, ``score``, ``report`` and ``run`` to ``app``."""
    app.command("probe")(probe)
    app.command("score")(score)
    app.command("report")(report)
    app.command("run")(run)


__all__ = ["TABLE_COLUMNS", "probe", "register", "report", "run", "score", "summary_table"]
