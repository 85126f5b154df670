"""Array statistics for risk features: paired tests per latent, FDR control, sparse vs dense probes, cosine nulls.

Every function takes arrays and returns arrays or plain dicts; :mod:`._risk` feeds them a model's numbers.

>>> benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2])).round(3).tolist()
[0.04, 0.053, 0.053, 0.2]
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from ..probes import LogisticProbe, auc_ci, auc_rows, auc_weighted, bootstrap_counts, group_folds


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of ``p``, same order; NaN counts as 1."""
    p = np.where(np.isfinite(p), p, 1.0)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def signed_rank_test(d_PF: np.ndarray, min_nonzero: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon signed-rank test of each column of paired differences (normal approximation with continuity
    correction, zeros dropped, no tie correction: conservative). Returns (z, two-sided p) per column; a
    column with fewer than ``min_nonzero`` non-zero differences gets z 0 and p 1 (too few to test)."""
    d = np.asarray(d_PF, dtype=np.float64)
    a = np.abs(d)
    nz = a > 0
    n = nz.sum(0).astype(np.float64)
    zeros = (~nz).sum(0)
    # Zeros tie at the bottom, so a non-zero's rank among the non-zeros is its overall rank minus the zeros.
    ranks = _average_ranks(a) - zeros[None, :]
    w_plus = np.where(d > 0, ranks, 0.0).sum(0)
    mean = n * (n + 1) / 4
    sd = np.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 0, (w_plus - mean - 0.5 * np.sign(w_plus - mean)) / np.where(sd > 0, sd, 1), 0.0)
    ok = n >= min_nonzero
    z = np.where(ok, z, 0.0)
    p = np.where(ok, 2 * norm.sf(np.abs(z)), 1.0)
    return z, np.minimum(p, 1.0)


def _average_ranks(a_PF: np.ndarray) -> np.ndarray:
    """Ranks (1-based, ties averaged) within each column."""
    P, F = a_PF.shape
    order = np.argsort(a_PF, axis=0, kind="stable")
    sorted_a = np.take_along_axis(a_PF, order, 0)
    ranks_sorted = np.broadcast_to(np.arange(1, P + 1, dtype=np.float64)[:, None], (P, F)).copy()
    # average ranks over runs of equal values (column by column only where ties exist)
    ties = (np.diff(sorted_a, axis=0) == 0).any(0)
    for f in np.flatnonzero(ties):
        col = sorted_a[:, f]
        _, start, counts = np.unique(col, return_index=True, return_counts=True)
        for s, c in zip(start, counts):
            if c > 1:
                ranks_sorted[s:s + c, f] = s + (c + 1) / 2
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, 0)
    return ranks


def paired_feature_stats(risky_PF: np.ndarray, benign_PF: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Per latent: mean paired difference (risky - benign) with a pair-bootstrap CI, Cohen's d_z, the
    signed-rank z and p, and BH q-values over all latents."""
    d = np.asarray(risky_PF, np.float64) - np.asarray(benign_PF, np.float64)
    P = len(d)
    mean = d.mean(0)
    sd = d.std(0, ddof=1) if P > 1 else np.zeros(d.shape[1])
    dz = np.where(sd > 0, mean / np.where(sd > 0, sd, 1), 0.0)
    if n_boot > 0:
        w = bootstrap_counts(np.arange(P), n_boot, seed).astype(np.float64)  # (B, P)
        boot = (w @ d) / P
        a = (1 - level) / 2
        lo, hi = np.quantile(boot, [a, 1 - a], axis=0)
    else:
        lo = hi = np.full(d.shape[1], np.nan)
    z, p = signed_rank_test(d)
    return {"mean_diff": mean, "ci_low": lo, "ci_high": hi, "dz": dz, "z": z, "p": p,
            "q": benjamini_hochberg(p), "nonzero_pairs": (d != 0).sum(0)}


def cosine_null(W_FD: np.ndarray, direction_D: np.ndarray, n_random: int = 1000, seed: int = 0) -> dict:
    """Cosine of ``direction`` with every row of ``W``, against isotropic random directions: the observed
    max |cos| and its null distribution (max |cos| of each random direction with all rows)."""
    W = np.asarray(W_FD, np.float64)
    Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    v = np.asarray(direction_D, np.float64)
    cos = Wn @ (v / max(np.linalg.norm(v), 1e-12))
    rng = np.random.default_rng(seed)
    null_max = np.empty(n_random)
    for a in range(0, n_random, 256):
        R = rng.standard_normal((min(256, n_random - a), W.shape[1]))
        R /= np.linalg.norm(R, axis=1, keepdims=True)
        null_max[a:a + len(R)] = np.abs(Wn @ R.T).max(0)
    obs = float(np.abs(cos).max())
    return {"cos_F": cos, "max_abs_cos": obs, "null_max_abs_cos_q95": float(np.quantile(null_max, 0.95)),
            "null_max_abs_cos_q99": float(np.quantile(null_max, 0.99)),
            "p_max": float((1 + (null_max >= obs).sum()) / (1 + n_random)), "n_random": int(n_random),
            "expected_abs_cos_one_row": float(math.sqrt(2 / (math.pi * W.shape[1])))}


def grouped_probe_auc(X_raw: np.ndarray, Z: np.ndarray, y: np.ndarray, groups: np.ndarray, ks=(1, 8, 32),
                      n_folds: int = 5, C: float = 0.1, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Out-of-fold AUC of a dense probe on ``X_raw`` and of sparse probes on ``k`` SAE latents, on the same
    grouped folds (pairs never split). The ``k`` latents are chosen inside each training fold by their
    paired |d_z| there (no test pair is looked at); a control picks ``k`` random latents among those that
    fire. CIs resample pairs; the AUC difference to the dense probe is bootstrapped on the same resamples."""
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    fold = group_folds(groups, n_folds, seed)
    rng = np.random.default_rng(seed)
    names = ["dense"] + [f"sae_top{k}" for k in ks] + [f"sae_random{k}" for k in ks]
    oof = {n: np.zeros(len(y)) for n in names}
    chosen: dict[str, list[list[int]]] = {f"sae_top{k}": [] for k in ks}
    live = np.flatnonzero((Z > 0).any(0))
    for f in range(n_folds):
        tr, te = fold != f, fold == f
        oof["dense"][te] = LogisticProbe(C=C).fit(X_raw[tr], y[tr]).decision_function(X_raw[te])
        d_tr = _pair_diffs(Z[tr], y[tr], groups[tr])
        sd = d_tr.std(0, ddof=1)
        score = np.where(sd > 0, np.abs(d_tr.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
        rank = np.argsort(-score, kind="stable")
        for k in ks:
            sel = rank[:k]
            chosen[f"sae_top{k}"].append(sel.tolist())
            oof[f"sae_top{k}"][te] = LogisticProbe(C=C).fit(Z[tr][:, sel], y[tr]).decision_function(Z[te][:, sel])
            rnd = rng.choice(live, size=min(k, len(live)), replace=False) if len(live) else rank[:k]
            oof[f"sae_random{k}"][te] = LogisticProbe(C=C).fit(Z[tr][:, rnd], y[tr]).decision_function(Z[te][:, rnd])
    S = np.stack([oof[n] for n in names])
    auc = auc_rows(y, S)
    w = bootstrap_counts(groups, n_boot, seed) if n_boot > 0 else None
    a = (1 - level) / 2
    out = {}
    dense_boot = auc_weighted(y, oof["dense"], w) if w is not None else None
    for i, n in enumerate(names):
        row = {"auc": float(auc[i]), "ci": list(auc_ci(y, oof[n], groups, n_boot, level, seed))}
        if n != "dense" and w is not None:
            diff = auc_weighted(y, oof[n], w) - dense_boot
            diff = diff[np.isfinite(diff)]
            row["minus_dense"] = float(auc[i] - auc[0])
            row["minus_dense_ci"] = [float(x) for x in np.quantile(diff, [a, 1 - a])] if len(diff) else [None, None]
        if n in chosen:
            row["latents_per_fold"] = chosen[n]
        out[n] = row
    return {"folds": n_folds, "C": C, "ks": list(ks), "probes": out}


def _pair_diffs(Z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(P, F) risky - benign latents of every complete pair among the rows."""
    risky, benign = {}, {}
    for i, (g, lab) in enumerate(zip(groups, y)):
        (risky if lab == 1 else benign)[g] = i
    both = [g for g in risky if g in benign]
    if not both:
        return np.zeros((1, Z.shape[1]))
    return Z[[risky[g] for g in both]] - Z[[benign[g] for g in both]]


__all__ = ["benjamini_hochberg", "cosine_null", "grouped_probe_auc", "paired_feature_stats", "signed_rank_test"]
