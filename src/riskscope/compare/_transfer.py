"""Risk-direction transfer: does model A's risk probe, carried through a linear map, score model B's texts?

For one layer of A and one of B, on the same labelled texts, with outer folds grouped by
pair (a pair's texts are never split between fitting and scoring):

- ``transfer``: a ridge map from B's activations to A's (fitted on the training texts;
  its penalty chosen by generalised cross-validation among ``alphas`` on those texts only)
  carries A's probe (fitted on A's training texts) to B: held-out B texts are scored by
  ``probe_A(map(x_B))``;
- ``b_own``: B's own probe on the same folds (the ceiling);
- ``a_own``: A's own probe on A's held-out texts (what is being carried);
- ``shuffled_map``: the same transfer with the map fitted on training rows whose A side is
  shuffled (the pairing of texts broken): the control, which should sit near 0.5.

AUCs are over the out-of-fold scores, with a pair-bootstrap interval.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = np.repeat([1, 0], 40); g = np.tile(np.arange(40), 2)
>>> XA = rng.normal(size=(80, 6)); XA[:, 0] += 2 * y
>>> XB = XA @ rng.normal(size=(6, 6)) + 0.1 * rng.normal(size=(80, 6))
>>> r = risk_transfer(XA, XB, y, g, n_boot=0)
>>> r.auc["transfer"] > 0.8, abs(r.auc["shuffled_map"] - 0.5) < 0.3
(True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .._io import json_float
from ..errors import RiskscopeError
from ..probes import LogisticProbe, auc_ci, auc_rows, group_folds

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Ridge penalties tried, as multiples of the mean squared singular value of B's standardised training rows."""
SCORES = ("transfer", "b_own", "a_own", "shuffled_map")


@dataclass(frozen=True)
class TransferResult:
    """Out-of-fold AUCs of the transferred probe and its references."""

    layer_a: str
    layer_b: str
    auc: dict
    """``transfer``, ``b_own``, ``a_own``, ``shuffled_map`` -> ROC-AUC on held-out texts."""
    ci: dict
    """The same keys -> pair-bootstrap interval (NaN pair when ``n_boot`` is 0)."""
    alphas: list
    """Ridge penalty chosen in each fold (multiple of the mean squared singular value)."""
    map_r2: float
    """Held-out R² of the ridge map (B -> A), pooled over folds and A's dimensions."""
    n_rows: int
    n_folds: int
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["auc"] = {k: json_float(v) for k, v in self.auc.items()}
        d["ci"] = {k: [json_float(x) for x in v] for k, v in self.ci.items()}
        d["map_r2"] = json_float(self.map_r2)
        return d


def _standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    mu, sd = X[train].mean(0), X[train].std(0)
    return (X - mu) / np.where(sd > 0, sd, 1.0)


def ridge_gcv(XB: np.ndarray, XA: np.ndarray, alphas=ALPHAS) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge map ``XB @ W + b ≈ XA`` with the penalty chosen by generalised cross-validation (SVD, no solve).

    Returns (W, b, alpha multiple)."""
    mb, ma = XB.mean(0), XA.mean(0)
    Xc, Yc = XB - mb, XA - ma
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    UtY = U.T @ Yc
    scale = float((s ** 2).mean()) or 1.0
    n = len(Xc)
    best = (np.inf, None)
    resid0 = Yc - U @ UtY  # the part of Y outside B's row space
    r0 = float((resid0 ** 2).sum())
    for a in alphas:
        f = s ** 2 / (s ** 2 + a * scale)  # shrinkage of each direction
        fit_resid = ((1 - f)[:, None] * UtY)
        rss = r0 + float((fit_resid ** 2).sum())
        gcv = rss / max(1e-12, (n - f.sum())) ** 2
        if gcv < best[0]:
            best = (gcv, a)
    a = best[1]
    W = Vt.T @ ((s / (s ** 2 + a * scale))[:, None] * UtY)
    return W, ma - mb @ W, float(a)


def risk_transfer(XA: np.ndarray, XB: np.ndarray, y: np.ndarray, groups, n_folds: int = 5, C: float = 1.0,
                  n_boot: int = 1000, seed: int = 0, layer_a: str = "A", layer_b: str = "B") -> TransferResult:
    """Carry A's probe to B through a ridge map, on folds grouped by pair; see the module docstring."""
    XA, XB, y = np.asarray(XA, np.float64), np.asarray(XB, np.float64), np.asarray(y)
    if not (len(XA) == len(XB) == len(y)):
        raise RiskscopeError(f"rows differ: A {len(XA)}, B {len(XB)}, labels {len(y)}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise RiskscopeError("risk transfer needs binary labels with both risky (1) and benign (0) texts")
    groups = np.asarray([str(g) for g in groups])
    folds = group_folds(groups, n_folds, seed)
    rng = np.random.default_rng(seed)
    scores = {k: np.zeros(len(y)) for k in SCORES}
    alphas, ss_res, ss_tot = [], 0.0, 0.0
    for f in range(n_folds):
        test, train = folds == f, folds != f
        A, B = _standardise(XA, train), _standardise(XB, train)
        probe_a = LogisticProbe(C=C).fit(A[train], y[train])
        probe_b = LogisticProbe(C=C).fit(B[train], y[train])
        W, b, alpha = ridge_gcv(B[train], A[train])
        alphas.append(alpha)
        mapped = B[test] @ W + b
        ss_res += float(((mapped - A[test]) ** 2).sum())
        ss_tot += float(((A[test] - A[train].mean(0)) ** 2).sum())
        scores["transfer"][test] = probe_a.decision_function(mapped)
        scores["b_own"][test] = probe_b.decision_function(B[test])
        scores["a_own"][test] = probe_a.decision_function(A[test])
        tr = np.flatnonzero(train)
        Ws, bs, _ = ridge_gcv(B[tr], A[tr[rng.permutation(len(tr))]])
        scores["shuffled_map"][test] = probe_a.decision_function(B[test] @ Ws + bs)
    auc = {k: float(auc_rows(y, v[None])[0]) for k, v in scores.items()}
    ci = {k: tuple(float(x) for x in auc_ci(y, v, groups, n_boot, 0.95, seed)) for k, v in scores.items()}
    return TransferResult(layer_a, layer_b, auc, ci, alphas, 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
                          len(y), n_folds, {"C": C, "alphas_tried": list(ALPHAS), "n_boot": n_boot, "seed": seed})


def matched_layers(n_a: int, n_b: int, k: int = 5) -> list[tuple[int, int]]:
    """``k`` layer pairs at the same relative depths (first, last and evenly between)."""
    depths = np.linspace(0, 1, k) if k > 1 else np.array([0.5])
    return sorted({(int(round(d * (n_a - 1))), int(round(d * (n_b - 1)))) for d in depths})


__all__ = ["ALPHAS", "SCORES", "TransferResult", "matched_layers", "ridge_gcv", "risk_transfer"]
