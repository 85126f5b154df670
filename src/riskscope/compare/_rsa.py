"""RSA: Spearman correlation of the two models' representational dissimilarity matrices (RDMs).

A layer's RDM holds ``1 - Pearson(x_i, x_j)`` for every pair of texts (the upper triangle,
``n(n-1)/2`` numbers); RSA is the Spearman correlation of two RDMs, i.e. the Pearson
correlation of their ranks. The null is the Mantel test's: the same texts of B relabelled
by a random permutation (rows and columns of B's RDM permuted together). An RDM is
quadratic in the texts by nature; one layer's ranks are held per layer.

>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(12, 4))
>>> round(rsa(X, 2 * X + 1), 6)
1.0
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import RiskscopeError
from ._result import SimilarityMatrix, null_summary
from ._sources import Source, check_same_rows

MIN_ROWS_RSA = 4
"""Fewer texts give an RDM of at most 3 numbers."""


def rdm_ranks(X: np.ndarray) -> np.ndarray:
    """Standardised ranks of the upper triangle (i < j, row-major) of the correlation-distance RDM of ``X``."""
    x = np.asarray(X, np.float64)
    x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    iu = np.triu_indices(len(x), 1)
    r = rankdata(1.0 - (x @ x.T)[iu])
    r = r - r.mean()
    s = np.linalg.norm(r)
    return r / s if s > 0 else r


def rsa(X: np.ndarray, Y: np.ndarray) -> float:
    """Spearman correlation of the RDMs of two (n, d) arrays on the same rows."""
    return float(rdm_ranks(X) @ rdm_ranks(Y))


def _permuted_index(n: int, perm: np.ndarray) -> np.ndarray:
    """Positions in the condensed upper triangle of the pairs (perm[i], perm[j]) for i < j."""
    i, j = np.triu_indices(n, 1)
    a, b = np.minimum(perm[i], perm[j]), np.maximum(perm[i], perm[j])
    return a * n - a * (a + 1) // 2 + (b - a - 1)


def rsa_matrix(a: Source, b: Source, n_perm: int = 0, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> SimilarityMatrix:
    """RSA of every layer of ``a`` against every layer of ``b``; ``n_perm`` Mantel permutations of ``b``'s
    texts give each cell's null."""
    check_same_rows(a, b)
    n = a.n_rows
    if n < MIN_ROWS_RSA:
        raise RiskscopeError(f"RSA needs at least {MIN_ROWS_RSA} texts, got {n}")
    rng = np.random.default_rng(seed)
    RB = torch.from_numpy(np.stack([rdm_ranks(b.layer(k)) for k in b.layers]))  # (LB, m)
    RA = torch.from_numpy(np.stack([rdm_ranks(a.layer(k)) for k in a.layers]))  # (LA, m)
    values = (RA @ RB.T).numpy()
    null = np.zeros((n_perm, len(a.layers), len(b.layers)))
    for p in range(n_perm):
        idx = torch.from_numpy(_permuted_index(n, rng.permutation(n)))
        null[p] = (RA @ RB[:, idx].T).numpy()
        if progress is not None:
            progress(p + 1, n_perm)
    info = {"rdm": "1 - Pearson correlation", "null": "Mantel: B's texts permuted" if n_perm else None,
            "seed": seed}
    if not n_perm:
        return SimilarityMatrix("rsa", list(a.layers), list(b.layers), values, n_rows=n, info=info)
    mean, q95, p = null_summary(values, null)
    return SimilarityMatrix("rsa", list(a.layers), list(b.layers), values, mean, q95, p, n_perm, n, info)


__all__ = ["MIN_ROWS_RSA", "rdm_ranks", "rsa", "rsa_matrix"]
