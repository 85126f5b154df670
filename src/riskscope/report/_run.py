"""Read a run folder (manifest.json, metrics.json, predictions.jsonl) into plain values.

Only ``metrics.json`` is required. Unknown keys are ignored, missing optional
keys become ``None`` or NaN, and every problem the user can fix is raised as a
:class:`~riskscope.errors.RiskscopeError` that names the file, line and field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import iter_jsonl
from ..errors import RiskscopeError
from ..hooks import HOOKS
from ..probes import ProbeConfig

HOOK_ORDER = HOOKS

NAN = float("nan")


@dataclass(frozen=True)
class Curve:
    """A ROC curve: false- and true-positive rates, same length."""

    fpr: np.ndarray
    tpr: np.ndarray


@dataclass(frozen=True)
class LayerResult:
    """Cross-validated metrics of the probe on one hook point; NaN where absent."""

    hook: str
    layer: int
    auc: float = NAN
    auc_ci: tuple[float, float] = (NAN, NAN)
    f1: float = NAN
    accuracy: float = NAN
    pair_accuracy: float = NAN
    shuffled_auc: float = NAN
    roc: Curve | None = None
    extra: dict = field(default_factory=dict)
    """Other scalar keys of the result, shown as extra table columns."""

    @property
    def name(self) -> str:
        return f"{self.hook}.{self.layer}"


@dataclass(frozen=True)
class Baseline:
    """The lexical (bag-of-words) baseline."""

    auc: float = NAN
    pair_accuracy: float = NAN
    roc: Curve | None = None


@dataclass(frozen=True)
class Predictions:
    """Out-of-fold predictions of the best probe, one entry per text (``N`` texts)."""

    label_N: np.ndarray
    """(N,) int 0 = benign, 1 = risky."""
    score_N: np.ndarray
    """(N,) float probability of risky."""
    category: list[str]
    """Category per text ("(none)" when absent)."""
    severity_N: np.ndarray
    """(N,) int severity 0..5, -1 when absent."""
    pair_id: list[str | None]
    text: list[str]
    id: list[str]

    @property
    def groups(self) -> np.ndarray:
        """(N,) resampling unit of each text: its pair id, or its own id when unpaired (as the probes used)."""
        return np.asarray([p if p is not None else i for p, i in zip(self.pair_id, self.id)], dtype=str)

    def __len__(self) -> int:
        return len(self.label_N)


@dataclass(frozen=True)
class Bootstrap:
    """Resampling settings of the pair-bootstrap intervals."""

    n: int
    """Resamples."""
    level: float
    """Coverage, e.g. 0.95."""
    seed: int
    """Seed of the resampling."""


@dataclass(frozen=True)
class Run:
    """Everything the report reads from a run folder."""

    path: Path
    manifest: dict | None
    metrics: dict
    results: tuple[LayerResult, ...]
    lexical: Baseline | None
    best: LayerResult | None
    best_declared: bool
    """False when ``metrics.best`` was missing or unknown and the best AUC was picked instead."""
    predictions: Predictions | None
    predicted: LayerResult | None = None
    """The result whose out-of-fold scores ``predictions.jsonl`` holds (``metrics.chosen``, else the best)."""

    @property
    def bootstrap(self) -> Bootstrap:
        """How metrics.json's intervals were drawn (``metrics.config``), so the report's match them."""
        cfg = self.metrics.get("config") if isinstance(self.metrics.get("config"), dict) else {}
        default = ProbeConfig()
        n, level, seed = cfg.get("n_bootstrap"), cfg.get("ci_level"), cfg.get("seed")
        ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
        return Bootstrap(n if ok_int(n) else default.n_bootstrap,
                         float(level) if isinstance(level, float) and 0 < level < 1 else default.ci_level,
                         seed if ok_int(seed) else default.seed)

    @property
    def hooks(self) -> list[str]:
        """Hooks of the results: known hooks in :data:`~riskscope.hooks.HOOKS` order, then others as seen."""
        seen = list(dict.fromkeys(r.hook for r in self.results))
        return sorted(seen, key=lambda h: (HOOK_ORDER.index(h) if h in HOOK_ORDER else len(HOOK_ORDER), seen.index(h)))

    def by_hook(self, hook: str) -> list[LayerResult]:
        return sorted((r for r in self.results if r.hook == hook), key=lambda r: r.layer)


def num(value) -> float:
    """A float from a JSON value; NaN for null, strings, booleans and anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NAN
    return float(value)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a RiskscopeError naming the file and line if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RiskscopeError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise RiskscopeError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise RiskscopeError(f"{path}:1: expected a JSON object, got {type(data).__name__}")
    return data


def _curve(value, where: str) -> Curve | None:
    if not isinstance(value, dict) or "fpr" not in value or "tpr" not in value:
        return None
    try:
        fpr = np.asarray(value["fpr"], dtype=float)
        tpr = np.asarray(value["tpr"], dtype=float)
    except (TypeError, ValueError):
        raise RiskscopeError(f"{where}: field 'roc' must hold lists of numbers") from None
    if fpr.ndim != 1 or fpr.shape != tpr.shape or len(fpr) < 2:
        raise RiskscopeError(f"{where}: field 'roc' needs 'fpr' and 'tpr' lists of equal length >= 2")
    return Curve(fpr, tpr)


_KNOWN = {"hook", "layer", "auc", "auc_ci", "f1", "accuracy", "pair_accuracy", "shuffled_auc", "roc"}


_METRICS = ("auc", "f1", "accuracy", "pair_accuracy", "shuffled_auc", "shuffled_f1", "macro_f1", "spearman",
            "shuffled_spearman")


def _result(item, where: str) -> LayerResult:
    if not isinstance(item, dict):
        raise RiskscopeError(f"{where}: expected an object")
    for key in ("hook", "layer"):
        if key not in item:
            raise RiskscopeError(f"{where}: missing field '{key}'")
    layer = item["layer"]
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise RiskscopeError(f"{where}: field 'layer' must be an integer, got {layer!r}")
    for key, value in item.items():  # a metric is a number or null (NaN): anything else is a damaged file
        if key in _METRICS and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RiskscopeError(f"{where}: field '{key}' must be a number or null, got {value!r}")
    ci = item.get("auc_ci")
    ci = (num(ci[0]), num(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (NAN, NAN)
    extra = {k: v for k, v in item.items()
             if k not in _KNOWN and (v is None or isinstance(v, (str, int, float, bool)))}
    return LayerResult(
        hook=str(item["hook"]), layer=layer, auc=num(item.get("auc")), auc_ci=ci, f1=num(item.get("f1")),
        accuracy=num(item.get("accuracy")), pair_accuracy=num(item.get("pair_accuracy")),
        shuffled_auc=num(item.get("shuffled_auc")), roc=_curve(item.get("roc"), where), extra=extra)


def _named(metrics: dict, key: str, results: tuple[LayerResult, ...]) -> LayerResult | None:
    declared = metrics.get(key)
    if isinstance(declared, dict):
        for r in results:
            if r.hook == declared.get("hook") and r.layer == declared.get("layer"):
                return r
    return None


def _best(metrics: dict, results: tuple[LayerResult, ...]) -> tuple[LayerResult | None, bool]:
    named = _named(metrics, "best", results)
    if named is not None:
        return named, True
    scored = [r for r in results if not math.isnan(r.auc)]
    return (max(scored, key=lambda r: r.auc) if scored else None), False


def _predictions(path: Path) -> Predictions:
    labels, scores, cats, sevs, pairs, texts, ids = [], [], [], [], [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RiskscopeError(f"{path}: not UTF-8 text") from None
    for lineno, rec in iter_jsonl("\n".join(lines), str(path)):
        where = f"{path}:{lineno}"
        label = rec.get("label")
        if label not in (0, 1):
            raise RiskscopeError(f"{where}: field 'label' must be 0 or 1, got {label!r}")
        score = num(rec.get("score"))
        if not math.isfinite(score):
            raise RiskscopeError(f"{where}: field 'score' must be a finite number, got {rec.get('score')!r}")
        sev = rec.get("severity")
        labels.append(int(label))
        scores.append(score)
        cats.append(str(rec["category"]) if rec.get("category") not in (None, "") else "(none)")
        sevs.append(sev if isinstance(sev, int) and not isinstance(sev, bool) else -1)
        pairs.append(None if rec.get("pair_id") in (None, "") else str(rec["pair_id"]))
        texts.append(str(rec.get("text", "")))
        ids.append(str(rec.get("id", lineno)))
    if not labels:
        raise RiskscopeError(f"{path}: no predictions (the file is empty)")
    return Predictions(np.array(labels, dtype=int), np.array(scores, dtype=float), cats,
                       np.array(sevs, dtype=int), pairs, texts, ids)


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir``; only ``metrics.json`` must exist."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RiskscopeError(f"{path}: run folder not found")
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        raise RiskscopeError(f"{metrics_path}: not found; run `riskscope probe` first to write it")
    metrics = read_json(metrics_path)
    raw = metrics.get("results")
    if not isinstance(raw, list) or not raw:
        raise RiskscopeError(f"{metrics_path}: field 'results' must be a non-empty list")
    results = tuple(_result(item, f"{metrics_path}: results[{i}]") for i, item in enumerate(raw))
    lex = metrics.get("lexical")
    lexical = (Baseline(num(lex.get("auc")), num(lex.get("pair_accuracy")),
                        _curve(lex.get("roc"), f"{metrics_path}: lexical"))
               if isinstance(lex, dict) else None)
    best, declared = _best(metrics, results)
    manifest = read_json(path / "manifest.json") if (path / "manifest.json").is_file() else None
    pred_path = path / "predictions.jsonl"
    predictions = _predictions(pred_path) if pred_path.is_file() else None
    predicted = _named(metrics, "chosen", results) or best
    return Run(path, manifest, metrics, results, lexical, best, declared, predictions, predicted)
