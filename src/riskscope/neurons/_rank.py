"""Which MLP neurons carry the risk signal, and what they do to the output.

Three views of the neurons of ``mlp_neurons`` (the input of each block's MLP
down-projection):

* :func:`rank_neurons` - from the store alone: per layer, a logistic probe on
  all texts ranks neurons by ``|standardised weight|``, and the risky-minus-benign
  mean difference gives an effect size (Cohen's d); the heatmap of the Mistral-7B probing study's
  "narrow view" is layers x each layer's top neurons by ``|d|``.
* :func:`direct_logit_attribution` - weights only: a neuron's down-projection
  column through the final norm's scale and the unembedding.
* :func:`neuron_effects` (in :mod:`riskscope.clamping`, re-exported here) -
  the live model: clamp each top neuron, and the whole group, over a
  validation set, next to an equal number of random neurons of the same
  layer clamped the same way (the control), and report the tokens whose
  next-token log-probability rises and falls most.

>>> NeuronStat(26, 958, 0.4, 1.2, 0.3, 0.5, 0.2, 0.25).label
'L26.N958'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch

from .._io import atomic_json, json_float
from ..effects import token_text
from ..errors import RiskscopeError, StoreError
from ..hooks import HookPoint
from ..models import LoadedModel
from ..probes import LinearReadout, Probe

HOOK = "mlp_neurons"






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
        return {"label": self.label, **{k: (json_float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}}


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
    sd_LW: np.ndarray = field(repr=False)
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

    def class_stats(self, layer: int, neurons: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Risky mean, benign mean and pooled standard deviation of ``neurons``."""
        r, idx = self._row(layer), list(neurons)
        return self.risky_mean_LW[r, idx], self.benign_mean_LW[r, idx], self.sd_LW[r, idx]

    def probe(self, layer: int) -> Probe:
        """The layer's ranking probe, to read its score during interventions."""
        r = self._row(layer)
        est = LinearReadout(self.coef_LW[r], float(self.intercept_L[r]), self.mean_LW[r], self.scale_LW[r])
        return Probe(estimator=est, hook=HOOK, layer=layer, meta={"C": self.C, "ranking": self.by})

    def pick_layers(self, n: int = 3, min_layer: int = 0) -> list[int]:
        """The ``n`` layers (from ``min_layer`` on, when there are enough) whose top neurons differ most
        between classes (mean ``|d|`` of the top)."""
        cands = [x for x in self.layers if x >= min_layer]
        cands = cands if len(cands) >= n else list(self.layers)
        score = [np.mean([abs(s.effect_size) for s in self.top[layer]]) for layer in cands]
        order = np.argsort(-np.asarray(score), kind="stable")[:n]
        return sorted(cands[i] for i in order)

    def to_dict(self) -> dict:
        return {
            "hook": HOOK, "by": self.by, "C": self.C, "layers": list(self.layers),
            "top": {str(k): [s.to_dict() for s in v] for k, v in self.top.items()},
            "heatmap": {"layers": list(self.layers), "neurons": self.heat_neurons_LK.tolist(),
                        "mean_diff": [[json_float(x) for x in row] for row in self.heat_diff_LK],
                        "effect_size": [[json_float(x) for x in row] for row in self.heat_d_LK]},
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
        store: an activation store (:class:`~riskscope.data.Store`) with ``mlp_neurons`` points.
        layers: layers to rank (default: every ``mlp_neurons`` layer in the store).
        top_k: neurons kept per layer in ``top``.
        by: ``weight`` (``|standardised probe weight|``, the Mistral-7B probing study's choice) or ``effect`` (``|d|``).
        C: inverse L2 strength of the per-layer probes (sklearn ``C`` on standardised features).
        heat_k: neurons per layer in the heatmap (ordered by ``|d|``).
        max_memory_gb: layers are read and fitted in chunks that fit this budget.
    """
    from ..probes import fit_many

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
                         benign_mean_LW=bm, sd_LW=sd, coef_LW=coef, intercept_L=icpt, mean_LW=mean, scale_LW=scale)


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
                "boosts": [[t, json_float(v)] for t, v in self.boosts], "suppresses": [[t, json_float(v)] for t, v in self.suppresses]}


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


__all__ = [
    "LogitAttribution", "NeuronRanking", "NeuronStat", "check_neurons", "direct_logit_attribution",
    "rank_neurons",
]
