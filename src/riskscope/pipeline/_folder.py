"""Run folders on disk: what a run folder may hold, what it was made from, and the analyses of an existing one.

Run folder::

    RUN/store/            activation store (docs/store.md)
    RUN/metrics.json      per (hook, layer) results with controls (docs/metrics.md)
    RUN/predictions.jsonl out-of-fold scores of the chosen probe, one line per text
    RUN/probe/            the chosen probe refitted on all rows (bundle.json + safetensors)
    RUN/neurons.json      neuron ranking, clamping effects with random controls
    RUN/ask.json          ask-the-model baselines on the probes' folds
    RUN/traces.json       per-token probe scores and gradient x input
    RUN/vectors/          diff-of-means risk vector: .safetensors + .json, and a llama.cpp .gguf
    RUN/caution.json      heightened-caution steering demo against a same-norm random vector
    RUN/report.html       self-contained report
    RUN/manifest.json     riskscope version, time, model, dataset summary, config, inputs, seconds per step;
                          written last, so a folder without it holds an unfinished run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._io import iter_jsonl
from ..data import Store
from ..errors import RiskscopeError
from ._parse import ANALYSES

RUN_FILES = frozenset({"manifest.json", "store", "metrics.json", "predictions.jsonl", "probe", "neurons.json",
                       "ask.json", "traces.json", "vectors", "caution.json", "report.html"})
"""What a run folder holds (besides hidden temporary files)."""

_STORE_INPUTS = {"dataset_digest": "dataset_digest", "positions": "positions", "store_dtype": "dtype",
                 "batch_size": "batch_size", "chunk_rows": "chunk_rows", "truncate": "truncate"}
"""Run inputs (:meth:`RunConfig.inputs`) -> the store fingerprint's names for them."""


def store_path(path: str | Path) -> Path:
    """``RUN/store`` for a run folder, else ``path`` itself."""
    path = Path(path)
    return path / "store" if (path / "store" / "manifest.json").is_file() else path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RiskscopeError(f"{path}: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise RiskscopeError(f"{path}: not a JSON object")
    return data


def check_run_folder(run: Path, inputs: dict) -> None:
    """Refuse ``run`` unless it is new, empty, or a (finished or unfinished) run made from ``inputs``.

    Compares the run manifest's ``inputs`` and the store's fingerprint fields that need no model; the store's
    model fields (weight hash, resolved layers) are checked once the model is loaded.
    """
    if not run.exists():
        return
    if not run.is_dir():
        raise RiskscopeError(f"{run} exists and is not a directory; use another --out")
    other = sorted(p.name for p in run.iterdir() if p.name not in RUN_FILES and not p.name.startswith("."))
    if other:
        raise RiskscopeError(f"{run} is not a run folder (it holds {', '.join(other[:3])}); use an empty or new "
                             f"--out")
    differ: list[str] = []
    if (run / "manifest.json").is_file():
        old = _read_json(run / "manifest.json").get("inputs")
        if isinstance(old, dict):
            differ += [k for k in inputs if k in old and old[k] != inputs[k]]
    if (run / "store" / "manifest.json").is_file():
        made = _read_json(run / "store" / "manifest.json").get("inputs") or {}
        differ += [k for k, s in _STORE_INPUTS.items() if s in made and made[s] != inputs[k] and k not in differ]
    if differ:
        raise RiskscopeError(f"{run} holds a run made from other inputs (differs in: {', '.join(differ)}); use "
                             f"another --out or delete it")


def open_run_store(run: str | Path) -> Store:
    """The store of a run folder (``RUN/store``) or the store at ``run`` itself."""
    run = Path(run)
    if (run / "store" / "manifest.json").is_file():
        return Store.open(run / "store")
    if (run / "manifest.json").is_file() and (run / "rows.jsonl").is_file():
        return Store.open(run)
    raise RiskscopeError(f"{run} is neither a run folder (with store/) nor an activation store")


def run_model_settings(run: str | Path) -> dict:
    """How a run folder's (or store's) model was loaded, as recorded: ``model`` (the resolved model id),
    ``trust_remote_code`` and ``module_paths``; keys are absent when nothing recorded them."""
    run = Path(run)
    found: dict = {}
    for path in (run / "manifest.json", run / "store" / "manifest.json"):
        if not path.is_file():
            continue
        manifest = _read_json(path)
        model = (manifest.get("model") or {}).get("model")
        if model and "model" not in found:
            found["model"] = model
        config = manifest.get("config") or {}
        for key in ("trust_remote_code", "module_paths"):
            if key in config and key not in found:
                found[key] = config[key]
    return found


def run_folds(run: Path, store: Store) -> np.ndarray | None:
    """Each store row's outer fold, as the probes used it (from ``predictions.jsonl``); None if absent."""
    path = run / "predictions.jsonl"
    if not path.is_file():
        return None
    fold = {r.get("id"): r.get("fold") for _, r in iter_jsonl(path.read_text(encoding="utf-8"), str(path))}
    ids = [r["id"] for r in store.rows]
    return np.asarray([fold[i] for i in ids]) if all(fold.get(i) is not None for i in ids) else None


def analyze_run(lm, run: str | Path, analyses: Sequence[str] = ANALYSES, progress: Callable[[str], None] | None = None,
                **config):
    """The analyses of :func:`~riskscope.pipeline.run` on an existing run folder (``riskscope analyze``): reads
    its store, ``metrics.json``, the probes' folds (``predictions.jsonl``) and the bundled probe.

    ``analyses`` names the parts (:data:`ANALYSES`); ``config`` overrides other
    :class:`~riskscope.pipeline.AnalysisConfig` fields (e.g. ``ask_pairs=None``).
    """
    from ._analyses import AnalysisConfig, run_analyses

    run = Path(run)
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise RiskscopeError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    store = Store.open(store_path(run))
    metrics_path = run / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.is_file() else None
    if metrics is not None and metrics.get("target", "binary") != "binary":
        raise RiskscopeError(f"{metrics_path}: the analyses need a binary (risky vs benign) run, "
                             f"not target {metrics.get('target')!r}")
    cfg = AnalysisConfig(**{**analysis_switches(analyses), **config})
    return run_analyses(lm, run, store=store, metrics=metrics, folds=run_folds(run, store), config=cfg,
                        progress=progress)


def analysis_switches(analyses: Sequence[str]) -> dict[str, bool]:
    """:class:`~riskscope.pipeline.AnalysisConfig` switches for analysis names."""
    return {"neurons": "neurons" in analyses, "neuron_effects": "effects" in analyses, "ask": "ask" in analyses,
            "traces": "traces" in analyses, "vectors": "vectors" in analyses, "caution": "caution" in analyses}


__all__ = ["RUN_FILES", "analysis_switches", "analyze_run", "check_run_folder", "open_run_store", "run_folds",
           "run_model_settings", "store_path"]
