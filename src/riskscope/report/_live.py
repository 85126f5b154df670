"""Report sections from the live-model analyses of a run folder (issue 5).

``riskscope run`` writes these files next to ``metrics.json`` (see
:mod:`riskscope.analyses`); each becomes a section when present:

=================  =============================================================
``ask.json``       ask-the-model baselines beside the best probe on the same texts
``neurons.json``   neuron ranking, heatmap, clamping effects with random controls
``traces.json``    per-token probe scores and gradient x input
``caution.json``   the heightened-caution steering demo against a random vector
=================  =============================================================

Reading a file that exists but is broken is an error naming the file (and
the JSON line or the missing field); a missing file just omits its section.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from ..errors import RiskscopeError
from . import _analysis as A
from . import _fragments as ah
from ._html import Raw, section
from ._run import Run, _read_json

FILES = (("ask", "Asking the model directly", "ask.json"),
         ("neurons", "Neurons that carry the risk signal", "neurons.json"),
         ("traces", "Where in the text the risk is sensed", "traces.json"),
         ("steering", "Steering: heightened caution", "caution.json"))


def _probe_rows(run: Run, ids: list | None) -> list[dict]:
    """The best probe on the ask baseline's rows (same texts, same folds), the best probe on all rows and
    the lexical baseline, as rows for :func:`._fragments.ask_table`."""
    rows = []
    best, p = run.best, run.predictions
    if best is not None and p is not None and ids:
        where = {i: k for k, i in enumerate(p.id)}
        idx = np.asarray([where[i] for i in ids if i in where], dtype=int)
        y, s = p.label_N[idx], p.score_N[idx]
        if len(idx) and 0 < y.sum() < len(y):
            rows.append({"name": f"probe {best.name} on the same {len(idx)} texts", "auc": roc_auc_score(y, s),
                         "pair_accuracy": A.pair_accuracy(p, idx)[0], "f1": f1_score(y, s >= 0.5),
                         "accuracy": accuracy_score(y, s >= 0.5)})
    if best is not None:
        rows.append({"name": f"probe {best.name}, all texts", "auc": best.auc, "auc_ci": list(best.auc_ci),
                     "pair_accuracy": best.pair_accuracy, "f1": best.f1, "accuracy": best.accuracy})
    if run.lexical is not None:
        rows.append({"name": "lexical baseline (bag of words), all texts", "auc": run.lexical.auc,
                     "pair_accuracy": run.lexical.pair_accuracy})
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def _need(data: dict, path: Path, *keys: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise RiskscopeError(f"{path}: missing field {missing[0]!r}")


def _ask(run: Run, path: Path) -> list[str]:
    data = _read_json(path)
    _need(data, path, "results")
    n = len(data.get("ids") or []) or (data["results"][0].get("n_texts") if data["results"] else 0)
    intro = Raw(f'<p class="intro">The model is asked about each scenario (templates below) and its log-odds of '
                f'the risky answer over the safe one is the score: used raw (zero-shot accuracy at log-odds 0) and '
                f'calibrated on the same grouped folds as the probes (AUC, F1). Scored on {ah.e(n)} texts; the first '
                f'row is the best probe on exactly those texts.</p>')
    templates = "".join(f"<li><b>{ah.e(r['template'].get('name'))}</b>: <code>{ah.e(r['template'].get('prompt'))}"
                        f"</code></li>" for r in data["results"] if isinstance(r.get("template"), dict))
    return [intro, Raw(ah.ask_table(data, _probe_rows(run, data.get("ids")))),
            Raw(f"<details><summary>Templates</summary><ul>{templates}</ul></details>")]


def _neurons(run: Run, path: Path) -> list[str]:
    data = _read_json(path)
    _need(data, path, "ranking")
    _need(data["ranking"], path, "heatmap", "top", "layers")
    intro = Raw('<p class="intro">Per layer, a logistic probe on the MLP neurons (the input of the down '
                'projection) ranks them by standardised weight; Cohen\'s d is the risky-minus-benign mean '
                'difference over the pooled standard deviation. Clamping runs in the live model on held-out '
                'pairs; each row\'s random control clamps the same number of random neurons of the same layer by '
                'the same rule. Direct logit attribution is a weights-only view.</p>')
    return [intro, Raw(ah.neuron_section(data["ranking"], data.get("effects")))]


def _traces(run: Run, path: Path) -> list[str]:
    data = _read_json(path)
    _need(data, path, "traces", "probe")
    return [Raw(ah.traces_html(data))]


def _steering(run: Run, path: Path) -> list[str]:
    data = _read_json(path)
    _need(data, path, "steered", "random", "baseline", "layers", "hook", "scale", "n_prompts")
    vec = [f for f in ("vectors/risk_diff_of_means.safetensors", "vectors/risk_diff_of_means.gguf")
           if (run.path / f).is_file()]
    extra = (f'<p class="note">The all-layer diff-of-means vector is saved as {", ".join(vec)} '
             f'(riskscope format and llama.cpp control vector; <code>riskscope steer --vector ...</code> '
             f'applies it).</p>') if vec else ""
    return [Raw(ah.steering_html(data)), Raw(extra)]


_BUILD = {"ask": _ask, "neurons": _neurons, "traces": _traces, "steering": _steering}


def live_sections(run: Run) -> list[tuple[str, str, Raw]]:
    """``(anchor, title, section)`` for every analysis file present in the run folder, in reading order."""
    out = []
    for anchor, title, name in FILES:
        path = run.path / name
        if not path.is_file():
            continue
        try:
            parts = _BUILD[anchor](run, path)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise RiskscopeError(f"{path}: unexpected content ({type(exc).__name__}: {exc})") from None
        out.append((anchor, title, section(anchor, title, *[Raw(p) for p in parts])))
    return out


__all__ = ["FILES", "live_sections"]
