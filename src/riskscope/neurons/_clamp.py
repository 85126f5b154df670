"""Clamping MLP neurons in the live model, next to random neurons of the same layer as the control.

:func:`neuron_effects` clamps each of a layer's top neurons (from
:func:`~riskscope.neurons.rank_neurons`) one at a time, and the top group
together, over a validation set; every clamp is repeated on as many random
neurons of the same layer with the same rule. All clamps run batched through
:func:`~riskscope.effects.run_effects` (one forward per batch per clamp, and
only the blocks from the clamped layer on). Also importable from
:mod:`riskscope.neurons`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from .._io import atomic_json, json_float
from ..effects import InterventionEffect, run_effects
from ..errors import RiskscopeError
from ..hooks import Clamp, HookPoint
from ..models import LoadedModel
from ..probes import Probe
from ._rank import (
    HOOK, LogitAttribution, NeuronRanking, NeuronStat, check_neurons, direct_logit_attribution,
)


@dataclass(frozen=True)
class EffectsConfig:
    """How :func:`neuron_effects` clamps neurons and measures the result."""

    mode: Literal["sd", "risky_mean", "value", "zero"] = "sd"
    """``sd``: the risky mean plus ``k`` within-class standard deviations in the risky direction;
    ``risky_mean``: ``k`` x the risky-text mean; ``value``: ``value``; ``zero``: 0."""
    k: float = 10.0
    """Multiplier of the standard deviation (``sd``) or of the risky mean (``risky_mean``)."""
    value: float = 1.0
    """Clamp value (``value`` mode)."""
    positions: Literal["all", "last"] = "all"
    """Clamp at every token or only at the last one."""
    n_texts: int = 48
    """Validation texts (whole pairs, drawn with ``seed``)."""
    singles: int = 3
    """Top neurons per layer clamped one at a time (each with one random control neuron)."""
    group: int = 10
    """Top neurons per layer clamped together (with as many random neurons as the control; 0 = none)."""
    batch_size: int = 32
    """Texts per forward."""
    top_tokens: int = 12
    """Tokens listed per direction."""
    seed: int = 0
    """Seed for the validation texts and the random control neurons."""

    def __post_init__(self) -> None:
        if self.mode not in ("sd", "risky_mean", "value", "zero"):
            raise RiskscopeError(f"mode must be sd, risky_mean, value or zero, got {self.mode!r}")
        if self.positions not in ("all", "last"):
            raise RiskscopeError(f"positions must be 'all' or 'last', got {self.positions!r}")
        if self.n_texts < 2 or self.singles < 0 or self.group < 0 or self.batch_size < 1:
            raise RiskscopeError("n_texts must be >= 2, singles and group >= 0, batch_size >= 1")

    def values(self, risky_mean: np.ndarray, benign_mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
        """Clamp value of each neuron from its class statistics."""
        if self.mode == "zero":
            return np.zeros_like(risky_mean)
        if self.mode == "value":
            return np.full_like(risky_mean, self.value)
        if self.mode == "risky_mean":
            return self.k * risky_mean
        return risky_mean + self.k * sd * np.where(risky_mean >= benign_mean, 1.0, -1.0)


@dataclass(frozen=True)
class ClampResult:
    """One clamp of the top neuron(s) next to the same clamp of random neurons of the layer."""

    layer: int
    neurons: tuple[int, ...]
    values: tuple[float, ...]
    effect: InterventionEffect
    control_neurons: tuple[int, ...]
    control_values: tuple[float, ...]
    control: InterventionEffect

    @property
    def label(self) -> str:
        n = self.neurons
        return f"L{self.layer}.N{n[0]}" if len(n) == 1 else f"L{self.layer}.top{len(n)}"

    def to_dict(self) -> dict:
        return {"label": self.label, "layer": self.layer, "neurons": list(self.neurons),
                "values": [json_float(v) for v in self.values], "effect": self.effect.to_dict(),
                "control_neurons": list(self.control_neurons), "control_values": [json_float(v) for v in self.control_values],
                "control": self.control.to_dict()}


@dataclass(frozen=True, eq=False)
class NeuronEffects:
    """Clamping effects of the top neurons with random-neuron controls, and their logit attributions."""

    config: EffectsConfig
    singles: tuple[ClampResult, ...]
    groups: tuple[ClampResult, ...]
    dla: Mapping[str, LogitAttribution]
    """``L<layer>.N<neuron>`` -> its direct logit attribution."""
    stats: Mapping[str, NeuronStat]
    text_rows: tuple[int, ...]
    """Store rows used as the validation set."""
    probes: tuple[str, ...]
    seconds: float

    def summary(self) -> dict:
        """Mean effect sizes of the top neurons and of their random controls, side by side."""
        out = {}
        for kind, rows in (("singles", self.singles), ("groups", self.groups)):
            if rows:
                def mean(get):
                    return json_float(np.mean([get(r) for r in rows]))
                out[kind] = {
                    "n": len(rows),
                    "kl": mean(lambda r: r.effect.kl), "kl_control": mean(lambda r: r.control.kl),
                    "risk_dlogp": mean(lambda r: r.effect.risk_dlogp),
                    "risk_dlogp_control": mean(lambda r: r.control.risk_dlogp),
                    "own_probe_delta": mean(lambda r: r.effect.probe_mean(f"{HOOK}.{r.layer}")),
                    "own_probe_delta_control": mean(lambda r: r.control.probe_mean(f"{HOOK}.{r.layer}")),
                }
        return out

    def lines(self, k: int = 12) -> list[str]:
        """The Mistral-7B probing study's format: ``L26.N958 boosts ['attack', ...]`` for every clamp."""
        return [f"{r.label} boosts {[t.token.strip() for t in r.effect.boosts[:k]]}" for r in (*self.singles, *self.groups)]

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "n_texts": len(self.text_rows), "text_rows": list(self.text_rows),
                "probes": list(self.probes), "seconds": round(self.seconds, 2), "summary": self.summary(),
                "singles": [r.to_dict() for r in self.singles], "groups": [r.to_dict() for r in self.groups],
                "dla": {k: v.to_dict() for k, v in self.dla.items()},
                "stats": {k: v.to_dict() for k, v in self.stats.items()}, "lines": self.lines()}

    def save(self, path: str | Path) -> Path:
        return atomic_json(path, self.to_dict())


def check_store_model(store, lm: LoadedModel) -> None:
    """Raise when ``store`` was made with other weights than ``lm``."""
    made = store.manifest.get("model", {}).get("weight_hash")
    if made and made != lm.weight_hash:
        raise RiskscopeError(f"{store.root} was made with model {store.manifest['model'].get('model')!r} "
                             f"(weights {made[:12]}), not {lm.model_id!r} (weights {lm.weight_hash[:12]})")


def validation_rows(store, n_texts: int, seed: int = 0, prefer_split: bool = True) -> list[int]:
    """Store rows of ``n_texts // 2`` random whole pairs; with ``prefer_split``, from the rows of a
    val/dev/test split when the dataset has one (probes train on the others)."""
    rows = store.rows
    held = [r for r in rows if str(r.get("split") or "").lower() in ("val", "validation", "dev", "test")]
    pool = held if prefer_split and held else rows
    pairs: dict[str, list[int]] = {}
    for r in pool:
        pairs.setdefault(r["pair_id"] if r.get("pair_id") is not None else f"row{r['index']}", []).append(r["index"])
    keys = sorted(pairs)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for i in rng.permutation(len(keys)):
        if len(chosen) >= n_texts:
            break
        chosen.extend(pairs[keys[i]])
    return sorted(chosen[:n_texts])


def neuron_effects(
    lm: LoadedModel,
    store,
    ranking: NeuronRanking,
    layers: Sequence[int] | None = None,
    *,
    config: EffectsConfig = EffectsConfig(),
    probe: Probe | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> NeuronEffects:
    """Clamp top neurons (one at a time and as a group) next to random neurons, in batches.

    Args:
        lm: the model the store was made with.
        store: the activation store (validation texts are drawn from its rows).
        ranking: from :func:`rank_neurons` on the same store.
        layers: layers to intervene on (default: ``ranking.pick_layers(3, min_layer=n_layers // 2)``: the
            seed found the neurons that move the output in the later half).
        config: clamp mode, sizes, seed.
        probe: an extra :class:`~riskscope.probes.Probe` (e.g. the run's) whose score change is reported,
            next to each layer's own ranking probe.
        progress: called with (forwards done, forwards total).
    """
    t0 = time.perf_counter()
    layers = list(layers) if layers is not None else ranking.pick_layers(3, min_layer=lm.n_layers // 2)
    if ranking.width != lm.layout.d_mlp:
        raise RiskscopeError(f"the ranking has {ranking.width} neurons per layer but the model has {lm.layout.d_mlp}")
    check_store_model(store, lm)
    rows = validation_rows(store, config.n_texts, config.seed)
    texts = [store.rows[i]["text"] for i in rows]
    pos = None if config.positions == "all" else "last"
    plan: list[tuple[str, int, list[int], np.ndarray, list[int], np.ndarray]] = []
    interventions: dict[str, list] = {}
    for layer in layers:
        check_neurons(lm, layer, ranking.neurons(layer))
        n_top = max(config.singles, config.group)
        top = ranking.neurons(layer, n_top)
        rng = np.random.default_rng(config.seed + 1000 + layer)
        pool = np.setdiff1d(np.arange(ranking.width), top)
        rand = [int(x) for x in rng.choice(pool, size=min(n_top, len(pool)), replace=False)]
        sets = [("single", [n], [r]) for n, r in zip(top[:config.singles], rand[:config.singles])]
        if config.group:
            sets.append(("group", top[:config.group], rand[:config.group]))
        for kind, ns, rs in sets:
            v, rv = config.values(*ranking.class_stats(layer, ns)), config.values(*ranking.class_stats(layer, rs))
            name = f"L{layer}.N{ns[0]}" if kind == "single" else f"L{layer}.top{len(ns)}"
            interventions[name] = [Clamp(HookPoint(HOOK, layer), indices=tuple(ns),
                                         value=torch.as_tensor(v, dtype=torch.float32), positions=pos)]
            interventions[name + ":control"] = [Clamp(HookPoint(HOOK, layer), indices=tuple(rs),
                                                      value=torch.as_tensor(rv, dtype=torch.float32), positions=pos)]
            plan.append((kind, layer, ns, v, rs, rv))
    probes = [ranking.probe(layer) for layer in layers] + ([Probe.of(probe)] if probe is not None else [])
    eff = run_effects(lm, texts, interventions, probes=probes, batch_size=config.batch_size,
                      top_tokens=config.top_tokens, progress=progress)
    singles, groups = [], []
    for (kind, layer, ns, v, rs, rv), name in zip(plan, [k for k in interventions if not k.endswith(":control")]):
        res = ClampResult(layer, tuple(ns), tuple(float(x) for x in v), eff[name], tuple(rs),
                          tuple(float(x) for x in rv), eff[name + ":control"])
        (singles if kind == "single" else groups).append(res)
    dla: dict[str, LogitAttribution] = {}
    stats: dict[str, NeuronStat] = {}
    for layer in layers:
        top = ranking.top[layer]
        for s, a in zip(top, direct_logit_attribution(lm, layer, [s.neuron for s in top],
                                                      k=config.top_tokens, signs=[s.mean_diff for s in top])):
            dla[s.label] = a
            stats[s.label] = s
    return NeuronEffects(config=config, singles=tuple(singles), groups=tuple(groups), dla=dla, stats=stats,
                         text_rows=tuple(rows), probes=tuple(p.name for p in probes),
                         seconds=time.perf_counter() - t0)


__all__ = ["ClampResult", "EffectsConfig", "NeuronEffects", "check_store_model", "neuron_effects", "validation_rows"]
