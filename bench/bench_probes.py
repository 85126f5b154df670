"""Benchmark: batched torch probes (fit_many) vs a loop of scikit-learn LogisticRegression fits.

Same data, same grouped folds, same standardisation (training rows of each
fold), same C grid, same objective; sklearn runs lbfgs with a tight tolerance.
Reports wall time of both, the speed ratio and, per layer, the largest
|AUC difference| over the C grid (out-of-fold AUC pooled over the folds).

    PYTHONPATH=src .venv/bin/python bench/bench_probes.py            # 30 x 720 x 576, ~2-4 min
    PYTHONPATH=src .venv/bin/python bench/bench_probes.py --quick    # 6 layers, seconds
    PYTHONPATH=src .venv/bin/python bench/bench_probes.py --write docs/benchmarks_probes.md

The data imitate residual-stream activations: a 32-factor low-rank structure
shared within each matched pair (both texts share a topic), isotropic noise,
a weak risky-vs-benign direction whose strength grows with depth, and
per-feature scales spanning orders of magnitude plus large offsets.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from riskscope.probes import ProbeConfig, evaluate_layers, fit_many, group_folds


def make_activations(n_layers: int, n_pairs: int, dim: int, seed: int = 0, signal: float = 0.15):
    """(X_LND float32, y, groups): structured, weakly separable, badly scaled activations."""
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs
    y = np.tile([1, 0], n_pairs)
    groups = np.repeat(np.arange(n_pairs), 2)
    k = 32
    pair_latent = rng.standard_normal((n_pairs, k))
    X = np.empty((n_layers, n, dim), dtype=np.float32)
    for layer in range(n_layers):
        loadings = rng.standard_normal((k, dim)) * rng.gamma(1.0, 1.0, size=(k, 1))
        latent = pair_latent[groups] + 0.5 * rng.standard_normal((n, k))
        direction = rng.standard_normal(dim)
        direction /= np.linalg.norm(direction)
        strength = signal * (0.3 + layer / n_layers) * np.sqrt(dim)
        x = latent @ loadings + rng.standard_normal((n, dim)) + strength * np.outer(y - 0.5, direction)
        X[layer] = x * rng.lognormal(0.0, 1.0, dim) + 3.0 * rng.standard_normal(dim)
    return X, y, groups


def sklearn_loop(X, y, fold, Cs, tol):
    """(L, F, C, N) decision values of sklearn fits on each fold's standardised training rows."""
    L, N, _ = X.shape
    F = int(fold.max()) + 1
    out = np.zeros((L, F, len(Cs), N))
    for layer in range(L):
        x = X[layer].astype(np.float64)
        for f in range(F):
            train = fold != f
            mu, sd = x[train].mean(0), x[train].std(0)
            z = (x - mu) / np.where(sd > 0, sd, 1.0)
            for c, C in enumerate(Cs):
                model = LogisticRegression(C=C, tol=tol, max_iter=100_000).fit(z[train], y[train])
                out[layer, f, c] = model.decision_function(z)
    return out


def oof_auc(scores_FCN, y, fold):
    """(C,) out-of-fold AUC per C: each row scored by the model that did not train on it."""
    F, C, N = scores_FCN.shape
    oof = np.zeros((C, N))
    for f in range(F):
        oof[:, fold == f] = scores_FCN[f][:, fold == f]
    return np.array([roc_auc_score(y, oof[c]) for c in range(C)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=360)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched fit (best is reported)")
    ap.add_argument("--sk-tol", type=float, default=1e-8, help="sklearn lbfgs tolerance")
    ap.add_argument("--quick", action="store_true", help="6 layers only")
    ap.add_argument("--no-nested", action="store_true", help="skip the full evaluate_layers timing")
    ap.add_argument("--write", type=Path, help="also write the markdown section to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads for both sides (default: all)")
    args = ap.parse_args()
    if args.quick:
        args.layers = 6
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # numpy / scipy BLAS used by sklearn

    X, y, groups = make_activations(args.layers, args.pairs, args.dim)
    L, N, D = X.shape
    fold = group_folds(groups, args.folds, seed=0)
    masks = np.stack([fold != f for f in range(args.folds)])
    Cs = ProbeConfig().Cs
    load0 = os.getloadavg()[0]

    fit_many(X[:2], y, masks, Cs)  # warm-up (allocations, MKL init)
    ours_times, ours_cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        fit = fit_many(X, y, masks, Cs, dtype=torch.float32, tol=1e-5)
        ours = fit.decision_function(X)[:, :, :, 0]  # (L, F, C, N)
        ours_times.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
    best = int(np.argmin(ours_times))
    t_ours, c_ours = ours_times[best], ours_cpu[best]

    t, c = time.perf_counter(), time.process_time()
    theirs = sklearn_loop(X, y, fold, Cs, args.sk_tol)
    t_sk, c_sk = time.perf_counter() - t, time.process_time() - c

    auc_ours = np.stack([oof_auc(ours[layer], y, fold) for layer in range(L)])  # (L, C)
    auc_sk = np.stack([oof_auc(theirs[layer], y, fold) for layer in range(L)])
    diff = np.abs(auc_ours - auc_sk).max(1)
    best_c = auc_sk.argmax(1)

    t_nested = None
    if not args.no_nested:
        cfg = ProbeConfig(n_bootstrap=1000)
        t, c = time.perf_counter(), time.process_time()
        ev = evaluate_layers(X, y, groups, cfg)
        t_nested, c_nested = time.perf_counter() - t, time.process_time() - c
        sh = np.array([r.shuffled_auc for r in ev.results])
    load1 = os.getloadavg()[0]

    lines = [
        "## Batched probes vs scikit-learn",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads"
        f"{f' (BLAS limited to {args.threads})' if args.threads else ''}; load average {load0:.1f} at start, "
        f"{load1:.1f} at end (other work shares the machine, so times are upper bounds).",
        "",
        f"Command: `PYTHONPATH=src .venv/bin/python bench/bench_probes.py"
        f"{' --quick' if args.quick else ''}{f' --threads {args.threads}' if args.threads else ''}`",
        "",
        f"Problem: {L} layers x {N} rows ({N // 2} pairs) x {D} features, {args.folds} grouped folds x "
        f"{len(Cs)} C values (L2) = {L * args.folds * len(Cs)} fits.",
        "",
        "| solver | wall (s) | CPU (s) | speed-up, wall | speed-up, CPU |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| riskscope `fit_many` (float32 Newton-CG, tol 1e-5), best of {args.repeats} | {t_ours:.2f} | {c_ours:.2f} "
        f"| {t_sk / t_ours:.1f}x | {c_sk / c_ours:.1f}x |",
        f"| sklearn `LogisticRegression` lbfgs loop (tol {args.sk_tol:g}) | {t_sk:.2f} | {c_sk:.2f} | 1.0x | 1.0x |",
        "",
        f"All batched runs (wall): {', '.join(f'{x:.2f}' for x in ours_times)} s. "
        "CPU time is process time summed over threads; it is less disturbed by other work on the machine. "
        f"Max |AUC difference| over layers and C: {diff.max():.5f} (must be < 0.005).",
        "",
        "| layer | sklearn AUC (best C) | riskscope AUC (same C) | max abs AUC diff over C |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for layer in range(L):
        c = best_c[layer]
        lines.append(f"| {layer} | {auc_sk[layer, c]:.4f} | {auc_ours[layer, c]:.4f} | {diff[layer]:.5f} |")
    if t_nested is not None:
        lines += [
            "",
            f"Full `evaluate_layers` (nested CV: {args.folds} outer x {ProbeConfig().inner_folds} inner folds x "
            f"{len(Cs)} C, plus the shuffled-label control, 1000 pair-bootstrap resamples per layer): "
            f"{t_nested:.1f} s wall ({c_nested:.1f} s CPU) for {L} layers; shuffled-control AUC mean {sh.mean():.3f} "
            f"(range {sh.min():.3f}-{sh.max():.3f}).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text("# Probe benchmarks\n\n" + text)
    if diff.max() >= 0.005:
        raise SystemExit(f"AUC difference {diff.max():.5f} >= 0.005")


if __name__ == "__main__":
    main()
