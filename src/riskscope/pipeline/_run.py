"""The main job as one call: ``run(RunConfig(...)) -> RunResult``.

Steps: load the model -> cache activations (:func:`riskscope.data.cache_activations`) -> probes
(:func:`riskscope.probes.evaluate_layers`) -> analyses (:func:`run_analyses`) -> report. Results pass from step
to step in memory (the store, the evaluation and its folds, the fitted probe, the risk vector); each file is
written once, and the run manifest last, so a folder without ``manifest.json`` holds an unfinished run (run
the same config again to resume it: the store keeps its finished chunks).

>>> import riskscope as rs                                                    # doctest: +SKIP
>>> res = rs.run(rs.RunConfig(out="runs/quick", limit=20, layers="20-29"))   # doctest: +SKIP
>>> res.metrics["best"], res.report                                          # doctest: +SKIP
({'hook': 'mlp_neurons', 'layer': 21}, PosixPath('runs/quick/report.html'))
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .._io import atomic_json, atomic_text
from .._version import __version__
from ..data import CacheConfig, CacheStats, Store, cache_activations, check_store
from ..hooks import HookPoint
from ..models import LoadedModel, load_model
from ..probes import Probe, ProbeEvaluation
from ..report import load_run, render
from ._analyses import AnalysisConfig, AnalysisOutputs, run_analyses
from ._config import RunConfig
from ._folder import analysis_switches, check_run_folder
from ._parse import parse_hooks, parse_layers, parse_positions
from ._probe import fit_probes, write_probe_outputs

RUN_FORMAT = "riskscope-run/1"


@dataclass(frozen=True, eq=False)
class RunResult:
    """What :func:`run` did, in memory; every field equals what the run folder holds."""

    run_dir: Path
    """The run folder."""
    config: RunConfig
    """The configuration that ran."""
    store: Store
    """The activation store (``RUN/store``)."""
    cache: CacheStats
    """What the cache step did: chunks written and reused, tokens, padded fraction, seconds."""
    metrics: dict
    """``metrics.json``: per (hook, layer) results with controls, best and chosen point (docs/metrics.md)."""
    evaluation: ProbeEvaluation
    """Every probe result with its arrays, and the outer fold of each row (``evaluation.folds``)."""
    probe: Probe | None
    """The best (or chosen) binary probe refitted on all rows (``RUN/probe``); None for other targets."""
    analyses: AnalysisOutputs | None
    """The live-model analyses (neurons, ask, traces, vector, caution); None when none ran."""
    report: Path | None
    """``RUN/report.html``, or None with ``report=False``."""
    files: dict[str, str]
    """Every file written, by name (``manifest`` last)."""
    seconds: dict[str, float]
    """Wall seconds per step: ``load_model``, ``cache``, ``probes``, ``analyses``, ``report``."""
    notes: tuple[str, ...] = field(default=())
    """What the run left out, and why (e.g. the analyses of a category or severity target)."""

    @property
    def best(self):
        """The (hook, layer) probe result with the highest cross-validated score."""
        return self.evaluation.best


def hook_points(lm: LoadedModel, layers: str | Sequence[int], hooks: str | Sequence[str]) -> tuple[HookPoint, ...]:
    """Hook points of ``hooks`` x ``layers`` (``all``, ``0,5,-1``, ``10-20`` or indices), layers normalised."""
    if isinstance(layers, str):
        layers = parse_layers(layers, lm.n_layers)
    idx = [lm.layout.layer_index(int(i)) for i in layers]
    return tuple(HookPoint(h, i) for h in parse_hooks(hooks) for i in idx)


def cache_config(lm: LoadedModel, layers: str | Sequence[int] = "all",
                 hooks: str | Sequence[str] = ("resid_post", "mlp_neurons"),
                 positions: str | Sequence[int] = "last", store_dtype: str = "float32", batch_size: int = 32,
                 chunk_rows: int = 256, truncate: bool = False, readouts: Sequence[str] = (),
                 readout_hooks: Sequence[str] | None = None) -> CacheConfig:
    """The :class:`~riskscope.data.CacheConfig` for text-form options (``riskscope cache`` and :func:`run`);
    ``readouts`` beyond ``last`` are stored beside it for the points of ``readout_hooks``."""
    pos = parse_positions(positions) if isinstance(positions, str) else tuple(int(i) for i in positions)
    extra = tuple(r for r in readouts if r != "last")
    return CacheConfig(points=hook_points(lm, layers, hooks), positions=pos, dtype=store_dtype,
                       batch_size=batch_size, chunk_rows=chunk_rows, truncate=truncate, readouts=extra,
                       readout_hooks=tuple(readout_hooks) if readout_hooks is not None else None)


def run(config: RunConfig, lm: LoadedModel | None = None, *, status: Callable[[str], None] | None = None,
        progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Run the main job: cache -> probes -> analyses -> report, into ``config.out``.

    Args:
        config: what to run (validated when it was built).
        lm: an already loaded model to use instead of loading ``config.model`` (it is not modified: hooks are
            scoped, weights and modes untouched).
        status: called with a short line as each step starts.
        progress: called with ``(texts done since the last call, total texts)`` while caching.
    """
    say = status or (lambda msg: None)
    out = Path(config.out)
    data = config.load_data()
    check_run_folder(out, config.inputs(data))  # again: the folder may have changed since the config was built
    notes: list[str] = []
    analyses = config.analyses
    if analyses and config.probe.target != "binary":
        notes.append(f"analyses not run ({', '.join(analyses)}): they need --target binary, not "
                     f"{config.probe.target}")
        analyses = ()
    seconds: dict[str, float] = {}

    def timed(step: str, fn):
        t = time.perf_counter()
        value = fn()
        seconds[step] = round(time.perf_counter() - t, 3)
        return value

    if lm is None:
        say(f"loading model {config.model}")
        lm = timed("load_model", lambda: load_model(
            config.model, dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code,
            module_paths=dict(config.module_paths) if config.module_paths else None, progress=say))
    else:
        seconds["load_model"] = float(lm.info.get("load_seconds", 0.0))
    ccfg = cache_config(lm, config.layers, config.hooks, config.positions, config.store_dtype, config.batch_size,
                        config.chunk_rows, config.truncate, config.readouts, config.readout_hooks)
    check_store(lm, data, out / "store", ccfg)  # a store from other inputs fails here, before any work
    say("caching activations")
    stats = timed("cache", lambda: cache_activations(lm, data, out / "store", ccfg, progress=progress))
    store = Store.open(out / "store")

    fit = timed("probes", lambda: fit_probes(store, config.probe, status=say))
    files = write_probe_outputs(out, fit)

    done = None
    if analyses:
        acfg = AnalysisConfig(**analysis_switches(analyses), folds=config.probe.folds, seed=config.probe.seed,
                              n_bootstrap=config.probe.n_bootstrap)
        done = timed("analyses", lambda: run_analyses(lm, out, store=store, probe=fit.analysis_probe, metrics=fit.metrics,
                                                      folds=fit.evaluation.folds, config=acfg,
                                                      progress=lambda msg: say(f"analyses: {msg}")))
        files.update(done.files)

    manifest = {"format": RUN_FORMAT, "riskscope_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": lm.describe(), "dataset": data.summary(),
                "config": config.to_dict(), "inputs": config.inputs(data), "store": "store",
                "analyses": list(analyses), "notes": notes}
    report = None
    if config.report:
        say("writing report")
        report = timed("report", lambda: _write_report(out, {**manifest, "seconds": dict(seconds)}))
        files["report"] = str(report)
    manifest["seconds"] = seconds
    manifest["files"] = {k: _relative(v, out) for k, v in files.items()}
    files["manifest"] = str(atomic_json(out / "manifest.json", manifest))
    return RunResult(run_dir=out, config=config, store=store, cache=stats, metrics=fit.metrics,
                     evaluation=fit.evaluation, probe=fit.probe, analyses=done, report=report, files=files,
                     seconds=seconds, notes=tuple(notes))


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _write_report(out: Path, manifest: dict) -> Path:
    """``RUN/report.html`` from the run's files and the manifest about to be written (it is written last)."""
    view = dataclasses.replace(load_run(out), manifest=json.loads(json.dumps(manifest, default=str)))
    return atomic_text(out / "report.html", render(view))


__all__ = ["RUN_FORMAT", "RunResult", "cache_config", "hook_points", "run"]
