"""Compose the analyses into run folders: ``probe_run`` (store -> metrics + bundle) and ``run_all``.

Run folder::

    RUN/manifest.json     riskscope version, time, model, dataset summary, config
    RUN/store/            activation store (docs/store.md)
    RUN/metrics.json      per (hook, layer) results with controls (docs/metrics.md)
    RUN/predictions.jsonl out-of-fold scores of the chosen probe, one line per text
    RUN/probe/            the chosen probe refitted on all rows (bundle.json + safetensors)
    RUN/neurons.json      neuron ranking, clamping effects with random controls (riskscope.analyses)
    RUN/ask.json          ask-the-model baselines on the probes' folds
    RUN/traces.json       per-token probe scores and gradient x input
    RUN/vectors/          diff-of-means risk vector: .safetensors + .json, and a llama.cpp .gguf
    RUN/caution.json      heightened-caution steering demo against a same-norm random vector
    RUN/report.html       self-contained report
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from .._version import __version__
from .._io import atomic_text, iter_jsonl
from ..errors import RiskscopeError, StoreError
from ..probes import LogisticProbe, ProbeConfig, evaluate_layers
from ..probes import Probe
from ..data import Store


@dataclass(frozen=True)
class ProbeRunConfig:
    """How ``riskscope probe`` trains and evaluates probes on a store."""

    folds: int = 5
    """Outer cross-validation folds, grouped by pair."""
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    """Probe weight penalty."""
    target: Literal["binary", "category", "severity"] = "binary"
    """What to predict: risky vs benign, the category, or the severity of risky texts."""
    hooks: tuple[str, ...] | None = None
    """Restrict to these hooks (default: every hook in the store)."""
    hook: str | None = None
    """Hook of the probe to bundle (default: the best by cross-validated AUC)."""
    layer: int | None = None
    """Layer of the probe to bundle (default: the best); negative counts from the end."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of pairs for confidence intervals."""
    seed: int = 0
    """Seed for folds, shuffled labels and bootstrap."""

    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(folds=self.folds, penalty=self.penalty, target=self.target,
                           n_bootstrap=self.n_bootstrap, seed=self.seed)




def _store_path(path: Path) -> Path:
    return path / "store" if (path / "store" / "manifest.json").is_file() else path


def _targets(store: Store, target: str) -> np.ndarray:
    rows = store.rows
    if target == "binary":
        return store.labels
    if target == "category":
        cats = [r.get("category") for r in rows]
        if any(c is None for c in cats):
            raise RiskscopeError("--target category needs a category on every row of the dataset")
        return np.asarray(cats)
    sev = [r.get("severity") if r["label"] == 1 else None for r in rows]
    if all(s is None for s in sev):
        raise RiskscopeError("--target severity needs severities on the risky rows of the dataset")
    return np.array([np.nan if s is None else float(s) for s in sev])


def probe_run(path: str | Path, out: str | Path | None, cfg: ProbeRunConfig,
              status: Callable[[str], None] | None = None) -> dict:
    """Evaluate probes on every (hook, layer) of a store and write metrics, predictions and the bundle."""
    path = Path(path)
    store = Store.open(_store_path(path))
    out = Path(out) if out is not None else (path if store.root != path else store.root.parent)
    points = [p for p in store.points if cfg.hooks is None or p.hook in cfg.hooks]
    if not points:
        raise StoreError(f"{store.root} holds none of the hooks {list(cfg.hooks or [])}; it has "
                         f"{sorted({p.hook for p in store.points})}")
    chosen = None
    if cfg.hook is not None or cfg.layer is not None:
        hook = cfg.hook or points[0].hook
        layers = sorted({p.layer for p in points if p.hook == hook})
        if not layers:
            raise StoreError(f"--hook {hook}: the store has no such hook ({sorted({p.hook for p in points})})")
        n_model = store.manifest["model"]["n_layers"]
        layer = layers[-1] if cfg.layer is None else (cfg.layer if cfg.layer >= 0 else n_model + cfg.layer)
        if layer not in layers:
            raise StoreError(f"--layer {cfg.layer} is not in the store; {hook} layers are {layers[0]}..{layers[-1]}")
        chosen = (hook, layer)

    y = _targets(store, cfg.target)
    groups = np.array([p if p is not None else r["id"] for p, r in zip(store.pair_ids, store.rows)])
    if status:
        status(f"fitting probes on {len(points)} hook points x {cfg.folds} folds")
    t0 = time.perf_counter()
    acts = {(p.hook, p.layer): store.read(p) for p in points}
    ev = evaluate_layers(acts, y, groups, cfg.probe_config(), texts=store.texts)
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
    out.mkdir(parents=True, exist_ok=True)

    if cfg.target == "binary":
        oof = np.asarray(best.oof_scores, dtype=np.float64)
        prob = 1.0 / (1.0 + np.exp(-oof))
        lines = []
        for r, s, f in zip(store.rows, prob, ev.folds):
            lines.append(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"],
                                     "category": r.get("category"), "severity": r.get("severity"),
                                     "pair_id": r.get("pair_id"), "score": round(float(s), 6), "fold": int(f)},
                                    ensure_ascii=False))
        C = float(np.median(best.C_per_fold))
        X = store.read(f"{best.hook}.{best.layer}")
        est = LogisticProbe(penalty=cfg.penalty, C=C).fit(X, store.labels)
        bundle = Probe(estimator=est, hook=best.hook, layer=int(best.layer),
                       model_id=store.manifest["model"]["model"], weight_hash=store.manifest["model"]["weight_hash"],
                       positions=store.manifest["positions"] if isinstance(store.manifest["positions"], str)
                       else tuple(store.manifest["positions"]),
                       meta={"dataset": store.manifest["dataset"], "C": C, "cv": best.to_dict(),
                             "store": str(store.root)})
        bundle.save(out / "probe")
        atomic_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
    atomic_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


@dataclass(frozen=True)
class RunConfig:
    """Everything ``riskscope run`` does: cache, probe, report."""

    out: str = "runs/default"
    """Run folder."""
    model: str = "default"
    """Model spec for ``load_model``."""
    dataset: str = "cyber_risk_pairs"
    """Dataset name or file."""
    limit: int | None = None
    """First N pairs only."""
    layers: str = "all"
    """Layers to cache and probe."""
    hooks: str = "resid_post,mlp_neurons"
    """Hook points to cache and probe."""
    positions: str = "last"
    """Token reduction."""
    store_dtype: str = "float32"
    """Storage dtype of the activations."""
    batch_size: int = 32
    """Texts per forward."""
    dtype: str = "float32"
    """Model dtype."""
    device: str = "cpu"
    """Model device."""
    probe: ProbeRunConfig = ProbeRunConfig()
    """Probe settings."""
    analyses: tuple[str, ...] = ("neurons", "effects", "ask", "traces", "vectors", "caution")
    """Live-model analyses run after the probes (:data:`ANALYSES`); empty = none."""
    report: bool = True
    """Write report.html."""


ANALYSES = ("neurons", "effects", "ask", "traces", "vectors", "caution")
"""What ``riskscope run`` runs after the probes (``--skip`` removes some): neuron ranking, clamping
effects with random controls, the ask-the-model baseline, per-token traces, the diff-of-means risk
vector (+ control-vector GGUF) and the heightened-caution steering demo."""


def parse_skip(skip: str | Sequence[str] | None) -> tuple[str, ...]:
    """The analyses left after removing ``skip`` (comma-separated names, or ``all``)."""
    names = [x.strip() for x in (skip.split(",") if isinstance(skip, str) else (skip or ())) if x.strip()]
    if "all" in names:
        return ()
    bad = [x for x in names if x not in ANALYSES]
    if bad:
        raise RiskscopeError(f"--skip {bad[0]!r}: not an analysis; choose from {', '.join(ANALYSES)} or all")
    return tuple(a for a in ANALYSES if a not in names)


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
    """Run :func:`riskscope.analyses.run_analyses` on a finished run folder with the probes' folds.

    ``analyses`` names the parts (:data:`ANALYSES`); ``config`` overrides other
    :class:`~riskscope.analyses.AnalysisConfig` fields (e.g. ``ask_pairs=None``).
    """
    from ._analyses import AnalysisConfig, run_analyses

    run = Path(run)
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise RiskscopeError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    store = Store.open(_store_path(run))
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    if metrics is not None and metrics.get("target", "binary") != "binary":
        raise RiskscopeError(f"{metrics_path}: the analyses need a binary (risky vs benign) run, "
                             f"not target {metrics.get('target')!r}")
    cfg = AnalysisConfig(neurons="neurons" in analyses, neuron_effects="effects" in analyses, ask="ask" in analyses,
                         traces="traces" in analyses, vectors="vectors" in analyses, caution="caution" in analyses,
                         **config)
    return run_analyses(lm, run, store=store, metrics=metrics, folds=run_folds(run, store), config=cfg,
                        progress=progress)


def write_run_manifest(run: Path, lm, data, cfg: RunConfig) -> None:
    run.mkdir(parents=True, exist_ok=True)
    manifest = {"riskscope_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "model": lm.describe(), "dataset": data.summary(), "config": asdict(cfg), "store": "store"}
    atomic_text(run / "manifest.json", json.dumps(manifest, indent=1, default=str))


__all__ = ["ANALYSES", "ProbeRunConfig", "RunConfig", "analyze_run", "parse_skip", "probe_run", "run_folds",
           "write_run_manifest"]
