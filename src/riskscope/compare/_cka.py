"""Linear CKA, debiased (Song et al. 2012's unbiased HSIC) or not, streamed over blocks of rows.

Why this form. HSIC of linear kernels can be written in feature space, ``||XᵀY||²_F`` plus
row terms, which streams over rows with a ``d_A x d_B`` accumulator per layer pair; for a
layers x layers matrix that is ``L_A·L_B·d_A·d_B`` numbers (1.2 GB for two 30-layer
576-wide models) and ``n·d_A·d_B`` multiply-adds per pair (255 GFLOP for 768 texts).
The block-Gram form used here cuts the rows into blocks of ``block`` rows and, for each
pair of blocks (b, c), computes every layer's Gram block ``X_b X_cᵀ`` once and adds
``<K_bc, L_bc>`` for all layer pairs with one matrix product. It is exact (no sketch), costs
``n²·(Σd)`` for the Grams plus ``n²·L_A·L_B`` for the cross terms (about 20 GFLOP for the
same case), and holds two blocks of rows, their Gram blocks and ``O(L·n)`` row sums:
memory is set by ``block``, not by the dataset. The unbiased estimator's row terms
(``K̃1``, the diagonal) come from the same blocks.

Permutation null. Under "rows of A and B are unrelated", shuffling B's rows gives the null.
Shuffles are drawn within blocks (rows are blocked in length order), so each permuted
Gram block is an index of one already in memory; this subgroup of permutations is a valid
permutation test and keeps what text length alone explains in the null.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 6))
>>> round(linear_cka(X, X), 6), round(linear_cka(X, 3 * X @ np.linalg.qr(rng.normal(size=(6, 6)))[0]), 6)
(1.0, 1.0)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import RiskscopeError
from ._result import SimilarityMatrix, null_summary
from ._sources import ArraySource, Source, check_same_rows

MIN_ROWS_DEBIASED = 4
"""The unbiased HSIC divides by n(n-3)."""


def linear_cka_reference(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    """Straightforward full-Gram linear CKA (n x n matrices in float64): the oracle of the streamed version."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = X.shape[0]

    def hsic(K, L):
        if not debiased:
            H = np.eye(n) - 1.0 / n
            return np.trace(K @ H @ L @ H) / (n - 1) ** 2
        Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return float(hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L)))


def _stack(rows: list[np.ndarray], buffers: dict, slot: str) -> torch.Tensor | list[torch.Tensor]:
    """Every layer's rows as one (L, B, D) float64 tensor (a list when widths differ), filled by numpy into a
    buffer reused from block to block (``buffers[slot]``): fresh allocations and a parallel torch.stack cost
    seconds of page faults and spin-waits on a busy machine."""
    if len({x.shape[1] for x in rows}) != 1:
        return [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) for x in rows]
    shape = (len(rows), *rows[0].shape)
    buf = buffers.get(slot)
    if buf is None or buf.shape[0] != shape[0] or buf.shape[2] != shape[2] or buf.shape[1] < shape[1]:
        buf = buffers[slot] = np.empty(shape, dtype=np.float64)
    out = buf[:, :shape[1]]
    for k, x in enumerate(rows):
        out[k] = x
    return torch.from_numpy(out)


def _grams(xb: torch.Tensor | list[torch.Tensor], xc: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """(L, |b|, |c|) float64 Gram blocks of every layer."""
    if isinstance(xb, torch.Tensor) and isinstance(xc, torch.Tensor):
        return torch.bmm(xb, xc.transpose(1, 2))
    return torch.stack([b @ c.T for b, c in zip(xb, xc)])


def block_rows(n: int, block: int, n_tokens: np.ndarray | None = None) -> list[np.ndarray]:
    """Row blocks of at most ``block`` rows, longest texts first when token counts are known (stable)."""
    order = np.arange(n) if n_tokens is None or len(n_tokens) != n else np.argsort(-n_tokens, kind="stable")
    return [order[i:i + block] for i in range(0, n, block)]


def _hsic(tKL, sK, trK, sL, trL, rK, a, rL, b, n, debiased):
    """HSIC of every layer pair from the accumulated terms (rK, a: (LA, n); rL, b: (LB, n))."""
    if not debiased:
        return (tKL - 2.0 / n * (rK @ rL.T) + np.outer(sK, sL) / n ** 2) / (n - 1) ** 2
    kt1l = (rK - a) @ (rL - b).T  # (K̃1)ᵀ(L̃1)
    return (tKL - a @ b.T + np.outer(sK - trK, sL - trL) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kt1l) \
        / (n * (n - 3))


def cka_matrix(a: Source, b: Source, debiased: bool = True, block: int = 256, n_perm: int = 0, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> SimilarityMatrix:
    """Linear CKA of every layer of ``a`` against every layer of ``b`` on the same rows, streamed over blocks.

    ``n_perm`` within-block shuffles of ``b``'s rows give each cell's null mean, 95th percentile and
    p-value. ``progress(done, total)`` is called after each pair of blocks.
    """
    check_same_rows(a, b)
    n = a.n_rows
    if n < MIN_ROWS_DEBIASED:
        raise RiskscopeError(f"CKA needs at least {MIN_ROWS_DEBIASED} texts, got {n}")
    if block < 2:
        raise RiskscopeError(f"block must be >= 2 rows, got {block}")
    blocks = block_rows(n, block, a.n_tokens)
    nb, LA, LB = len(blocks), len(a.layers), len(b.layers)
    rng = np.random.default_rng(seed)
    perms = [[rng.permutation(len(bl)) for bl in blocks] for _ in range(n_perm)]
    glob = np.tile(np.arange(n), (n_perm, 1))  # glob[p, row]: the B row that row takes under shuffle p
    for p in range(n_perm):
        for bl, s in zip(blocks, perms[p]):
            glob[p, bl] = bl[s]
    tKL, tKK, tLL = np.zeros((LA, LB)), np.zeros(LA), np.zeros(LB)
    tKLp = np.zeros((n_perm, LA, LB))
    rK, a_diag, rL, b_diag = np.zeros((LA, n)), np.zeros((LA, n)), np.zeros((LB, n)), np.zeros((LB, n))
    total, done, bufs = nb * (nb + 1) // 2, 0, {}
    for i, bi in enumerate(blocks):
        Xi, Yi = _stack(a.rows(bi), bufs, "xi"), _stack(b.rows(bi), bufs, "yi")
        for j in range(i, nb):
            bj = blocks[j]
            Xj, Yj = (Xi, Yi) if j == i else (_stack(a.rows(bj), bufs, "xj"), _stack(b.rows(bj), bufs, "yj"))
            K, L = _grams(Xi, Xj), _grams(Yi, Yj)
            w = 1.0 if i == j else 2.0
            Kf, Lf = K.reshape(LA, -1), L.reshape(LB, -1)
            tKL += w * (Kf @ Lf.T).numpy()
            tKK += w * (Kf * Kf).sum(1).numpy()
            tLL += w * (Lf * Lf).sum(1).numpy()
            rK[:, bi] += K.sum(2).numpy()
            rL[:, bi] += L.sum(2).numpy()
            if i == j:
                a_diag[:, bi] = torch.diagonal(K, dim1=1, dim2=2).numpy()
                b_diag[:, bi] = torch.diagonal(L, dim1=1, dim2=2).numpy()
            else:
                rK[:, bj] += K.sum(1).numpy()
                rL[:, bj] += L.sum(1).numpy()
            for p in range(n_perm):  # one gathered copy of B's Gram block at a time: memory set by the block
                idx = torch.from_numpy((perms[p][i][:, None] * len(bj) + perms[p][j][None, :]).ravel())
                tKLp[p] += w * (Kf @ Lf[:, idx].T).numpy()  # Lf[:, idx] = L[:, perm_i][:, :, perm_j], flat
            done += 1
            if progress is not None:
                progress(done, total)
    sK, sL = rK.sum(1), rL.sum(1)
    trK, trL = a_diag.sum(1), b_diag.sum(1)
    hKK = np.diag(_hsic(np.diag(tKK), sK, trK, sK, trK, rK, a_diag, rK, a_diag, n, debiased))  # diagonal only
    hLL = np.diag(_hsic(np.diag(tLL), sL, trL, sL, trL, rL, b_diag, rL, b_diag, n, debiased))
    denom = np.sqrt(np.clip(np.outer(hKK, hLL), 1e-300, None))
    values = _hsic(tKL, sK, trK, sL, trL, rK, a_diag, rL, b_diag, n, debiased) / denom
    null = np.stack([_hsic(tKLp[p], sK, trK, sL, trL, rK, a_diag, rL[:, glob[p]], b_diag[:, glob[p]], n,
                                debiased) / denom for p in range(n_perm)]) if n_perm else None
    info = {"debiased": debiased, "block": block, "blocks": nb, "null": "rows of B shuffled within length-sorted "
            "blocks" if n_perm else None, "seed": seed}
    if null is None:
        return SimilarityMatrix("cka", list(a.layers), list(b.layers), values, n_rows=n, info=info)
    mean, q95, p = null_summary(values, null)
    return SimilarityMatrix("cka", list(a.layers), list(b.layers), values, mean, q95, p, n_perm, n, info)


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True, block: int = 256) -> float:
    """Linear CKA of two (n, d) arrays on the same rows (streamed over ``block`` rows at a time)."""
    res = cka_matrix(ArraySource({"x": X}, "X"), ArraySource({"y": Y}, "Y"), debiased=debiased, block=block)
    return float(res.values_AB[0, 0])


__all__ = ["MIN_ROWS_DEBIASED", "block_rows", "cka_matrix", "linear_cka", "linear_cka_reference"]
