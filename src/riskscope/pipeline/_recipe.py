"""The recipe step: probes of every stored readout, the nested choice of a recipe, and its refit on all rows.

:func:`readout_results` evaluates the probes of the store's extra readouts (``mean``, ``max``, ``span``) on
the same folds as the primary ones; :func:`recipe_probe` refits the chosen :class:`~riskscope.probes.Candidate`
on every row as a :class:`~riskscope.probes.Probe` (a single probe, or a recipe of several parts and/or the
lexical model whose standardised logits are averaged and calibrated on their out-of-fold values).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..data import Store
from ..probes import (LayerResult, LexicalModel, LexicalResult, LogisticProbe, Probe, ProbeConfig, RecipeSelection,
                      evaluate_layers)


def readout_results(store: Store, points, y, groups, pcfg: ProbeConfig, readouts: tuple[str, ...] | None,
                    status: Callable[[str], None] | None = None) -> list[LayerResult]:
    """Binary probes of every extra readout of ``points`` (no shuffled control: the primary readout has it).

    ``span`` is trained on the tokens where twins differ and scored, in every fold, on the ``mean`` readout
    (what a single text gives at scoring time); without a stored ``mean`` it is scored on itself.
    """
    primary = store.manifest["positions"]
    found: dict[str, list] = {}
    for p in points:
        for r in store.readouts(p):
            if r != primary and (readouts is None or r in readouts):
                found.setdefault(r, []).append(p)
    cfg = replace(pcfg, shuffled_control=False)
    out: list[LayerResult] = []
    for r, pts in found.items():
        if status:
            status(f"fitting {r} probes on {len(pts)} hook points")
        acts = {(p.hook, p.layer): store.read(p, readout=r) for p in pts}
        ev_acts = None
        if r == "span" and all("mean" in store.readouts(p) for p in pts):
            ev_acts = {(p.hook, p.layer): store.read(p, readout="mean") for p in pts}
        out.extend(evaluate_layers(acts, y, groups, cfg, readout=r, eval_acts=ev_acts).results)
    return out


def _fit_part(store: Store, result: LayerResult, penalty: str) -> Probe:
    X = store.read(f"{result.hook}.{result.layer}", readout=result.readout)
    C = float(np.median(result.C_per_fold))
    est = LogisticProbe(penalty=penalty, C=C).fit(X, store.labels)
    return Probe(estimator=est, hook=result.hook, layer=int(result.layer),
                 readout=None if result.readout == "last" else result.readout,
                 positions=result.readout if result.readout in ("last", "mean") else "last", meta={"C": C})


def recipe_probe(store: Store, selection: RecipeSelection, results: list[LayerResult], lexical: LexicalResult | None,
                 penalty: str, meta: dict) -> Probe:
    """The chosen recipe refit on all rows of ``store``, tied to the store's model and weights."""
    chosen = selection.chosen
    by_key = {(r.readout, r.hook, int(r.layer)): r for r in results}
    probes = [_fit_part(store, by_key[k], penalty) for k in chosen.parts if k in by_key]
    model = store.manifest["model"]
    head = probes[0]
    common = dict(model_id=model["model"], weight_hash=model["weight_hash"],
                  meta={**meta, "recipe": chosen.to_dict(), "C": head.meta["C"]})
    if chosen.kind == "single":
        return replace(head, **common)
    lex = None
    zs = [by_key[k].oof_scores for k in chosen.parts if k in by_key]
    if chosen.uses_lexical and lexical is not None:
        lex = LexicalModel(C=float(np.median(lexical.C_per_fold))).fit(store.texts, store.labels)
        zs.append(lexical.oof_scores)
    used = np.all([np.isfinite(z) for z in zs], axis=0)
    mean = [float(np.mean(z[used])) for z in zs]
    scale = [float(np.std(z[used])) or 1.0 for z in zs]
    s = np.mean([(z[used] - m) / sd for z, m, sd in zip(zs, mean, scale)], axis=0)
    platt = LogisticRegression(C=1e4, max_iter=1000).fit(s[:, None], store.labels[used])
    combine = {"mean": mean, "scale": scale, "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    return replace(head, parts=tuple(probes[1:]), lexical=lex, combine=combine, **common)


def recipe_oof_probability(selection: RecipeSelection, probe: Probe) -> np.ndarray:
    """(N,) out-of-fold probability of the chosen recipe, on the scale its bundle gives."""
    s = np.asarray(selection.chosen.oof_scores, dtype=np.float64)
    if not probe.is_recipe:
        return 1.0 / (1.0 + np.exp(-s))
    c = probe.combine or {}
    return 1.0 / (1.0 + np.exp(-(float(c["a"]) * s + float(c["b"]))))


__all__ = ["readout_results", "recipe_oof_probability", "recipe_probe"]
