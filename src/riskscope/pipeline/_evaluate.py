"""``riskscope evaluate``: a run's probe bundle scores an external labelled set, beside the lexical model.

The set is a dataset file or built-in (pairs or single labelled texts). The bundle's probe scores every
text; a TF-IDF model trained on the run's own texts (``RUN/store/rows.jsonl``) scores them too. Reported,
each with a 95 % interval from resampling pairs: AUC, pair accuracy, F1 and accuracy at the bundle's
threshold, per category and per severity; calibration (reliability curve, ECE); the lexical transfer
baseline; ΔAUC (probe - lexical) with a paired bootstrap interval and p-value; and the probe on the pairs
the lexical model gets wrong.

Every check that needs no model runs first (:func:`prepare_evaluation`): the bundle, the dataset (both
classes present), the output folder. Texts longer than the model's context are cut to fit, counted in the
output, and a warning says so. Categories the run never trained on are reported, not refused.

Output folder (``--out``): ``evaluation.json`` (every figure), ``scores.jsonl`` (one line per text),
``evaluation.html`` (offline page) and riskscope's file manifest, written last.

>>> from riskscope.pipeline import EvaluateConfig, evaluate                          # doctest: +SKIP
>>> ev = evaluate(EvaluateConfig(probe="runs/default", dataset="cyber_risk_heldout"))  # doctest: +SKIP
>>> ev.result["probe_metrics"]["auc"], ev.result["delta_auc"]["ci"]                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._io import OutputFiles, atomic_json, atomic_text, check_foreign_files, check_output_dir, json_float
from .._version import __version__
from ..data import Dataset, load_dataset
from ..errors import RiskscopeError
from ..hooks import check_texts
from ..models import LoadedModel, load_model
from ..probes import Probe, bootstrap_counts
from ..report import evaluation_html
from ._folder import open_run_store, run_model_settings
from ._parse import parse_module_paths
from ._transfer import binary_metrics, delta_auc, fit_lexical, reliability, subset_rows

EVAL_FORMAT = "riskscope-evaluation/1"
EVAL_FILES = ("evaluation.json", "scores.jsonl", "evaluation.html")
"""What ``--out`` receives (plus riskscope's file manifest)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``riskscope evaluate`` does: which bundle scores which labelled set, and how it is reported."""

    probe: str | Path
    """A run folder (with ``probe/``) or a probe bundle folder."""
    dataset: str
    """Built-in dataset name or a .jsonl/.csv file of labelled texts (pairs or single texts)."""
    out: str | Path | None = None
    """Folder for evaluation.json, scores.jsonl and evaluation.html (None: write nothing)."""
    model: str | None = None
    """Model spec to load (default: the model the bundle names)."""
    dtype: str = "float32"
    """Model dtype."""
    device: str = "cpu"
    """Model device."""
    trust_remote_code: bool | None = None
    """Allow the model repository's own code (default: as the run recorded)."""
    module_paths: str | None = None
    """Adapter path overrides (default: as the run recorded)."""
    batch_size: int = 32
    """Texts per forward pass."""
    n_bootstrap: int = 1000
    """Resamples of pairs for every interval and the ΔAUC test."""
    seed: int = 0
    """Seed of the resamples and of the lexical model's inner folds."""
    lexical: bool = True
    """Train the lexical transfer baseline on the run's texts (needs the run's store)."""
    bins: int = 10
    """Equal-width probability bins of the reliability curve."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise RiskscopeError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.n_bootstrap < 0:
            raise RiskscopeError(f"--n-bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 2 <= self.bins <= 100:
            raise RiskscopeError(f"--bins must be between 2 and 100, got {self.bins}")


@dataclass(frozen=True, eq=False)
class Prepared:
    """Everything :func:`evaluate` needs before the model loads, checked."""

    probe: Probe
    """The bundle's probe."""
    bundle: Path
    """The bundle folder."""
    run: Path | None
    """The run folder the bundle belongs to (None for a bundle on its own)."""
    data: Dataset
    """The external labelled set."""
    train_texts: tuple[str, ...] | None
    """The run's own texts (for the lexical model and the categories seen), None when not found."""
    train_labels: np.ndarray | None
    """Their labels."""
    train_groups: np.ndarray | None
    """Their pair ids (or row ids)."""
    train_categories: frozenset[str] | None
    """Categories of the run's texts (None when unknown)."""
    notes: tuple[str, ...] = ()
    """What could not be found, and what the evaluation leaves out because of it."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What :func:`evaluate` measured; ``result`` is ``evaluation.json``."""

    result: dict
    """Every figure, as written to evaluation.json."""
    scores: np.ndarray
    """(N,) the probe's probability of risk for each text, in dataset order."""
    lexical_scores: np.ndarray | None
    """(N,) the lexical model's probability, or None when it was not trained."""
    truncated: tuple[int, ...]
    """Indices of the texts cut to the model's context."""
    files: dict[str, str] = field(default_factory=dict)
    """Files written, by name (empty without ``out``)."""


def _groups(rows) -> np.ndarray:
    return np.asarray([r.pair_id if r.pair_id is not None else f"row:{r.id}" for r in rows], dtype=object)


def prepare_evaluation(config: EvaluateConfig) -> Prepared:
    """Every check that needs no model: the bundle, the dataset, the run's texts, the output folder."""
    path = Path(config.probe).expanduser()
    probe = Probe.load(path)
    bundle = path / "probe" if (path / "probe" / "bundle.json").is_file() else path
    run = bundle.parent if (bundle.parent / "manifest.json").is_file() or (bundle.parent / "store").is_dir() else None
    data = load_dataset(config.dataset)
    labels = set(data.labels.tolist())
    if labels != {0, 1}:
        which = "risky (label 1)" if labels == {1} else "benign (label 0)"
        raise RiskscopeError(f"dataset {config.dataset}: every row is {which}; evaluate needs risky and benign rows "
                             f"to measure AUC")
    if config.out is not None:
        out = check_output_dir(config.out)
        check_foreign_files(out, EVAL_FILES)
    notes: list[str] = []
    texts = labels_ = groups = cats = None
    if run is not None:
        try:
            store = open_run_store(run)
        except RiskscopeError as e:
            notes.append(f"the run's store could not be read ({e}); no lexical baseline and no training categories")
        else:
            texts = tuple(r["text"] for r in store.rows)
            labels_ = np.asarray([int(r["label"]) for r in store.rows])
            groups = np.asarray([r.get("pair_id") or f"row:{r['id']}" for r in store.rows], dtype=object)
            found = {r.get("category") for r in store.rows}
            cats = frozenset(c for c in found if c is not None) if found != {None} else None
    else:
        notes.append(f"{bundle} is not inside a run folder; no lexical baseline and no training categories")
    if texts is not None and set(labels_.tolist()) != {0, 1}:
        notes.append("the run's texts hold one class only; no lexical baseline")
        texts = None
    return Prepared(probe=probe, bundle=bundle, run=run, data=data, train_texts=texts, train_labels=labels_,
                    train_groups=groups, train_categories=cats, notes=tuple(notes))


def load_evaluation_model(config: EvaluateConfig, prep: Prepared) -> LoadedModel:
    """The model to score with: ``config.model`` or the bundle's, loaded as the run recorded; checked against
    the bundle (other weights are a :class:`~riskscope.errors.ModelError`)."""
    recorded = run_model_settings(prep.run) if prep.run is not None else {}
    spec = config.model or prep.probe.model_id or recorded.get("model")
    if not spec:
        raise RiskscopeError(f"{prep.bundle}: the bundle names no model; pass --model")
    trust = recorded.get("trust_remote_code", False) if config.trust_remote_code is None else config.trust_remote_code
    paths = config.module_paths if config.module_paths is not None else recorded.get("module_paths")
    lm = load_model(spec, dtype=config.dtype, device=config.device, trust_remote_code=bool(trust),
                    module_paths=parse_module_paths(paths))
    prep.probe.check(lm)
    return lm


def _cv_figures(run: Path | None) -> dict | None:
    """The run's own cross-validated AUCs (probe and lexical, from metrics.json), for comparison."""
    if run is None or not (run / "metrics.json").is_file():
        return None
    try:
        m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(m, dict):
        return None
    best = m.get("chosen") or m.get("best") or {}
    hit = next((r for r in m.get("results") or [] if isinstance(r, dict) and isinstance(best, dict)
                and r.get("hook") == best.get("hook") and r.get("layer") == best.get("layer")), None)
    lex = m.get("lexical") if isinstance(m.get("lexical"), dict) else {}
    probe_auc = json_float(hit.get("auc")) if hit else json_float(best.get("auc")) if isinstance(best, dict) else None
    lex_auc = json_float(lex.get("auc"))
    ci = hit.get("auc_ci") if hit else None
    ci = [json_float(v) for v in ci] if isinstance(ci, list) and len(ci) == 2 else None
    return {"probe_auc": probe_auc, "probe_auc_ci": ci,
            "probe_pair_accuracy": json_float(hit.get("pair_accuracy")) if hit else None, "lexical_auc": lex_auc,
            "lexical_pair_accuracy": json_float(lex.get("pair_accuracy")),
            "delta_auc": json_float(probe_auc - lex_auc) if probe_auc is not None and lex_auc is not None else None,
            "folds": m.get("folds")}


def _subsets(rows, y, p, lex, groups, key, seen, config: EvaluateConfig) -> list[dict]:
    out = []
    for value, idx in sorted(subset_rows(rows, key).items(), key=lambda kv: str(kv[0])):
        m = binary_metrics(y[idx], p[idx], groups[idx], threshold=0.5, n_boot=config.n_bootstrap, seed=config.seed)
        row = {"value": value, "n": m["n"], "n_pairs": m["n_pairs"], "auc": m["auc"], "auc_ci": m["auc_ci"],
               "pair_accuracy": m["pair_accuracy"], "pair_accuracy_ci": m["pair_accuracy_ci"],
               "mean_pos": m["mean_pos"], "mean_neg": m["mean_neg"]}
        if lex is not None:
            lm_ = binary_metrics(y[idx], lex[idx], groups[idx], threshold=0.5, n_boot=0, seed=config.seed)
            row.update(lexical_auc=lm_["auc"], lexical_pair_accuracy=lm_["pair_accuracy"])
        if seen is not None:
            row["seen_in_training"] = value in seen
        out.append(row)
    return out


def evaluate(config: EvaluateConfig, lm: LoadedModel | None = None, *, prepared: Prepared | None = None,
             status: Callable[[str], None] | None = None) -> Evaluation:
    """Score ``config.dataset`` with the bundle of ``config.probe`` and report it beside the lexical model.

    ``lm``: the model to use (checked against the bundle); ``prepared``: the result of
    :func:`prepare_evaluation` when the caller ran the checks already. Texts longer than the model's
    context are cut to fit with a :class:`UserWarning` and counted in ``result["truncated"]``.
    """
    say = status or (lambda msg: None)
    t0 = time.perf_counter()
    prep = prepared or prepare_evaluation(config)
    if lm is None:
        say("loading model")
        lm = load_evaluation_model(config, prep)
    else:
        prep.probe.check(lm)
    data, probe = prep.data, prep.probe
    rows, texts, y = data.rows, data.texts, data.labels
    groups = _groups(rows)
    checked = check_texts(lm, texts, truncate=True)
    cut = tuple(checked.truncated)
    if cut:
        warnings.warn(f"{len(cut)} of {len(texts)} texts are longer than the model's context of "
                      f"{lm.context_length} tokens and were cut to fit (ids: "
                      f"{', '.join(rows[i].id for i in cut[:5])}{' ...' if len(cut) > 5 else ''})",
                      UserWarning, stacklevel=2)
    say(f"scoring {len(texts)} texts with probe {probe.name}")
    p = np.asarray(probe.score(texts, lm, batch_size=config.batch_size, truncate=True), dtype=np.float64)
    lex = lex_info = None
    notes = list(prep.notes)
    if config.lexical and prep.train_texts is not None:
        say("training the lexical model on the run's texts")
        model, C = fit_lexical(prep.train_texts, prep.train_labels, prep.train_groups, seed=config.seed)
        lex = np.asarray(model.predict_proba(texts)[:, 1], dtype=np.float64)
        lex_info = {"C": C, "trained_on": len(prep.train_texts),
                    "features": "TF-IDF word 1-2 grams (sublinear tf), logistic regression, C by grouped CV"}
    elif not config.lexical:
        notes.append("lexical baseline not asked for")
    say("computing metrics")
    W = bootstrap_counts(groups, config.n_bootstrap, config.seed)
    result: dict = {
        "format": EVAL_FORMAT, "riskscope_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "probe": {"path": str(prep.bundle), "name": probe.name, "recipe": probe.recipe, "hook": probe.hook, "layer": probe.layer,
                  "positions": probe.positions if isinstance(probe.positions, str) else list(probe.positions),
                  "threshold": json_float(probe.threshold), "model": lm.model_id, "weight_hash": lm.weight_hash},
        "run": str(prep.run) if prep.run is not None else None,
        "dataset": {**data.summary(), "digest": data.digest(), "spec": str(config.dataset)},
        "n_texts": len(texts), "n_pairs": data.n_pairs,
        "truncated": {"count": len(cut), "ids": [rows[i].id for i in cut], "context_length": int(lm.context_length)},
        "probe_metrics": binary_metrics(y, p, groups, threshold=probe.threshold, n_boot=config.n_bootstrap,
                                        seed=config.seed, counts=W),
        "calibration": reliability(p, y, config.bins),
    }
    cats = sorted({r.category for r in rows if r.category is not None})
    seen = prep.train_categories
    result["categories"] = {"evaluated": cats, "seen_in_training": sorted(seen) if seen is not None else None,
                            "unseen": sorted(set(cats) - seen) if seen is not None else None}
    if lex is not None:
        result["lexical"] = {**lex_info, **binary_metrics(y, lex, groups, threshold=0.5, n_boot=config.n_bootstrap,
                                                          seed=config.seed, counts=W)}
        result["delta_auc"] = delta_auc(y, p, lex, groups, n_boot=config.n_bootstrap, seed=config.seed)
        result["lexical_misses"] = _lexical_misses(y, p, lex, groups, config)
    else:
        result["lexical"] = result["delta_auc"] = result["lexical_misses"] = None
    result["by_category"] = _subsets(rows, y, p, lex, groups, lambda r: r.category or "-", seen, config) \
        if cats else []
    result["by_severity"] = _subsets(rows, y, p, lex, groups, lambda r: r.severity, None, config) \
        if any(r.severity is not None for r in rows if r.label == 1) else []
    result["cv"] = _cv_figures(prep.run)
    result["notes"] = notes
    result["config"] = {"n_bootstrap": config.n_bootstrap, "seed": config.seed, "bins": config.bins,
                        "batch_size": config.batch_size}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    ev = Evaluation(result=result, scores=p, lexical_scores=lex, truncated=cut)
    if config.out is None:
        return ev
    return Evaluation(result=result, scores=p, lexical_scores=lex, truncated=cut,
                      files=write_evaluation(config.out, ev, rows))


def _lexical_misses(y, p, lex, groups, config: EvaluateConfig) -> dict:
    """The probe on the pairs whose risky member the lexical model does not score above its partner."""
    from ._transfer import pair_outcomes

    rows, outcome = pair_outcomes(y, lex, groups)
    missed = set(groups[rows[outcome < 1.0]].tolist())
    idx = np.flatnonzero([g in missed for g in groups.tolist()])
    if len(idx) == 0:
        return {"n_pairs": 0, "auc": None, "auc_ci": [None, None], "pair_accuracy": None,
                "pair_accuracy_ci": [None, None]}
    m = binary_metrics(y[idx], p[idx], groups[idx], threshold=0.5, n_boot=config.n_bootstrap, seed=config.seed)
    return {"n_pairs": len(missed), "auc": m["auc"], "auc_ci": m["auc_ci"], "pair_accuracy": m["pair_accuracy"],
            "pair_accuracy_ci": m["pair_accuracy_ci"]}


def write_evaluation(out: str | Path, ev: Evaluation, rows) -> dict[str, str]:
    """Write ``scores.jsonl``, ``evaluation.html`` and ``evaluation.json`` (each atomically) and the file
    manifest last; files of an earlier evaluation in the folder are replaced, nothing else is touched."""
    files = OutputFiles(out, EVAL_FILES)
    cut = set(ev.truncated)
    lines = []
    for i, r in enumerate(rows):
        rec = {"id": r.id, "label": r.label, "pair_id": r.pair_id, "category": r.category, "severity": r.severity,
               "score": json_float(ev.scores[i])}
        if ev.lexical_scores is not None:
            rec["lexical_score"] = json_float(ev.lexical_scores[i])
        rec["truncated"] = i in cut
        lines.append(json.dumps(rec) + "\n")
    written = {"scores": str(atomic_text(files.path("scores.jsonl"), "".join(lines)))}
    written["html"] = str(atomic_text(files.path("evaluation.html"), evaluation_html(ev.result)))
    written["json"] = str(atomic_json(files.path("evaluation.json"), ev.result))
    files.finish()
    return written


__all__ = ["EVAL_FILES", "EVAL_FORMAT", "EvaluateConfig", "Evaluation", "Prepared", "evaluate",
           "load_evaluation_model", "prepare_evaluation", "write_evaluation"]
