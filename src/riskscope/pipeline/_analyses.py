"""The live-model analyses of a run folder, in one call for ``riskscope run`` and ``riskscope analyze``.

:func:`run_analyses` takes the run's store and probe (given in memory, or read from ``RUN/store`` and
``RUN/probe``), then writes, each once and atomically:

=================================  =====================================================
``RUN/neurons.json``               ranking (+ heatmap data), clamping effects with random
                                   controls, direct logit attribution
``RUN/ask.json``                   ask-the-model baselines, probe-shaped metrics
``RUN/traces.json``                per-token probe scores + gradient x input
``RUN/vectors/risk_diff_of_means`` ``.safetensors`` + ``.json`` (riskscope) and ``.gguf``
                                   (llama.cpp control vector, layers >= 1)
``RUN/caution.json``               the heightened-caution demo vs a random vector
=================================  =====================================================

and returns the results (``riskscope report`` renders the files: :mod:`riskscope.report._live`). Each part can be
switched off; the defaults fit in a few CPU minutes on the default model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..scorers import DEFAULT_TEMPLATES, AskEvaluation, AskTemplate, ask_baseline, ask_templates
from ..steering import CautionDemo, caution_demo, diff_of_means_vector, save_risk_vector
from ..models import LoadedModel
from ..probes import Probe, probe_for_run
from ..neurons import EffectsConfig, NeuronEffects, check_store_model, neuron_effects, validation_rows
from .._io import atomic_json
from ..neurons import NeuronRanking, rank_neurons
from ..steering import SteeringVector
from ..scorers import TokenTraces, pick_trace_texts, token_traces


@dataclass(frozen=True)
class AnalysisConfig:
    """Which analyses :func:`run_analyses` runs, and their sizes."""

    neurons: bool = True
    """Rank neurons (store only) and clamp the top ones in the live model."""
    neuron_effects: bool = True
    """The clamping part of ``neurons`` (the slowest part: one forward per batch per clamp)."""
    effect_layers: tuple[int, ...] | None = None
    """Layers to clamp (default: the 3 of the later half whose top neurons have the largest effect sizes)."""
    effects: EffectsConfig = field(default_factory=EffectsConfig)
    """Clamp mode, validation size, singles/group sizes."""
    ask: bool = True
    """Ask-the-model baselines over the whole dataset."""
    templates: tuple[AskTemplate, ...] = DEFAULT_TEMPLATES
    """Questions for the ask baseline."""
    ask_pairs: int | None = 64
    """Pairs (drawn with ``seed``) the ask baseline scores, keeping their fold ids; None = every row."""
    traces: bool = True
    """Per-token traces of a few pairs."""
    trace_pairs: int = 3
    """Pairs traced (both members)."""
    vectors: bool = True
    """Save the all-layer diff-of-means vector (riskscope format + control-vector GGUF)."""
    caution: bool = True
    """Run the heightened-caution demo."""
    caution_layer: int | None = None
    """Layer of the demo's vector (default: ``int(0.55 * n_layers)``; layer 16 of SmolLM2's 30)."""
    caution_scale: float = 8.0
    """Multiplier of the class-mean difference in the demo (8 changes completions while they stay fluent)."""
    caution_generate: int = 16
    """Prompts of the demo also completed greedily (unsteered, steered, random) to count risk words."""
    folds: int = 5
    """Grouped folds for the ask baseline when the run's fold assignment is not given."""
    seed: int = 0
    """Seed (folds, bootstrap, validation texts, random controls)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the ask baseline's AUC interval."""


@dataclass(frozen=True, eq=False)
class AnalysisOutputs:
    """What :func:`run_analyses` produced (``None`` for parts switched off) and where it wrote it."""

    ranking: NeuronRanking | None
    effects: NeuronEffects | None
    ask: AskEvaluation | None
    traces: TokenTraces | None
    caution: CautionDemo | None
    files: dict[str, str]
    seconds: dict[str, float]
    vector: SteeringVector | None = None
    """The all-layer diff-of-means risk vector (saved under ``RUN/vectors/`` when ``vectors`` ran)."""


def _probe(run: Path, store, probe: Any, metrics: dict | None) -> Probe:
    return Probe.of(probe) if probe is not None else probe_for_run(run, store, metrics)


def _ask(lm: LoadedModel, store, folds: np.ndarray | None, config: AnalysisConfig) -> tuple[AskEvaluation, list]:
    """The ask baseline on all rows or on ``ask_pairs`` whole pairs, with the probes' fold of each row;
    also returns the ids of the rows scored (the report compares the probe on the same rows)."""
    from ..probes import group_folds

    groups = np.asarray([g if g is not None else f"row{i}" for i, g in enumerate(store.pair_ids)])
    fold = np.asarray(folds) if folds is not None else group_folds(groups, config.folds, config.seed)
    rows = np.arange(len(groups))
    if config.ask_pairs is not None and 2 * config.ask_pairs < len(rows):
        rows = np.asarray(validation_rows(store, 2 * config.ask_pairs, config.seed, prefer_split=False))
    texts = [store.rows[i]["text"] for i in rows]
    ask = ask_baseline(lm, texts, store.labels[rows], groups[rows], ask_templates(lm, config.templates), folds=fold[rows],
                       seed=config.seed, n_bootstrap=config.n_bootstrap)
    return ask, [store.rows[i]["id"] for i in rows]


def run_analyses(
    lm: LoadedModel,
    run_dir: str | Path,
    *,
    store=None,
    probe: Any = None,
    metrics: dict | None = None,
    folds: np.ndarray | None = None,
    config: AnalysisConfig = AnalysisConfig(),
    progress: Callable[[str], None] | None = None,
) -> AnalysisOutputs:
    """Run the neuron, ask, trace, vector and caution analyses on a run folder.

    Args:
        lm: the run's model (loaded from ``manifest.json``'s model id).
        run_dir: the run folder; ``store`` defaults to ``run_dir/store``.
        probe: the best :class:`~riskscope.probes.Probe`; default: :func:`~riskscope.probes.probe_for_run`
            (``run_dir/probe``, else fitted on the store at ``metrics["best"]``).
        metrics: the parsed ``metrics.json`` (for the best hook point).
        folds: the probes' outer fold of each row (``ProbeEvaluation.folds``), so the ask baseline is
            scored on the very same folds; default: the same grouped folds rebuilt from ``config``.
        config: which parts run, and their sizes.
        progress: called with a short line before each part.
    """
    from ..data import Store

    run = Path(run_dir)
    store = store if store is not None else Store.open(run / "store")
    check_store_model(store, lm)
    say = progress or (lambda msg: None)
    probe = _probe(run, store, probe, metrics)
    files: dict[str, str] = {}
    secs: dict[str, float] = {}
    ranking = effects = ask = traces = demo = vec = None

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        secs[name] = round(secs.get(name, 0.0) + time.perf_counter() - t, 2)
        return out

    if config.neurons and any(p.hook == "mlp_neurons" for p in store.points):
        say("ranking neurons")
        ranking = timed("rank", lambda: rank_neurons(store))
        if config.neuron_effects:
            say("clamping neurons (with random controls)")
            effects = timed("effects", lambda: neuron_effects(lm, store, ranking, config.effect_layers,
                                                              config=config.effects, probe=probe))
        data = {"ranking": ranking.to_dict(), "effects": effects.to_dict() if effects else None}
        files["neurons"] = str(atomic_json(run / "neurons.json", data))
    if config.ask:
        say("asking the model")
        ask, ids = timed("ask", lambda: _ask(lm, store, folds, config))
        files["ask"] = str(atomic_json(run / "ask.json", {**ask.to_dict(arrays=True), "ids": ids}))
    if config.traces:
        say("tracing per-token scores")
        texts, labels = pick_trace_texts(store, config.trace_pairs, config.seed)
        traces = timed("traces", lambda: token_traces(lm, probe, texts, labels))
        files["traces"] = str(traces.save(run / "traces.json"))
    if config.vectors or config.caution:
        vec = timed("vectors", lambda: diff_of_means_vector(store, "resid_post"))
        if config.vectors:
            vec_files = timed("vectors", lambda: save_risk_vector(store, run, vector=vec))
            files.update({f"vector_{k}": v for k, v in vec_files.items()})
        if config.caution:
            say("steering demo")
            layer = config.caution_layer if config.caution_layer is not None else int(0.55 * lm.n_layers)
            layer = min(vec.layers, key=lambda k: abs(k - layer))
            demo = timed("caution", lambda: caution_demo(lm, vec, layers=[layer], scale=config.caution_scale,
                                                         probe=probe, seed=config.seed,
                                                         n_generate=config.caution_generate))
            files["caution"] = str(demo.save(run / "caution.json"))
    return AnalysisOutputs(ranking=ranking, effects=effects, ask=ask, traces=traces, caution=demo, files=files,
                           seconds=secs, vector=vec)


__all__ = ["AnalysisConfig", "AnalysisOutputs", "run_analyses"]
