"""Choosing the probe recipe by nested grouped cross-validation.

A *recipe* is how a text becomes one risk score. Candidates:

* ``single`` - one (readout, hook, layer) probe;
* ``layers`` - the average of the standardised scores of the ``top_k`` best layers of one (readout, hook);
* ``stack`` - the best activation recipe averaged (standardised) with the lexical TF-IDF model.

Every component was already fitted by :func:`evaluate_layers` / :func:`lexical_baseline` with nested folds,
keeping, for each outer fold, the inner-validation scores of its training rows (``inner_oof``) and the
out-of-fold scores of its test rows (``oof_scores``). So the selection is nested without refitting:

* in outer fold ``f``, every candidate is scored by the AUC of its inner-validation scores on the fold's
  training rows (the layer sets and the stack are built from that ranking too); the winner's outer-fold
  scores, standardised with the training rows' inner statistics, are that fold's test scores;
* the pooled test scores give the *nested* AUC of the whole procedure, compared with the lexical model on
  the same rows by a paired bootstrap over pairs (ΔAUC, its interval and a two-sided p-value);
* the recipe saved is the candidate with the best cross-validated AUC over all rows, refit on all rows.

The same is done with activation-only candidates: that ΔAUC, not the stack's, says whether the model
senses the risk beyond the wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .._io import json_float
from ._config import ProbeError
from ._metrics import auc_ci, auc_rows, auc_weighted, bootstrap_counts, pair_accuracy
from ._results import LayerResult, LexicalResult

LEXICAL = "lexical"


def _jf(x) -> float | None:
    return json_float(x, None)


@dataclass(frozen=True)
class RecipeConfig:
    """Which recipes compete, and how their comparison with the lexical model is reported."""

    top_k: int = 3
    """Layers in a ``layers`` candidate (the best ``top_k`` of one readout and hook); < 2 disables them."""
    stack_lexical: bool = True
    """Also try the best activation recipe averaged with the lexical model."""
    n_bootstrap: int = 1000
    """Paired bootstrap resamples of pairs for the ΔAUC interval and p-value."""
    ci_level: float = 0.95
    """Coverage of the intervals."""
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.n_bootstrap < 0 or not 0 < self.ci_level < 1:
            raise ProbeError(f"bad RecipeConfig: top_k {self.top_k}, n_bootstrap {self.n_bootstrap}, "
                             f"ci_level {self.ci_level}")


Key = tuple  # (readout, hook, layer) or ("lexical",)


def key_name(key: Key) -> str:
    return LEXICAL if key == (LEXICAL,) else f"{key[0]} {key[1]}.{key[2]}"


@dataclass(frozen=True, eq=False)
class Candidate:
    """One recipe and its cross-validated score over all rows."""

    kind: str
    """``single``, ``layers`` or ``stack``."""
    parts: tuple[Key, ...]
    """Its components: ``(readout, hook, layer)`` probes and/or ``("lexical",)``."""
    auc: float
    """AUC of its out-of-fold scores over all rows."""
    auc_ci: tuple[float, float]
    """Pair-bootstrap interval of that AUC."""
    pair_accuracy: float
    """Share of pairs whose risky member scores higher."""
    oof_scores: np.ndarray = field(repr=False)
    """(N,) its out-of-fold scores (standardised averages for several parts)."""

    @property
    def name(self) -> str:
        if self.kind == "single":
            return key_name(self.parts[0])
        probes = [p for p in self.parts if p != (LEXICAL,)]
        if self.kind == "layers" or len(probes) > 1:
            r, h = probes[0][0], probes[0][1]
            act = f"{r} {h}.{{{','.join(str(p[2]) for p in probes)}}} avg"
        else:
            act = key_name(probes[0])
        return act + (" + lexical" if (LEXICAL,) in self.parts else "")

    @property
    def uses_lexical(self) -> bool:
        return (LEXICAL,) in self.parts

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "parts": [{"kind": LEXICAL} if p == (LEXICAL,) else {"readout": p[0], "hook": p[1], "layer": int(p[2])}
                          for p in self.parts],
                "auc": _jf(self.auc), "auc_ci": [_jf(v) for v in self.auc_ci],
                "pair_accuracy": _jf(self.pair_accuracy), "uses_lexical": self.uses_lexical}


@dataclass(frozen=True, eq=False)
class NestedResult:
    """The selection procedure scored on outer folds it never saw, against the lexical model."""

    auc: float
    """AUC of the pooled outer-fold scores of each fold's winner."""
    auc_ci: tuple[float, float]
    """Pair-bootstrap interval of that AUC."""
    pair_accuracy: float
    """Pair accuracy of the pooled outer-fold scores."""
    chosen_per_fold: tuple[str, ...]
    """The recipe the inner folds chose in each outer fold."""
    lexical_auc: float
    """The lexical model's AUC on the same rows and folds."""
    delta_auc: float
    """``auc - lexical_auc``."""
    delta_ci: tuple[float, float]
    """Paired bootstrap interval of ΔAUC (pairs resampled, both scores on the same draw)."""
    p_value: float
    """Two-sided bootstrap p-value of ΔAUC = 0."""
    scores: np.ndarray = field(repr=False)
    """(N,) the pooled outer-fold scores."""

    @property
    def beats_lexical(self) -> bool:
        """The ΔAUC interval lies above 0."""
        return bool(np.isfinite(self.delta_ci[0]) and self.delta_ci[0] > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"auc": _jf(self.auc), "auc_ci": [_jf(v) for v in self.auc_ci], "pair_accuracy": _jf(self.pair_accuracy),
                "chosen_per_fold": list(self.chosen_per_fold), "lexical_auc": _jf(self.lexical_auc),
                "delta_auc": _jf(self.delta_auc), "delta_ci": [_jf(v) for v in self.delta_ci],
                "p_value": _jf(self.p_value), "beats_lexical": self.beats_lexical}


@dataclass(frozen=True, eq=False)
class RecipeSelection:
    """Every candidate, the recipe chosen, and the nested estimates of how it compares with wording."""

    candidates: tuple[Candidate, ...]
    """Every candidate built from all rows, best cross-validated AUC first."""
    chosen: Candidate
    """The recipe with the best cross-validated AUC (saved, refit on all rows)."""
    best_activations: Candidate
    """The best recipe that uses activations only (== ``chosen`` unless a stack wins)."""
    nested: NestedResult | None
    """The whole selection, nested, against the lexical model (None without the lexical model)."""
    nested_activations: NestedResult | None
    """The same with activation-only candidates: the test of "beyond wording"."""
    config: RecipeConfig
    """The configuration used."""

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "best_activations": self.best_activations.to_dict(),
                "nested": None if self.nested is None else self.nested.to_dict(),
                "nested_activations": None if self.nested_activations is None else self.nested_activations.to_dict(),
                "candidates": [c.to_dict() for c in self.candidates],
                "config": {"top_k": self.config.top_k, "stack_lexical": self.config.stack_lexical,
                           "n_bootstrap": self.config.n_bootstrap, "ci_level": self.config.ci_level,
                           "seed": self.config.seed}}


def _combine(parts: Sequence[Key], scores: dict[Key, np.ndarray], stats: dict[Key, tuple[float, float]]) -> np.ndarray:
    return np.mean([(scores[k] - stats[k][0]) / stats[k][1] for k in parts], axis=0)


def _stats(x: np.ndarray) -> tuple[float, float]:
    sd = float(np.std(x))
    return float(np.mean(x)), (sd if sd > 0 else 1.0)


def _build(keys: Sequence[Key], rank: dict[Key, float], top_k: int, lexical: bool) -> list[tuple[str, tuple[Key, ...]]]:
    """The candidates made from a ranking of the single probes: singles, top-k layer sets, and a stack of the
    best single or set with the lexical model (the stack is added by the caller once the best is known)."""
    out = [("single", (k,)) for k in keys]
    if top_k >= 2:
        groups: dict[tuple, list[Key]] = {}
        for k in keys:
            groups.setdefault(k[:2], []).append(k)
        for members in groups.values():
            if len(members) >= 2:
                best = sorted(members, key=lambda k: -rank[k])[:top_k]
                out.append(("layers", tuple(sorted(best, key=lambda k: k[2]))))
    return out


def _auc(y, s) -> float:
    return float(auc_rows(y, np.asarray(s)[None])[0])


def _choose(cands, y, scores, stats, lexical: bool) -> tuple[list, list[float]]:
    """Add the stack of the best activation candidate; return candidates and their AUCs on ``y``."""
    aucs = [_auc(y, _combine(parts, scores, stats)) for _, parts in cands]
    if lexical:
        best = cands[int(np.nanargmax(aucs))][1]
        stack = ("stack", (*best, (LEXICAL,)))
        cands = [*cands, stack]
        aucs.append(_auc(y, _combine(stack[1], scores, stats)))
    return cands, aucs


def _paired(y, groups, a, b, cfg: RecipeConfig) -> tuple[float, tuple[float, float], float]:
    d = _auc(y, a) - _auc(y, b)
    if cfg.n_bootstrap == 0:
        return d, (float("nan"), float("nan")), float("nan")
    W = bootstrap_counts(groups, cfg.n_bootstrap, cfg.seed + 31)
    ds = auc_weighted(y, a, W) - auc_weighted(y, b, W)
    ds = ds[np.isfinite(ds)]
    lo, hi = np.quantile(ds, [(1 - cfg.ci_level) / 2, 1 - (1 - cfg.ci_level) / 2])
    p = min(1.0, 2 * min(float(np.mean(ds <= 0)), float(np.mean(ds >= 0))))
    return d, (float(lo), float(hi)), p


def _nested(keys, y, groups, fold, results: dict[Key, LayerResult], lexical: LexicalResult | None,
            cfg: RecipeConfig, allow_lexical: bool) -> NestedResult | None:
    if lexical is None or lexical.inner_oof is None:
        return None
    folds = np.unique(fold[fold >= 0])
    out = np.full(len(y), np.nan)
    chosen = []
    for i, f in enumerate(folds):
        train, test = (fold != f) & (fold >= 0), fold == f
        inner = {k: results[k].inner_oof[i] for k in keys}
        inner[(LEXICAL,)] = lexical.inner_oof[i]
        oof = {k: results[k].oof_scores for k in keys}
        oof[(LEXICAL,)] = lexical.oof_scores
        yt = y[train]
        tr_scores = {k: v[train] for k, v in inner.items()}
        stats = {k: _stats(v) for k, v in tr_scores.items()}
        rank = {k: _auc(yt, tr_scores[k]) for k in keys}
        cands, aucs = _choose(_build(keys, rank, cfg.top_k, False), yt, tr_scores, stats,
                              allow_lexical and cfg.stack_lexical)
        kind, parts = cands[int(np.nanargmax(aucs))]
        chosen.append(Candidate(kind, parts, float("nan"), (float("nan"),) * 2, float("nan"), np.zeros(0)).name)
        out[test] = _combine(parts, {k: v[test] for k, v in oof.items()}, stats)
    used = fold >= 0
    yu, gu, su, lu = y[used], groups[used], out[used], lexical.oof_scores[used]
    d, ci, p = _paired(yu, gu, su, lu, cfg)
    return NestedResult(auc=_auc(yu, su), auc_ci=auc_ci(yu, su, gu, cfg.n_bootstrap, cfg.ci_level, cfg.seed),
                        pair_accuracy=pair_accuracy(yu, su, gu), chosen_per_fold=tuple(chosen),
                        lexical_auc=_auc(yu, lu), delta_auc=d, delta_ci=ci, p_value=p, scores=out)


def select_recipe(results: Sequence[LayerResult], y, groups, fold, lexical: LexicalResult | None = None,
                  config: RecipeConfig | None = None) -> RecipeSelection:
    """Nested choice of the recipe among ``results`` (binary probes with ``inner_oof``, any readouts, hooks
    and layers, all on the same folds ``fold``) and, when given, the lexical model on the same folds.

    Example:
        >>> from riskscope.probes import ProbeConfig, evaluate_layers
        >>> rng = np.random.default_rng(0)
        >>> y = np.tile([1, 0], 40); groups = np.repeat(np.arange(40), 2)
        >>> X = rng.normal(size=(3, 80, 8)); X[1:, :, 0] += 2 * y
        >>> ev = evaluate_layers(X, y, groups, ProbeConfig(folds=3, inner_folds=2, n_bootstrap=50))
        >>> sel = select_recipe(ev.results, y, groups, ev.folds, config=RecipeConfig(n_bootstrap=50))
        >>> sel.chosen.auc > 0.8, sel.nested is None
        (True, True)
    """
    config = config or RecipeConfig()
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    fold = np.asarray(fold)
    by_key: dict[Key, LayerResult] = {}
    for r in results:
        if not isinstance(r, LayerResult) or r.inner_oof is None:
            raise ProbeError("select_recipe needs binary probe results with inner-fold scores (evaluate_layers)")
        by_key[(r.readout, r.hook, int(r.layer))] = r
    keys = list(by_key)
    if not keys:
        raise ProbeError("select_recipe: no candidates")
    used = fold >= 0
    scores = {k: by_key[k].oof_scores for k in keys}
    if lexical is not None:
        scores[(LEXICAL,)] = lexical.oof_scores
    stats = {k: _stats(v[used]) for k, v in scores.items()}
    rank = {k: by_key[k].auc for k in keys}
    yu, gu = y[used], groups[used]
    cands, _ = _choose(_build(keys, rank, config.top_k, False), yu, {k: v[used] for k, v in scores.items()}, stats,
                       lexical is not None and config.stack_lexical)
    built = []
    for kind, parts in cands:
        s = np.full(len(y), np.nan)
        s[used] = _combine(parts, {k: v[used] for k, v in scores.items()}, stats) if kind != "single" \
            else scores[parts[0]][used]
        ci = auc_ci(yu, s[used], gu, config.n_bootstrap, config.ci_level, config.seed) if kind != "single" \
            else by_key[parts[0]].auc_ci
        built.append(Candidate(kind, parts, _auc(yu, s[used]), tuple(ci), pair_accuracy(yu, s[used], gu), s))
    order = sorted(range(len(built)), key=lambda i: (-built[i].auc if np.isfinite(built[i].auc) else np.inf, i))
    built = [built[i] for i in order]
    chosen = built[0]
    best_act = next(c for c in built if not c.uses_lexical)
    nested = _nested(keys, y, groups, fold, by_key, lexical, config, True)
    nested_act = _nested(keys, y, groups, fold, by_key, lexical, config, False) if config.stack_lexical else nested
    return RecipeSelection(candidates=tuple(built), chosen=chosen, best_activations=best_act, nested=nested,
                           nested_activations=nested_act, config=config)


__all__ = ["LEXICAL", "Candidate", "NestedResult", "RecipeConfig", "RecipeSelection", "key_name", "select_recipe"]
