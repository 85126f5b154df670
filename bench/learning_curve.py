"""Learning curve of the built-in data: cross-validated AUC over 25/50/75/100 % of the pairs.

For each fraction and seed, a subset of the pairs is drawn (the same fraction of every category, whole
pairs), and the run's probe protocol is applied to it: riskscope.probes.evaluate_layers at the run's
bundled hook point (nested grouped CV, C chosen by the inner folds) with the lexical baseline (TF-IDF on the
same folds). The activations are read from the run's store, so nothing runs through the model.

With ``--recipes`` the whole recipe protocol of ``riskscope run`` is applied to each subset instead: probes
at every point and readout of the store, then ``select_recipe`` (single points, layer sets, the stack with
the lexical model); the table gives the best activation-only recipe's CV AUC (chosen on the subset, as the
run's bundle is) and the nested estimate of the whole selection (outer folds never seen by the choice).

    python bench/learning_curve.py --run /tmp/eval_run [--seeds 3] [--out docs/learning_curve.json]
    python bench/learning_curve.py --run RUN --recipes [--seeds 3]   # RUN may be a bare store

Prints a Markdown table (mean and range over seeds) and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from riskscope.pipeline import open_run_store
from riskscope.probes import Probe, ProbeConfig, RecipeConfig, evaluate_layers, select_recipe


def subset_pairs(categories: dict[str, list[str]], fraction: float, seed: int) -> set[str]:
    """``fraction`` of each category's pairs (at least 2), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for cat in sorted(categories):
        ids = sorted(categories[cat])
        k = max(2, int(round(fraction * len(ids))))
        keep.update(rng.choice(ids, size=min(k, len(ids)), replace=False).tolist())
    return keep


def recipe_curve_point(store, idx: np.ndarray, y, groups, texts, folds: int, seed: int,
                       readouts: set[str] | None = None) -> dict:
    """The run's recipe protocol on rows ``idx``: probes at every stored point and readout, then the nested
    recipe selection with the lexical model on the same folds."""
    config = ProbeConfig(folds=folds, n_bootstrap=200, seed=seed)
    results, lexical, fold = [], None, None
    for readout in sorted({r for p in store.points for r in store.readouts(p) if not readouts or r in readouts}):
        acts = {(p.hook, p.layer): store.read(p, readout=readout)[idx] for p in store.points
                if readout in store.readouts(p)}
        ev = evaluate_layers(acts, y[idx], groups[idx], config, readout=readout,
                             texts=None if lexical is not None else [texts[i] for i in idx])
        results += list(ev.results)
        lexical = lexical or ev.lexical
        fold = ev.folds
    sel = select_recipe(results, y[idx], groups[idx], fold, lexical, RecipeConfig(n_bootstrap=200, seed=seed))
    best, nested = sel.best_activations, sel.nested_activations
    return {"probe_auc": best.auc, "probe_auc_ci": list(best.auc_ci), "probe_pair_accuracy": best.pair_accuracy,
            "recipe": best.kind + " " + "+".join(":".join(map(str, k)) for k in best.parts),
            "nested_auc": nested.auc if nested else None, "nested_pair_accuracy": nested.pair_accuracy if nested else None,
            "lexical_auc": lexical.auc, "lexical_pair_accuracy": lexical.pair_accuracy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="/tmp/eval_run", help="run folder (its store and probe bundle)")
    ap.add_argument("--fractions", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the raw figures here as JSON")
    ap.add_argument("--recipes", action="store_true", help="the run's whole recipe protocol on each subset")
    ap.add_argument("--readouts", default="", help="with --recipes: only these stored readouts (e.g. mean)")
    args = ap.parse_args()
    run = Path(args.run)
    store = open_run_store(run)
    rows = store.rows
    y = np.asarray([int(r["label"]) for r in rows])
    groups = np.asarray([r["pair_id"] for r in rows])
    texts = [r["text"] for r in rows]
    cats: dict[str, list[str]] = {}
    for r in rows:
        if r["label"] == 1:
            cats.setdefault(r["category"], []).append(r["pair_id"])
    fractions = [float(f) for f in args.fractions.split(",")]
    if args.recipes:  # needs only the store: every point and readout in it compete, as in `riskscope run`
        return recipe_curve(store, cats, y, groups, texts, fractions, args)
    probe = Probe.load(run)
    X = store.read(probe.point)
    results = []
    for frac in fractions:
        for seed in range(args.seeds if frac < 1 else 1):
            t = time.perf_counter()
            keep = subset_pairs(cats, frac, seed)
            idx = np.flatnonzero([g in keep for g in groups])
            cv_seed = seed if frac < 1 else 0
            ev = evaluate_layers({(probe.hook, probe.layer): X[idx]}, y[idx], groups[idx],
                                 ProbeConfig(folds=args.folds, n_bootstrap=200, seed=cv_seed),
                                 texts=[texts[i] for i in idx])
            res = ev.best
            results.append({"fraction": frac, "seed": seed, "pairs": len(keep), "probe_auc": res.auc,
                            "probe_auc_ci": list(res.auc_ci), "probe_pair_accuracy": res.pair_accuracy,
                            "lexical_auc": ev.lexical.auc, "lexical_pair_accuracy": ev.lexical.pair_accuracy,
                            "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(results[-1]), flush=True)
    # at 100 % the subset is the whole set: other CV seeds there, so its spread is the folds' alone
    for seed in range(1, args.seeds if 1.0 in fractions else 1):
        ev = evaluate_layers({(probe.hook, probe.layer): X}, y, groups,
                             ProbeConfig(folds=args.folds, n_bootstrap=200, seed=seed), texts=texts)
        results.append({"fraction": 1.0, "seed": seed, "pairs": len(set(groups)), "probe_auc": ev.best.auc,
                        "probe_auc_ci": list(ev.best.auc_ci), "probe_pair_accuracy": ev.best.pair_accuracy,
                        "lexical_auc": ev.lexical.auc, "lexical_pair_accuracy": ev.lexical.pair_accuracy})
        print(json.dumps(results[-1]), flush=True)
    print(f"\nprobe {probe.name} ({probe.positions}), {args.folds}-fold grouped CV, seeds {args.seeds}\n")
    print("| share of pairs | pairs | probe CV AUC (mean, min-max) | probe pair acc. | lexical CV AUC (mean, min-max) "
          "| lexical pair acc. |")
    print("|---:|---:|---:|---:|---:|---:|")
    for frac in fractions:
        rs = [r for r in results if r["fraction"] == frac]
        pa = np.array([r["probe_auc"] for r in rs])
        la = np.array([r["lexical_auc"] for r in rs])
        print(f"| {frac:.0%} | {rs[0]['pairs']} | {pa.mean():.3f} ({pa.min():.3f}-{pa.max():.3f}) | "
              f"{np.mean([r['probe_pair_accuracy'] for r in rs]):.3f} | {la.mean():.3f} ({la.min():.3f}-{la.max():.3f}) | "
              f"{np.mean([r['lexical_pair_accuracy'] for r in rs]):.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"probe": probe.name, "positions": probe.positions, "folds": args.folds,
                                              "results": results}, indent=1) + "\n")


def recipe_curve(store, cats, y, groups, texts, fractions, args) -> None:
    results = []
    for frac in fractions:
        for seed in range(args.seeds):  # at 100 % the seeds are fold assignments
            t = time.perf_counter()
            keep = subset_pairs(cats, frac, seed) if frac < 1 else set(groups.tolist())
            idx = np.flatnonzero([g in keep for g in groups])
            res = recipe_curve_point(store, idx, y, groups, texts, args.folds, seed,
                                     set(filter(None, args.readouts.split(","))) or None)
            results.append({"fraction": frac, "seed": seed, "pairs": len(keep), **res,
                            "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(results[-1]), flush=True)
    print(f"\nrecipe protocol ({args.folds}-fold grouped CV, nested selection), seeds {args.seeds}\n")
    print("| share of pairs | pairs | best activation recipe, CV AUC (mean, min-max) | its pair acc. "
          "| nested selection AUC (mean) | lexical CV AUC (mean, min-max) | lexical pair acc. |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for frac in fractions:
        rs = [r for r in results if r["fraction"] == frac]
        pa, la = np.array([r["probe_auc"] for r in rs]), np.array([r["lexical_auc"] for r in rs])
        na = np.array([r["nested_auc"] for r in rs if r["nested_auc"] is not None])
        print(f"| {frac:.0%} | {rs[0]['pairs']} | {pa.mean():.3f} ({pa.min():.3f}-{pa.max():.3f}) | "
              f"{np.mean([r['probe_pair_accuracy'] for r in rs]):.3f} | {na.mean() if len(na) else float('nan'):.3f} | "
              f"{la.mean():.3f} ({la.min():.3f}-{la.max():.3f}) | {np.mean([r['lexical_pair_accuracy'] for r in rs]):.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"protocol": "recipes", "folds": args.folds, "results": results},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
