"""Benchmark: recipe selection as ``riskscope run`` does it vs a scikit-learn grid search per candidate.

Same store, same candidates (readout x hook x layer of the store), same nested grouped folds, same C grid,
same lexical model, in the same process:

* **riskscope**: :func:`riskscope.probes.evaluate_layers` per readout (batched Newton-CG over every layer,
  fold and C at once), then :func:`riskscope.probes.select_recipe`;
* **scikit-learn**: for every candidate and outer fold, the loop ``GridSearchCV(StandardScaler +
  LogisticRegression, C grid, cv=the same grouped inner folds, scoring="roc_auc")`` runs (written out, so
  the inner-validation scores at the chosen C are kept for the nested selection, and so the ``span``
  readout can be scored on the ``mean`` readout as riskscope does), then the outer-training refit scores
  the test fold; the same :func:`select_recipe` then runs on those scores.

Reports the wall and CPU time of both probe steps and their ratio, whether the chosen recipe and the nested
choice per fold agree, and the largest |AUC difference| over the candidates.

    PYTHONPATH=src .venv/bin/python bench/bench_recipe.py --store RUN/store --layers 9,15,21 --threads 2
    PYTHONPATH=src .venv/bin/python bench/bench_recipe.py --store RUN/store --layers 9,15,21 \
        --write docs/benchmarks_probes.md        # appends (replaces) the "Recipe selection" section

The shuffled-label control is off on both sides (it is not part of the choice).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from riskscope.data import Store
from riskscope.probes import ProbeConfig, RecipeConfig, auc_ci, evaluate_layers, lexical_baseline, select_recipe
from riskscope.probes import nested_folds

SECTION = "## Recipe selection vs scikit-learn"


def _sk_candidate(X, Xe, y, folds, Cs, tol):
    """(oof (N,), inner_oof (F, N), chosen C per fold) of one candidate by an explicit sklearn grid search."""
    F, G, N = folds.inner_train.shape
    oof = np.full(N, np.nan)
    inner = np.full((F, N), np.nan)
    chosen = []
    for f in range(F):
        vals = np.full((G, len(Cs), N), np.nan)
        aucs = np.full((G, len(Cs)), np.nan)
        for g in range(G):
            tr, va = folds.inner_train[f, g], folds.inner_val[f, g]
            sc = StandardScaler().fit(X[tr])
            for c, C in enumerate(Cs):
                m = LogisticRegression(C=C, tol=tol, max_iter=10_000).fit(sc.transform(X[tr]), y[tr])
                vals[g, c, va] = m.decision_function(sc.transform(Xe[va]))
                aucs[g, c] = roc_auc_score(y[va], vals[g, c, va])
        best = int(np.argmax(np.nanmean(aucs, axis=0)))  # ties: the smallest C, as GridSearchCV
        chosen.append(float(Cs[best]))
        inner[f] = np.nansum(np.where(np.isnan(vals[:, best]), 0.0, vals[:, best]), axis=0)
        inner[f, ~folds.outer_train[f]] = np.nan
        tr, te = folds.outer_train[f], folds.fold == f
        sc = StandardScaler().fit(X[tr])
        m = LogisticRegression(C=Cs[best], tol=tol, max_iter=10_000).fit(sc.transform(X[tr]), y[tr])
        oof[te] = m.decision_function(sc.transform(Xe[te]))
    return oof, inner, tuple(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--hooks", default="resid_post")
    ap.add_argument("--layers", default="9,15,21", help="comma list of layers (both sides use the same ones)")
    ap.add_argument("--readouts", default="last,mean,max,span")
    ap.add_argument("--sk-tol", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    store = Store.open(args.store)
    hooks = args.hooks.split(",")
    layers = [int(x) for x in args.layers.split(",")]
    points = [p for p in store.points if p.hook in hooks and p.layer in layers]
    y = np.asarray(store.labels).astype(int)
    groups = np.array([p if p is not None else r["id"] for p, r in zip(store.pair_ids, store.rows)])
    cfg = ProbeConfig(shuffled_control=False)
    folds = nested_folds(groups, cfg.folds, cfg.inner_folds, cfg.seed)
    acts = {}
    for p in points:
        for r in args.readouts.split(","):
            if r in store.readouts(p):
                acts[(r, p.hook, p.layer)] = np.asarray(store.read(p, readout=r))
    lex = lexical_baseline(store.texts, y, groups, folds.fold, seed=cfg.seed, inner_folds=cfg.inner_folds)
    rcfg = RecipeConfig(seed=cfg.seed)
    load0 = os.getloadavg()

    def evaluation(r, h, lay):
        return acts[("mean", h, lay)] if r == "span" and ("mean", h, lay) in acts else acts[(r, h, lay)]

    t, c = time.perf_counter(), time.process_time()
    ours = []
    for r in dict.fromkeys(k[0] for k in acts):
        a = {(h, lay): x for (rr, h, lay), x in acts.items() if rr == r}
        ev = {k: evaluation(r, *k) for k in a} if r == "span" else None
        ours.extend(evaluate_layers(a, y, groups, cfg, readout=r, eval_acts=ev).results)
    sel_ours = select_recipe(ours, y, groups, folds.fold, lex, rcfg)
    t_ours, c_ours = time.perf_counter() - t, time.process_time() - c

    t, c = time.perf_counter(), time.process_time()
    theirs = []
    for res in ours:
        k = (res.readout, res.hook, int(res.layer))
        oof, inner, Cs = _sk_candidate(acts[k], evaluation(*k), y, folds, cfg.Cs, args.sk_tol)
        theirs.append(replace(res, oof_scores=oof, inner_oof=inner, C_per_fold=Cs, auc=float(roc_auc_score(y, oof)),
                              auc_ci=auc_ci(y, oof, groups, cfg.n_bootstrap, cfg.ci_level, cfg.seed)))
    sel_sk = select_recipe(theirs, y, groups, folds.fold, lex, rcfg)
    t_sk, c_sk = time.perf_counter() - t, time.process_time() - c
    load1 = os.getloadavg()

    diffs = [abs(a.auc - b.auc) for a, b in zip(ours, theirs)]
    c_agree = np.mean([a.C_per_fold == b.C_per_fold for a, b in zip(ours, theirs)])
    same = sel_ours.chosen.name == sel_sk.chosen.name
    same_folds = sel_ours.nested.chosen_per_fold == sel_sk.nested.chosen_per_fold
    cmd = (f"PYTHONPATH=src .venv/bin/python bench/bench_recipe.py --store RUN/store --hooks {args.hooks} "
           f"--layers {args.layers} --readouts {args.readouts}{f' --threads {args.threads}' if args.threads else ''}")
    lines = [
        SECTION, "",
        f"Command: `{cmd}` (RUN = a `make run` folder of the default model on `{store.manifest['dataset']['name']}`, "
        f"{len(y)} texts). torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (other work shared the 2 cores, niced).", "",
        f"Candidates: {len(ours)} single probes ({args.readouts} x {args.hooks} x layers {args.layers}), their "
        f"layer sets (the best 3 layers of each readout) and the stack with the lexical model; {cfg.folds} outer "
        f"x {cfg.inner_folds} inner grouped folds x {len(cfg.Cs)} C; the lexical model is fitted once and shared.", "",
        "| path | wall (s) | CPU (s) | speed-up, wall | speed-up, CPU |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| riskscope `evaluate_layers` + `select_recipe` | {t_ours:.1f} | {c_ours:.1f} | {t_sk / t_ours:.1f}x | "
        f"{c_sk / c_ours:.1f}x |",
        f"| scikit-learn grid search per candidate (lbfgs, tol {args.sk_tol:g}) + `select_recipe` | {t_sk:.1f} | "
        f"{c_sk:.1f} | 1.0x | 1.0x |", "",
        f"Chosen recipe: riskscope **{sel_ours.chosen.name}** (CV AUC {sel_ours.chosen.auc:.4f}), scikit-learn "
        f"**{sel_sk.chosen.name}** ({sel_sk.chosen.auc:.4f}): {'the same' if same else 'DIFFERENT'}. Nested "
        f"choice per outer fold {'identical' if same_folds else 'different'}; nested AUC {sel_ours.nested.auc:.4f} vs "
        f"{sel_sk.nested.auc:.4f}, ΔAUC vs lexical {sel_ours.nested.delta_auc:+.4f} vs {sel_sk.nested.delta_auc:+.4f}. "
        f"Max |AUC difference| over the single candidates {max(diffs):.5f}; the inner folds chose the same C in "
        f"{100 * c_agree:.0f} % of candidates (all folds).", "",
        "| candidate | riskscope AUC | scikit-learn AUC |", "| --- | ---: | ---: |",
    ]
    lines += [f"| {a.readout} {a.hook}.{a.layer} | {a.auc:.4f} | {b.auc:.4f} |" for a, b in zip(ours, theirs)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.is_file() else "# Probe benchmarks\n"
        old = re.sub(rf"\n{re.escape(SECTION)}\n.*?(?=\n## |\Z)", "\n", old, flags=re.S).rstrip("\n")
        args.write.write_text(old + "\n\n" + text)


if __name__ == "__main__":
    main()
