"""Benchmark: the probe step's batched solve, layers one at a time (the default) vs all layers in one batch.

`riskscope run` fits, per hook, 2 label sets (real and shuffled) x 25 masks (5 outer + 20 inner grouped folds)
x 4 C = 200 L2-logistic problems per layer with :func:`riskscope.probes.fit_many`. Batched over layers, a
problem stays in the Newton-CG batch while any layer still needs it, so the slowest layer sets every layer's
iteration count; one layer at a time (``per_layer=True``) each layer stops when it has converged. Both modes
run here on the same real activations (a run's store), alternating, and their scores are compared.

    PYTHONPATH=src .venv/bin/python bench/bench_probe_layers.py --store RUN/store --hook mlp_neurons \
        --layers 0,5,10,15,20,25 [--repeats 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, save_json, table  # noqa: E402
from riskscope.data import Store  # noqa: E402
from riskscope.probes import DEFAULT_CS, fit_many, nested_folds, shuffle_labels  # noqa: E402


def oof_aucs(z_LMCKN: np.ndarray, y_T: np.ndarray, folds) -> np.ndarray:
    """Out-of-fold AUC (outer folds pooled) per label set, layer and C: (T, L, C)."""
    from sklearn.metrics import roc_auc_score

    n_masks = folds.masks.shape[0]
    T, (L, _, C) = len(y_T), z_LMCKN.shape[:3]
    out = np.zeros((T, L, C))
    for t in range(T):
        for li in range(L):
            for c in range(C):
                s = np.zeros(len(folds.fold))
                for f in np.unique(folds.fold):
                    rows = folds.fold == f
                    s[rows] = z_LMCKN[li, t * n_masks + f, c, 0, rows]
                out[t, li, c] = roc_auc_score(y_T[t], s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a run's activation store (RUN/store)")
    ap.add_argument("--hook", default="mlp_neurons")
    ap.add_argument("--layers", default="0,5,10,15,20,25", help="comma list, or 'all'")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each mode (alternating)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    store = Store.open(a.store)
    points = [p for p in store.points if p.hook == a.hook and (a.layers == "all" or p.layer in
                                                               {int(x) for x in a.layers.split(",")})]
    if not points:
        sys.exit(f"{a.store}: no {a.hook} points among layers {a.layers}")
    X = np.stack([store.read(p) for p in points])
    y = np.asarray(store.labels, dtype=np.float64)
    groups = np.array([p if p is not None else r["id"] for p, r in zip(store.pair_ids, store.rows)])
    folds = nested_folds(groups, 5, 4, 0)
    y_T = np.stack([y, shuffle_labels(y, groups, np.random.default_rng(7919))])
    masks = np.tile(folds.masks, (2, 1))
    ys = np.repeat(y_T, folds.masks.shape[0], axis=0)
    runs: dict[str, list[tuple[float, float]]] = {"one batch": [], "one layer at a time": []}
    fits = {}
    for _ in range(a.repeats):
        for name, per_layer in (("one batch", False), ("one layer at a time", True)):
            w0, c0 = time.perf_counter(), time.process_time()
            fit = fit_many(X, ys, masks, DEFAULT_CS, tol=1e-5, per_layer=per_layer)
            runs[name].append((time.perf_counter() - w0, time.process_time() - c0))
            fits[name] = fit
    aucs = {k: oof_aucs(f.decision_function(X), y_T, folds) for k, f in fits.items()}
    diff = float(np.abs(aucs["one batch"] - aucs["one layer at a time"]).max())
    best = {k: min(v) for k, v in runs.items()}
    base = best["one batch"]
    rows = [[k, f"{w:.1f}", f"{c:.1f}", f"{base[0] / w:.2f}x", f"{base[1] / c:.2f}x",
             str(fits[k].n_iter.max((1, 2)).tolist())] for k, (w, c) in best.items()]
    print(f"{a.hook}: {len(points)} layers x {X.shape[1]} rows x {X.shape[2]} features; "
          f"{masks.shape[0]} masks x {len(DEFAULT_CS)} C = {masks.shape[0] * len(DEFAULT_CS)} problems per layer")
    print(table(["mode", "wall (s)", "CPU (s)", "speed-up, wall", "speed-up, CPU", "Newton steps, max per layer"], rows))
    print(f"max |out-of-fold AUC difference| between the modes over label sets x layers x C: {diff:.5f}; all converged: "
          f"{bool(all(f.converged.all() for f in fits.values()))}")
    m = machine()
    print(f"torch threads {m['torch_threads']}, load average {m['loadavg']}")
    path = save_json("probe-layers", {"machine": m, "hook": a.hook, "layers": [p.layer for p in points],
                                      "runs": runs, "max_abs_auc_diff": diff})
    print(f"raw: {path}")


if __name__ == "__main__":
    main()
