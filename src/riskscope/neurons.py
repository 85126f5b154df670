"""Which MLP neurons carry the risk signal, and what they do to the output.

Three views of the neurons of ``mlp_neurons`` (the input of each block's MLP
down-projection):

* :func:`rank_neurons` - from the store alone: per layer, a logistic probe on
  all texts ranks neurons by ``|standardised weight|``, and the risky-minus-benign
  mean difference gives an effect size (Cohen's d); the heatmap of the seed's
  "narrow view" is layers x each layer's top neurons by ``|d|``.
* :func:`direct_logit_attribution` - weights only: a neuron's down-projection
  column through the final norm's scale and the unembedding.
* :func:`neuron_effects` - the live model: clamp each top neuron, and the
  whole group, over a validation set, next to an equal number of random
  neurons of the same layer clamped the same way (the control), and report
  the tokens whose next-token log-probability rises and falls most.

>>> NeuronStat(26, 958, 0.4, 1.2, 0.3, 0.5, 0.2, 0.25).label
'L26.N958'
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from .effects import InterventionEffect, LinearReadout, PointProbe, run_effects, token_text
from .errors import RiskscopeError, StoreError
from .hooks import Clamp, HookPoint
from .models import LoadedModel

HOOK = "mlp_neurons"


def _f(x) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None


def atomic_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)
    return path


# --- ranking from the store ---------------------------------------------------------------------


@dataclass(frozen=True)
class NeuronStat:
    """One neuron's standing in its layer's probe and its class means (last token)."""

    layer: int
    neuron: int
    weight: float
    """Standardised weight in the layer's logistic probe (positive = pushes towards risky)."""
    effect_size: float
    """Cohen's d: (risky mean - benign mean) / pooled standard deviation."""
    mean_diff: float
    """Risky mean - benign mean, in activation units."""
    risky_mean: float
    benign_mean: float
    sd: float
    """Pooled within-class standard deviation."""

    @property
    def label(self) -> str:
        return f"L{self.layer}.N{self.neuron}"

    def to_dict(self) -> dict:
        return {"label": self.label, **{k: (_f(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}}


@dataclass(frozen=True, eq=False)
class NeuronRanking:
    """Per-layer neuron rankings plus the arrays needed to build clamps and probes."""

    by: Literal["weight", "effect"]
    """What orders ``top``: ``|standardised weight|`` or ``|effect size|``."""
    C: float
    """Inverse regularisation of the per-layer probes."""
    layers: tuple[int, ...]
    top: Mapping[int, tuple[NeuronStat, ...]]
    """Layer -> its top neurons by ``by``."""
    heat_neurons_LK: np.ndarray = field(repr=False)
    """(layers, K) each layer's top-K neurons by ``|effect size|`` (the heatmap's cells)."""
    heat_diff_LK: np.ndarray = field(repr=False)
    """(layers, K) their risky-minus-benign mean differences."""
    heat_d_LK: np.ndarray = field(repr=False)
    """(layers, K) their effect sizes."""
    risky_mean_LW: np.ndarray = field(repr=False)
    benign_mean_LW: np.ndarray = field(repr=False)
    coef_LW: np.ndarray = field(repr=False)
    """(layers, W) standardised probe weights."""
    intercept_L: np.ndarray = field(repr=False)
    mean_LW: np.ndarray = field(repr=False)
    scale_LW: np.ndarray = field(repr=False)

    def _row(self, layer: int) -> int:
        if layer not in self.layers:
            raise RiskscopeError(f"layer {layer} is not ranked; ranked layers: {list(self.layers)}")
        return self.layers.index(layer)

    @property
    def width(self) -> int:
        return int(self.coef_LW.shape[1])

    def neurons(self, layer: int, k: int | None = None) -> list[int]:
        """The top ``k`` neurons of ``layer`` (all ranked ones when ``k`` is None)."""
        return [s.neuron for s in self.top[layer][:k]]

    def risky_mean(self, layer: int, neurons: Sequence[int]) -> np.ndarray:
        return self.risky_mean_LW[self._row(layer), list(neurons)]

    def probe(self, layer: int) -> PointProbe:
        """The layer's ranking probe, to read its score during interventions."""
        r = self._row(layer)
        est = LinearReadout(self.coef_LW[r], float(self.intercept_L[r]), self.mean_LW[r], self.scale_LW[r])
        return PointProbe(HOOK, layer, est)

    def pick_layers(self, n: int = 3) -> list[int]:
        """The ``n`` layers whose top neurons differ most between classes (mean ``|d|`` of the top)."""
        score = [np.mean([abs(s.effect_size) for s in self.top[layer]]) for layer in self.layers]
        order = np.argsort(-np.asarray(score), kind="stable")[:n]
        return sorted(self.layers[i] for i in order)

    def to_dict(self) -> dict:
        return {
            "hook": HOOK, "by": self.by, "C": self.C, "layers": list(self.layers),
            "top": {str(k): [s.to_dict() for s in v] for k, v in self.top.items()},
            "heatmap": {"layers": list(self.layers), "neurons": self.heat_neurons_LK.tolist(),
                        "mean_diff": [[_f(x) for x in row] for row in self.heat_diff_LK],
                        "effect_size": [[_f(x) for x in row] for row in self.heat_d_LK]},
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        return atomic_json(path, self.to_dict())


def _store_layers(store, layers: Sequence[int] | None) -> list[int]:
    have = sorted(p.layer for p in store.points if p.hook == HOOK)
    if not have:
        raise StoreError(f"{store.root} holds no {HOOK} points; cache them with `riskscope cache --hooks {HOOK}`")
    if layers is None:
        return have
    missing = [x for x in layers if x not in have]
    if missing:
        raise StoreError(f"{store.root} has no {HOOK} at layer(s) {missing}; it holds layers {have}")
    return sorted(set(layers))


def rank_neurons(
    store,
    layers: Sequence[int] | None = None,
    *,
    top_k: int = 10,
    by: Literal["weight", "effect"] = "weight",
    C: float = 0.01,
    heat_k: int = 20,
    max_memory_gb: float = 1.0,
) -> NeuronRanking:
    """Rank each layer's MLP neurons by probe weight and by risky-vs-benign effect size.

    Args:
        store: an activation store (:class:`~riskscope.store.Store`) with ``mlp_neurons`` points.
        layers: layers to rank (default: every ``mlp_neurons`` layer in the store).
        top_k: neurons kept per layer in ``top``.
        by: ``weight`` (``|standardised probe weight|``, the seed's choice) or ``effect`` (``|d|``).
        C: inverse L2 strength of the per-layer probes (sklearn ``C`` on standardised features).
        heat_k: neurons per layer in the heatmap (ordered by ``|d|``).
        max_memory_gb: layers are read and fitted in chunks that fit this budget.
    """
    from .probes import fit_many

    if by not in ("weight", "effect"):
        raise RiskscopeError(f"by must be 'weight' or 'effect', got {by!r}")
    if top_k < 1 or heat_k < 1:
        raise RiskscopeError("top_k and heat_k must be >= 1")
    layers = _store_layers(store, layers)
    y = store.labels
    if len(np.unique(y)) != 2:
        raise StoreError(f"{store.root}: neuron ranking needs risky and benign texts")
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    width = int(store.manifest["widths"][f"{HOOK}.{layers[0]}"])
    per_chunk = max(1, int(max_memory_gb * 2**30 // (len(y) * width * 8 * 3)))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("coef", "b", "mean", "scale", "r", "bn", "sd")}
    for start in range(0, len(layers), per_chunk):
        X = np.stack([store.read(HookPoint(HOOK, layer)) for layer in layers[start:start + per_chunk]])
        fit = fit_many(X, y.astype(np.float64), np.ones((1, len(y)), bool), [C], dtype=torch.float32)
        parts["coef"].append(fit.coef[:, 0, 0, 0])
        parts["b"].append(fit.intercept[:, 0, 0, 0])
        parts["mean"].append(fit.mean[:, 0])
        parts["scale"].append(fit.scale[:, 0])
        r, b = X[:, y == 1], X[:, y == 0]
        parts["r"].append(r.mean(1))
        parts["bn"].append(b.mean(1))
        parts["sd"].append(np.sqrt(((n1 - 1) * r.var(1, ddof=1) + (n0 - 1) * b.var(1, ddof=1)) / (n1 + n0 - 2)))
    coef, icpt, mean, scale, rm, bm, sd = (np.concatenate(parts[k]) for k in parts)
    diff = rm - bm
    d = np.divide(diff, sd, out=np.zeros_like(diff), where=sd > 0)
    top: dict[int, tuple[NeuronStat, ...]] = {}
    K = min(heat_k, width)
    heat_n = np.zeros((len(layers), K), dtype=np.int64)
    for i, layer in enumerate(layers):
        key = np.abs(coef[i]) if by == "weight" else np.abs(d[i])
        idx = np.argsort(-key, kind="stable")[:top_k]
        top[layer] = tuple(NeuronStat(layer, int(j), float(coef[i, j]), float(d[i, j]), float(diff[i, j]),
                                      float(rm[i, j]), float(bm[i, j]), float(sd[i, j])) for j in idx)
        heat_n[i] = np.argsort(-np.abs(d[i]), kind="stable")[:K]
    rows = np.arange(len(layers))[:, None]
    return NeuronRanking(by=by, C=float(C), layers=tuple(layers), top=top, heat_neurons_LK=heat_n,
                         heat_diff_LK=diff[rows, heat_n], heat_d_LK=d[rows, heat_n], risky_mean_LW=rm,
                         benign_mean_LW=bm, coef_LW=coef, intercept_L=icpt, mean_LW=mean, scale_LW=scale)


# --- direct logit attribution (weights only) --------------------------------------------------


@dataclass(frozen=True)
class LogitAttribution:
    """Tokens a neuron's output direction promotes and demotes through the unembedding."""

    layer: int
    neuron: int
    sign: float
    """+1 or -1: the direction the neuron moves on risky texts (its output is scaled by this)."""
    boosts: tuple[tuple[str, float], ...]
    suppresses: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "sign": self.sign,
                "boosts": [[t, _f(v)] for t, v in self.boosts], "suppresses": [[t, _f(v)] for t, v in self.suppresses]}


def check_neurons(lm: LoadedModel, layer: int, neurons: Sequence[int]) -> int:
    """Normalise ``layer`` and check every neuron index against the model's MLP width."""
    idx = lm.layout.layer_index(layer)
    bad = [n for n in neurons if not 0 <= int(n) < lm.layout.d_mlp]
    if bad:
        raise RiskscopeError(f"neuron index {bad[0]} is out of range: layer {layer} has {lm.layout.d_mlp} "
                             f"neurons (0..{lm.layout.d_mlp - 1})")
    return idx


def direct_logit_attribution(lm: LoadedModel, layer: int, neurons: Sequence[int], *, k: int = 12,
                             signs: Sequence[float] | None = None) -> tuple[LogitAttribution, ...]:
    """Each neuron's down-projection column through the final norm's scale and the unembedding.

    RMS norms contribute their effective gain (``norm(ones)``, which covers Gemma's ``1 + w``);
    LayerNorms also centre the column. The view ignores the norm's data-dependent division and,
    for Gemma, the post-MLP norm, so it is a weight-only first look, not a measured effect.
    """
    idx = check_neurons(lm, layer, neurons)
    down = lm.layout.mlp_down[idx]
    W = down.weight.detach().float()
    cols = W[:, list(neurons)].T if hasattr(down, "in_features") else W[list(neurons), :]  # (n, d_model)
    norm = lm.layout.final_norm
    with torch.no_grad():
        if isinstance(norm, torch.nn.LayerNorm) or getattr(norm, "bias", None) is not None:
            cols = cols - cols.mean(-1, keepdim=True)
            gain = norm.weight.detach().float()
        else:
            gain = norm(torch.ones(1, lm.d_model, dtype=W.dtype, device=W.device)).float()[0]
        logits = (cols * gain) @ lm.layout.unembed.weight.detach().float().T  # (n, V)
    signs = [1.0] * len(neurons) if signs is None else [1.0 if s >= 0 else -1.0 for s in signs]
    out = []
    for row, n, s in zip(logits, neurons, signs):
        row = (row * s).cpu().numpy()
        up, dn = np.argsort(-row, kind="stable")[:k], np.argsort(row, kind="stable")[:k]
        out.append(LogitAttribution(idx, int(n), s, tuple((token_text(lm.tokenizer, i), float(row[i])) for i in up),
                                    tuple((token_text(lm.tokenizer, i), float(row[i])) for i in dn)))
    return tuple(out)


# --- clamping in the live model -----------------------------------------------------------------


@dataclass(frozen=True)
class EffectsConfig:
    """How :func:`neuron_effects` clamps neurons and measures the result."""

    mode: Literal["risky_mean", "value", "zero"] = "risky_mean"
    """Clamp to ``k`` x the neuron's risky-text mean, to ``value``, or to zero."""
    k: float = 4.0
    """Multiplier of the risky mean (``risky_mean`` mode)."""
    value: float = 1.0
    """Clamp value (``value`` mode)."""
    positions: Literal["all", "last"] = "all"
    """Clamp at every token or only at the last one."""
    n_texts: int = 64
    """Validation texts (whole pairs, drawn with ``seed``)."""
    singles: int = 5
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
        if self.mode not in ("risky_mean", "value", "zero"):
            raise RiskscopeError(f"mode must be risky_mean, value or zero, got {self.mode!r}")
        if self.positions not in ("all", "last"):
            raise RiskscopeError(f"positions must be 'all' or 'last', got {self.positions!r}")
        if self.n_texts < 2 or self.singles < 0 or self.group < 0 or self.batch_size < 1:
            raise RiskscopeError("n_texts must be >= 2, singles and group >= 0, batch_size >= 1")

    def values(self, risky_mean: np.ndarray) -> np.ndarray:
        if self.mode == "zero":
            return np.zeros_like(risky_mean)
        if self.mode == "value":
            return np.full_like(risky_mean, self.value)
        return self.k * risky_mean


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
                "values": [_f(v) for v in self.values], "effect": self.effect.to_dict(),
                "control_neurons": list(self.control_neurons), "control_values": [_f(v) for v in self.control_values],
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
                    return _f(np.mean([get(r) for r in rows]))
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
        """The seed's format: ``L26.N958 boosts ['attack', ...]`` for every clamp."""
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


def validation_rows(store, n_texts: int, seed: int = 0) -> list[int]:
    """Store rows of ``n_texts // 2`` random whole pairs (rows of a val/test split when there is one)."""
    rows = store.rows
    pool = [r for r in rows if str(r.get("split") or "").lower() in ("val", "validation", "dev", "test")] or rows
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
    probe: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> NeuronEffects:
    """Clamp top neurons (one at a time and as a group) next to random neurons, in batches.

    Args:
        lm: the model the store was made with.
        store: the activation store (validation texts are drawn from its rows).
        ranking: from :func:`rank_neurons` on the same store.
        layers: layers to intervene on (default: ``ranking.pick_layers(3)``).
        config: clamp mode, sizes, seed.
        probe: an extra probe (e.g. the run's best probe bundle) whose score change is reported,
            next to each layer's own ranking probe.
        progress: called with (forwards done, forwards total).
    """
    t0 = time.perf_counter()
    layers = list(layers) if layers is not None else ranking.pick_layers(3)
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
            v, rv = config.values(ranking.risky_mean(layer, ns)), config.values(ranking.risky_mean(layer, rs))
            name = f"L{layer}.N{ns[0]}" if kind == "single" else f"L{layer}.top{len(ns)}"
            interventions[name] = [Clamp(HookPoint(HOOK, layer), indices=tuple(ns),
                                         value=torch.as_tensor(v, dtype=torch.float32), positions=pos)]
            interventions[name + ":control"] = [Clamp(HookPoint(HOOK, layer), indices=tuple(rs),
                                                      value=torch.as_tensor(rv, dtype=torch.float32), positions=pos)]
            plan.append((kind, layer, ns, v, rs, rv))
    probes = [ranking.probe(layer) for layer in layers] + ([PointProbe.of(probe)] if probe is not None else [])
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


__all__ = [
    "ClampResult", "EffectsConfig", "LogitAttribution", "NeuronEffects", "NeuronRanking", "NeuronStat",
    "atomic_json", "check_neurons", "check_store_model", "direct_logit_attribution", "neuron_effects", "rank_neurons", "validation_rows",
]
