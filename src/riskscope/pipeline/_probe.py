"""The probe step: every (hook, layer) of a store -> metrics, out-of-fold predictions and the bundled probe.

:func:`fit_probes` computes in memory; :func:`write_probe_outputs` writes ``metrics.json``,
``predictions.jsonl`` and ``probe/`` (docs/metrics.md); :func:`probe_run` (``riskscope probe``) does both on a
store or run folder on disk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .._io import atomic_text, remove_stale_temps
from ..data import Store
from ..errors import StoreError
from ..probes import LogisticProbe, Probe, ProbeEvaluation, RecipeConfig, RecipeSelection, evaluate_layers, select_recipe
from ._config import ProbeRunConfig
from ._folder import store_path
from ._recipe import readout_results, recipe_oof_probability, recipe_probe
from ._targets import targets


@dataclass(frozen=True, eq=False)
class ProbeOutputs:
    """The probe step's results, in memory: exactly what :func:`write_probe_outputs` writes."""

    evaluation: ProbeEvaluation
    """Every (hook, layer) result, with the outer fold of each row (``evaluation.folds``)."""
    metrics: dict
    """The ``metrics.json`` body (docs/metrics.md)."""
    probe: Probe | None
    """The chosen binary probe or recipe refitted on all rows (``probe/``); None for category and severity."""
    predictions: tuple[dict, ...] | None
    """Out-of-fold score and fold of every row (``predictions.jsonl``); None for category and severity."""
    selection: RecipeSelection | None = None
    """Every recipe candidate and the nested comparison with the lexical model (binary target)."""
    analysis_probe: Probe | None = None
    """The single-point probe the live-model analyses read: the best (or chosen) point of the store's own
    positions, refitted on all rows."""


def _chosen_point(store: Store, points, cfg: ProbeRunConfig) -> tuple[str, int] | None:
    if cfg.hook is None and cfg.layer is None:
        return None
    hook = cfg.hook or points[0].hook
    layers = sorted({p.layer for p in points if p.hook == hook})
    if not layers:
        raise StoreError(f"--hook {hook}: the store has no such hook ({sorted({p.hook for p in points})})")
    n_model = store.manifest["model"]["n_layers"]
    layer = layers[-1] if cfg.layer is None else (cfg.layer if cfg.layer >= 0 else n_model + cfg.layer)
    if layer not in layers:
        raise StoreError(f"--layer {cfg.layer} is not in the store; {hook} layers are {layers[0]}..{layers[-1]}")
    return hook, layer


def fit_probes(store: Store, cfg: ProbeRunConfig, status: Callable[[str], None] | None = None) -> ProbeOutputs:
    """Evaluate probes on every (hook, layer) of ``store`` (grouped CV, controls, CIs, lexical baseline) and
    refit the chosen binary probe on all rows."""
    points = [p for p in store.points if cfg.hooks is None or p.hook in cfg.hooks]
    if not points:
        raise StoreError(f"{store.root} holds none of the hooks {list(cfg.hooks or [])}; it has "
                         f"{sorted({p.hook for p in store.points})}")
    chosen = _chosen_point(store, points, cfg)
    y = targets(store.rows, cfg.target)
    groups = np.array([p if p is not None else r["id"] for p, r in zip(store.pair_ids, store.rows)])
    if status:
        status(f"fitting probes on {len(points)} hook points x {cfg.folds} folds")
    t0 = time.perf_counter()
    acts = {(p.hook, p.layer): store.read(p) for p in points}
    primary = store.manifest["positions"]
    readout = primary if primary in ("last", "mean") else "last"
    ev = evaluate_layers(acts, y, groups, cfg.probe_config(), texts=store.texts, readout=readout)
    selection = extra = None
    if cfg.target == "binary":
        extra = readout_results(store, points, y, groups, cfg.probe_config(), cfg.readouts, status)
        pool = [r for r in ev.results if cfg.readouts is None or r.readout in cfg.readouts] + extra
        selection = select_recipe(pool or list(ev.results), y, groups, ev.folds, ev.lexical,
                                  RecipeConfig(top_k=cfg.top_k, stack_lexical=cfg.stack_lexical,
                                               n_bootstrap=cfg.n_bootstrap, seed=cfg.seed))
    seconds = time.perf_counter() - t0

    body = ev.to_dict(arrays=True)
    for r in body["results"]:
        r.pop("oof_scores", None)
    if body.get("lexical"):
        body["lexical"].pop("oof_scores", None)
    best = ev.best if chosen is None else ev.result(*chosen)
    metrics = {"model": store.manifest["model"]["model"], "dataset": store.manifest["dataset"]["name"],
               "n_rows": len(store.rows), "n_pairs": store.manifest["dataset"].get("pairs"), "folds": cfg.folds,
               "seconds": round(seconds, 2), **body, "chosen": {"hook": best.hook, "layer": int(best.layer)}}
    if cfg.target != "binary":
        return ProbeOutputs(evaluation=ev, metrics=metrics, probe=None, predictions=None)

    C = float(np.median(best.C_per_fold))
    est = LogisticProbe(penalty=cfg.penalty, C=C).fit(acts[(best.hook, best.layer)], store.labels)
    positions = store.manifest["positions"]
    point_probe = Probe(estimator=est, hook=best.hook, layer=int(best.layer), model_id=store.manifest["model"]["model"],
                        weight_hash=store.manifest["model"]["weight_hash"],
                        positions=positions if isinstance(positions, str) else tuple(positions),
                        meta={"dataset": store.manifest["dataset"], "C": C, "cv": best.to_dict(),
                              "store": str(store.root)})
    metrics["recipe"] = selection.to_dict()
    metrics["readout_results"] = [r.to_dict() for r in extra]
    if chosen is None:  # the recipe chosen by nested CV, refit on all rows
        probe = recipe_probe(store, selection, [*ev.results, *extra], ev.lexical, cfg.penalty,
                             {"dataset": store.manifest["dataset"], "store": str(store.root)})
        prob = recipe_oof_probability(selection, probe)
        metrics["saved"] = {"kind": "recipe", "name": selection.chosen.name}
    else:  # the point asked for
        probe = point_probe
        prob = 1.0 / (1.0 + np.exp(-np.asarray(best.oof_scores, dtype=np.float64)))
        metrics["saved"] = {"kind": "point", "name": f"{readout} {best.hook}.{best.layer}"}
    predictions = tuple({"id": r["id"], "text": r["text"], "label": r["label"], "category": r.get("category"),
                         "severity": r.get("severity"), "pair_id": r.get("pair_id"), "score": round(float(s), 6),
                         "fold": int(f)} for r, s, f in zip(store.rows, prob, ev.folds))
    return ProbeOutputs(evaluation=ev, metrics=metrics, probe=probe, predictions=predictions, selection=selection,
                        analysis_probe=point_probe)


def write_probe_outputs(out: str | Path, fit: ProbeOutputs) -> dict[str, str]:
    """Write ``probe/`` and ``predictions.jsonl`` (binary target) and ``metrics.json``, each once; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, ("metrics.json", "predictions.jsonl"))  # what a killed earlier run left
    files: dict[str, str] = {}
    if fit.probe is not None:
        files["probe"] = str(fit.probe.save(out / "probe"))
    if fit.predictions is not None:
        lines = [json.dumps(p, ensure_ascii=False) for p in fit.predictions]
        files["predictions"] = str(atomic_text(out / "predictions.jsonl", "\n".join(lines) + "\n"))
    files["metrics"] = str(atomic_text(out / "metrics.json", json.dumps(fit.metrics, indent=1)))
    return files


def probe_run(path: str | Path, out: str | Path | None, cfg: ProbeRunConfig,
              status: Callable[[str], None] | None = None) -> dict:
    """``riskscope probe``: evaluate probes on every (hook, layer) of the store at ``path`` (a store or a run
    folder) and write metrics, predictions and the bundle to ``out`` (default: the run folder)."""
    path = Path(path)
    store = Store.open(store_path(path))
    out = Path(out) if out is not None else (path if store.root != path else store.root.parent)
    fit = fit_probes(store, cfg, status)
    write_probe_outputs(out, fit)
    return fit.metrics


__all__ = ["ProbeOutputs", "fit_probes", "probe_run", "write_probe_outputs"]
