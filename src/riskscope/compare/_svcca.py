"""SVCCA (Raghu et al. 2017): keep the top singular directions explaining 99 % of the variance, then CCA.

CCA is computed from orthonormal bases, never by solving normal equations: with ``Qx``,
``Qy`` the left singular vectors kept for each side, the canonical correlations are the
singular values of ``Qxᵀ Qy`` (the cosines of the principal angles between the two
subspaces). SVCCA is the mean of the ``min(kx, ky)`` correlations.

Two subspaces of the (n - 1)-dimensional space of centred rows always meet when
``kx + ky >= n - 1``, which would make every correlation 1; so each side keeps at most
``(n - 1) // 2 - 1`` directions (``info["capped"]`` says when that bit). Even below the cap,
canonical correlations of unrelated subspaces are far from 0 when ``k`` is a sizeable
fraction of ``n``: read the shuffled-rows null beside every value.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(60, 5))
>>> round(svcca(X, X @ np.linalg.qr(rng.normal(size=(5, 5)))[0]), 6)
1.0
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import RiskscopeError
from ._result import SimilarityMatrix, null_summary
from ._sources import Source, check_same_rows

MIN_ROWS_SVCCA = 10
"""Below this, the kept subspaces are too small to say anything."""


def svd_basis(X: np.ndarray, keep: float = 0.99, max_dims: int | None = None) -> torch.Tensor:
    """(n, k) orthonormal basis of the centred rows' top singular directions explaining ``keep`` of the variance."""
    x = torch.from_numpy(np.asarray(X, dtype=np.float64))
    x = x - x.mean(0)
    U, S, _ = torch.linalg.svd(x, full_matrices=False)
    var = S ** 2
    if float(var.sum()) <= 0:
        return U[:, :0]
    k = int(torch.searchsorted(torch.cumsum(var, 0) / var.sum(), torch.tensor(keep, dtype=var.dtype))) + 1
    k = min(k, int((var > var[0] * 1e-12).sum()))
    if max_dims is not None:
        k = min(k, max_dims)
    return U[:, :max(k, 1)]


def _mean_cc(M: torch.Tensor) -> float:
    k = min(M.shape)
    return float(torch.linalg.svdvals(M)[:k].clamp(max=1.0).mean()) if k else float("nan")


def svcca(X: np.ndarray, Y: np.ndarray, keep: float = 0.99) -> float:
    """SVCCA of two (n, d) arrays on the same rows: mean canonical correlation of their kept subspaces."""
    n = len(X)
    cap = max(1, (n - 1) // 2 - 1)
    return _mean_cc(svd_basis(X, keep, cap).T @ svd_basis(Y, keep, cap))


def svcca_matrix(a: Source, b: Source, keep: float = 0.99, n_perm: int = 0, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> SimilarityMatrix:
    """SVCCA of every layer of ``a`` against every layer of ``b``; ``n_perm`` shuffles of ``b``'s rows give
    each cell's null. Each layer is read whole (SVD needs every row): memory is one layer's (n, d) basis per
    layer of ``b`` plus one of ``a``."""
    check_same_rows(a, b)
    n = a.n_rows
    if n < MIN_ROWS_SVCCA:
        raise RiskscopeError(f"SVCCA needs at least {MIN_ROWS_SVCCA} texts, got {n}")
    cap = max(1, (n - 1) // 2 - 1)
    rng = np.random.default_rng(seed)
    perms = [torch.from_numpy(rng.permutation(n)) for _ in range(n_perm)]
    Qb = [svd_basis(b.layer(k), keep, cap) for k in b.layers]
    dims_b = [int(q.shape[1]) for q in Qb]
    Qb_all = torch.cat(Qb, 1)  # (n, Σk_b)
    edges = np.cumsum([0] + dims_b)
    LA, LB = len(a.layers), len(b.layers)
    values, null = np.zeros((LA, LB)), np.zeros((n_perm, LA, LB))
    dims_a, capped = [], False
    for i, key in enumerate(a.layers):
        full = svd_basis(a.layer(key), keep)
        qa = full[:, :cap]
        capped |= full.shape[1] > cap
        dims_a.append(int(qa.shape[1]))
        M = qa.T @ Qb_all
        values[i] = [_mean_cc(M[:, edges[j]:edges[j + 1]]) for j in range(LB)]
        for p, perm in enumerate(perms):
            Mp = qa[perm].T @ Qb_all
            null[p, i] = [_mean_cc(Mp[:, edges[j]:edges[j + 1]]) for j in range(LB)]
        if progress is not None:
            progress(i + 1, LA)
    capped |= any(d >= cap for d in dims_b)
    info = {"keep": keep, "dims_a": dims_a, "dims_b": dims_b, "max_dims": cap, "capped": bool(capped),
            "null": "rows of B shuffled" if n_perm else None, "seed": seed}
    if not n_perm:
        return SimilarityMatrix("svcca", list(a.layers), list(b.layers), values, n_rows=n, info=info)
    mean, q95, p = null_summary(values, null)
    return SimilarityMatrix("svcca", list(a.layers), list(b.layers), values, mean, q95, p, n_perm, n, info)


__all__ = ["MIN_ROWS_SVCCA", "svcca", "svcca_matrix", "svd_basis"]
