"""Feature universality: pair two SAEs' latents by activation correlation, then compare the paired decoder rows.

The method of Lan et al. (2024), with riskscope's nulls:

1. Both SAEs read the same tokens (or, across tokenizers, the same texts, each latent mean-pooled
   per text). :class:`LatentStats` accumulates, minibatch by minibatch, each latent's sum, sum of
   squares and firing count, and the (F_A, F_B) cross-product sum ``Σ z_A z_Bᵀ``; the product is
   computed on the sparse latents (cost ∝ active latents, not F_A·F_B per row), so memory is the
   minibatch plus the F_A x F_B accumulator. Pearson correlations come from these sums.
2. Junk latents are dropped on both sides (:func:`junk_reasons`): too rare (fewer than
   ``min_fires`` firings), too dense (firing density above ``max_density``), single-token (at least
   ``max_token_share`` of its firings on one token id) or first-position (at least
   ``max_first_share`` of its firings on the first token read of a window, the attention-sink
   position) or one-row (at least ``max_row_share`` of its summed squared activation on a single row: an
   outlier row would drive its correlations). Per-text mode has no token ids or positions: the
   single-token and first-position rules do not apply.
3. Each kept latent of A is paired with its best-correlated kept latent of B (several A latents may
   share one B latent; ``mutual`` marks pairs that are each other's best).
4. SVCCA and RSA of the paired decoder rows (one row per pair, (m, d_A) against (m, d_B)) against a
   null of shuffled pairings (the same rows, B's order permuted).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> z = np.maximum(rng.normal(size=(400, 6)), 0)
>>> st = LatentStats(6, 6)
>>> st.update(z, z[:, ::-1])
>>> best_matches(st)[0].tolist()
[5, 4, 3, 2, 1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import RiskscopeError
from ._result import null_summary
from ._rsa import _permuted_index, rdm_ranks
from ._svcca import _mean_cc, svd_basis

MIN_PAIRS = 10
"""Fewer kept pairs than this: SVCCA and RSA of the decoder rows say nothing."""


@dataclass(frozen=True)
class FeatureCompareConfig:
    """How to compare two SAEs' features."""

    tokens: int = 65_536
    """Tokens read (token mode: corpus windows; per-text mode: corpus texts until this many tokens of A)."""
    context: int = 128
    """Tokens per corpus window (token mode), the cut of each text (per-text mode)."""
    per_text: bool = False
    """Correlate per-text mean latents instead of token-aligned rows (needed across tokenizers)."""
    batch_size: int = 16
    """Windows or texts per forward pass."""
    n_shuffles: int = 100
    """Shuffled pairings behind the SVCCA and RSA nulls."""
    min_fires: int = 10
    """A latent firing on fewer rows is junk (too rare to correlate)."""
    max_density: float = 0.1
    """A latent firing on a larger fraction of tokens is junk (dense)."""
    max_token_share: float = 0.9
    """A latent with at least this share of its firings on one token id is junk (single-token); 1 disables."""
    max_first_share: float = 0.5
    """A latent with at least this share of its firings on a window's first read token is junk; 1 disables."""
    max_row_share: float = 0.5
    """A latent with at least this share of its sum of squared activations on one row is junk (one outlier row
    would drive its correlations); 1 disables."""
    keep: float = 0.99
    """Variance SVCCA keeps on each side."""
    rsa_features: int = 2000
    """At most this many pairs (a seeded random subset) enter RSA (its RDM is quadratic in the pairs)."""
    top_pairs: int = 20
    """Best-matched pairs listed with their top contexts."""
    contexts: int = 3
    """Top contexts kept per latent."""
    radius: int = 8
    """Tokens shown either side of a context's peak."""
    seed: int = 0
    """Seed of the shuffles and of the RSA subset."""

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.context < 8 or self.batch_size < 1:
            raise RiskscopeError("--tokens must be >= 1, --context >= 8 and --batch-size >= 1")
        if self.n_shuffles < 0 or self.min_fires < 1 or self.top_pairs < 0 or self.contexts < 1 or self.radius < 0:
            raise RiskscopeError("--shuffles must be >= 0, --min-fires >= 1, --top >= 0, --contexts >= 1, --radius >= 0")
        for name in ("max_density", "max_token_share", "max_first_share", "max_row_share"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise RiskscopeError(f"--{name.replace('_', '-')} must be in (0, 1], got {v}")
        if not 0 < self.keep <= 1 or self.rsa_features < MIN_PAIRS:
            raise RiskscopeError(f"--keep must be in (0, 1] and rsa_features >= {MIN_PAIRS}")


def _csr(z: torch.Tensor) -> sp.csr_matrix:
    m = sp.csr_matrix(z.numpy().astype(np.float64))
    m.eliminate_zeros()
    return m


class LatentStats:
    """Running sums over rows of two latent matrices on the same rows (tokens or texts).

    :meth:`update` takes one minibatch ``z_A`` (T, F_A), ``z_B`` (T, F_B) and optionally the rows' token
    ids and a mask of first positions; the junk rules and the correlations read only these sums.
    """

    def __init__(self, f_a: int, f_b: int, contexts: int = 3):
        self.f_a, self.f_b, self.n_ctx = int(f_a), int(f_b), int(contexts)
        self.n = 0
        self.sum_a, self.sum_b = np.zeros(f_a), np.zeros(f_b)
        self.sq_a, self.sq_b = np.zeros(f_a), np.zeros(f_b)
        self.fires_a, self.fires_b = np.zeros(f_a, np.int64), np.zeros(f_b, np.int64)
        self.first_a, self.first_b = np.zeros(f_a, np.int64), np.zeros(f_b, np.int64)
        self.cross_AB = np.zeros((f_a, f_b))  # Σ z_A z_Bᵀ, float64
        self._tok = {"a": (np.zeros(0, np.int64), np.zeros(0, np.int64)), "b": (np.zeros(0, np.int64), np.zeros(0, np.int64))}
        self.has_tokens = False
        self.top_val_a = np.full((f_a, contexts), -np.inf)
        self.top_row_a = np.full((f_a, contexts), -1, np.int64)
        self.top_val_b = np.full((f_b, contexts), -np.inf)
        self.top_row_b = np.full((f_b, contexts), -1, np.int64)

    def _tokens(self, side: str, z: sp.csr_matrix, ids: np.ndarray) -> None:
        """Merge this batch's (latent, token id) firing counts into the running ones."""
        c = z.tocoo()
        keys = c.col.astype(np.int64) * (1 << 32) + ids[c.row].astype(np.int64)
        old_k, old_c = self._tok[side]
        allk = np.concatenate([old_k, keys])
        allc = np.concatenate([old_c, np.ones(len(keys), np.int64)])
        uk, inv = np.unique(allk, return_inverse=True)
        self._tok[side] = (uk, np.bincount(inv, weights=allc, minlength=len(uk)).astype(np.int64))

    def _top(self, side: str, z: torch.Tensor, rows: np.ndarray) -> None:
        """Keep each latent's ``contexts`` largest activations and the row labels where they occurred."""
        vals, labs = (self.top_val_a, self.top_row_a) if side == "a" else (self.top_val_b, self.top_row_b)
        k = min(self.n_ctx, z.shape[0])
        v, i = z.topk(k, dim=0)  # (k, F)
        allv = np.concatenate([vals, v.T.numpy().astype(np.float64)], 1)
        allr = np.concatenate([labs, rows[i.T.numpy()]], 1)
        allv[allv <= 0] = -np.inf  # a latent that did not fire has no context
        order = np.argsort(-allv, axis=1, kind="stable")[:, :self.n_ctx]
        vals[:] = np.take_along_axis(allv, order, 1)
        labs[:] = np.take_along_axis(allr, order, 1)

    def update(self, z_a, z_b, ids: np.ndarray | None = None, first: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> None:
        """Add one minibatch: ``z_a`` (T, F_A) and ``z_b`` (T, F_B) on the same T rows; ``ids`` (T,) token ids,
        ``first`` (T,) bool mask of first positions, ``rows`` (T,) labels kept with each latent's top rows."""
        ta, tb = (torch.as_tensor(np.ascontiguousarray(z) if isinstance(z, np.ndarray) else z).detach()
                  .to("cpu", torch.float32) for z in (z_a, z_b))
        a, b = _csr(ta), _csr(tb)
        if a.shape[0] != b.shape[0] or a.shape[1] != self.f_a or b.shape[1] != self.f_b:
            raise RiskscopeError(f"latent blocks of shapes {a.shape} and {b.shape} do not match ({self.f_a}, "
                                 f"{self.f_b}) latents on the same rows")
        t = a.shape[0]
        rows = np.arange(self.n, self.n + t) if rows is None else np.asarray(rows, np.int64)
        self.n += t
        for side, m, dense in (("a", a, ta), ("b", b, tb)):
            s, q, fi, fp = ((self.sum_a, self.sq_a, self.fires_a, self.first_a) if side == "a"
                            else (self.sum_b, self.sq_b, self.fires_b, self.first_b))
            s += np.asarray(m.sum(0)).ravel()
            q += np.asarray(m.multiply(m).sum(0)).ravel()
            on = (m > 0).astype(np.int64)
            fi += np.asarray(on.sum(0)).ravel()
            if first is not None:
                fp += np.asarray(on[np.asarray(first, bool)].sum(0)).ravel()
            if ids is not None:
                self._tokens(side, m, np.asarray(ids))
            self._top(side, dense, rows)
        self.has_tokens |= ids is not None
        prod = (a.T @ b).tocoo()  # (F_A, F_B), sparse: cost ∝ active latents per row
        prod.sum_duplicates()
        self.cross_AB[prod.row, prod.col] += prod.data

    def top_token_share(self, side: str) -> np.ndarray:
        """(F,) share of each latent's firings on its most frequent token id (0 without token ids)."""
        f = self.f_a if side == "a" else self.f_b
        fires = self.fires_a if side == "a" else self.fires_b
        keys, counts = self._tok[side]
        best = np.zeros(f, np.int64)
        if len(keys):
            np.maximum.at(best, keys >> 32, counts)
        return best / np.maximum(fires, 1)

    def correlations(self, rows_a: np.ndarray) -> np.ndarray:
        """(len(rows_a), F_B) Pearson correlations of latents ``rows_a`` of A with every latent of B."""
        n = max(self.n, 1)
        ma, mb = self.sum_a[rows_a] / n, self.sum_b / n
        sa = np.sqrt(np.maximum(self.sq_a[rows_a] / n - ma ** 2, 0))
        sb = np.sqrt(np.maximum(self.sq_b / n - mb ** 2, 0))
        cov = self.cross_AB[rows_a] / n - np.outer(ma, mb)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.outer(sa, sb)
        return np.where(np.isfinite(r), np.clip(r, -1, 1), np.nan)


def junk_reasons(st: LatentStats, side: str, cfg: FeatureCompareConfig,
                 density: tuple[np.ndarray, int] | None = None) -> dict[str, np.ndarray]:
    """Boolean masks (F,) of each junk rule for side ``a`` or ``b``. ``density``: (firing counts, tokens) the
    dense rule reads instead of the rows' (per-text mode passes token-level counts)."""
    fires = st.fires_a if side == "a" else st.fires_b
    first = st.first_a if side == "a" else st.first_b
    d_fires, d_n = density if density is not None else (fires, st.n)
    out = {"rare": fires < cfg.min_fires, "dense": np.asarray(d_fires) / max(int(d_n), 1) > cfg.max_density}
    sq, top = (st.sq_a, st.top_val_a) if side == "a" else (st.sq_b, st.top_val_b)
    peak = np.where(np.isfinite(top[:, 0]), top[:, 0], 0.0) ** 2
    out["one_row"] = (peak >= cfg.max_row_share * sq) & (sq > 0) & (cfg.max_row_share < 1)
    if st.has_tokens:
        out["single_token"] = (st.top_token_share(side) >= cfg.max_token_share) & (fires > 0)
        out["first_position"] = (first / np.maximum(fires, 1) >= cfg.max_first_share) & (fires > 0)
    return out


def best_matches(st: LatentStats, keep_a: np.ndarray | None = None, keep_b: np.ndarray | None = None,
                 chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each latent of A, its best-correlated kept latent of B: (best_b (F_A,), corr (F_A,), mutual (F_A,)).
    Latents of A not kept get -1 and NaN. Computed ``chunk`` rows of A at a time."""
    keep_a = np.ones(st.f_a, bool) if keep_a is None else keep_a
    keep_b = np.ones(st.f_b, bool) if keep_b is None else keep_b
    best = np.full(st.f_a, -1, np.int64)
    corr = np.full(st.f_a, np.nan)
    back_val, back_idx = np.full(st.f_b, -np.inf), np.full(st.f_b, -1, np.int64)
    rows = np.nonzero(keep_a)[0]
    if not keep_b.any():
        return best, corr, np.zeros(st.f_a, bool)
    for s in range(0, len(rows), chunk):
        r = rows[s:s + chunk]
        c = np.nan_to_num(st.correlations(r), nan=-np.inf)
        c[:, ~keep_b] = -np.inf
        j = c.argmax(1)
        best[r], corr[r] = j, c[np.arange(len(r)), j]
        col = c.argmax(0)
        colv = c[col, np.arange(st.f_b)]
        upd = colv > back_val
        back_val[upd], back_idx[upd] = colv[upd], r[col[upd]]
    corr[~np.isfinite(corr)] = np.nan
    mutual = np.zeros(st.f_a, bool)
    ok = best >= 0
    mutual[ok] = back_idx[best[ok]] == np.nonzero(ok)[0]
    return best, corr, mutual


@dataclass(frozen=True)
class NullTest:
    """One similarity of the paired decoder rows and its shuffled-pairing null."""

    value: float
    """The similarity with the pairs as matched."""
    null_mean: float | None
    """Mean over shuffled pairings."""
    null_q95: float | None
    """95th percentile of the null."""
    p: float | None
    """One-sided p-value (1 + #{null >= value}) / (1 + shuffles)."""
    n_shuffles: int
    """Shuffled pairings drawn."""
    info: dict = field(default_factory=dict)
    """Kept dimensions, rows used."""

    def to_dict(self) -> dict:
        from .._io import json_float

        return {"value": json_float(self.value), "null_mean": json_float(self.null_mean),
                "null_q95": json_float(self.null_q95), "p": json_float(self.p), "n_shuffles": self.n_shuffles,
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "NullTest":
        return cls(float("nan") if d["value"] is None else float(d["value"]), d.get("null_mean"), d.get("null_q95"),
                   d.get("p"), int(d.get("n_shuffles", 0)), dict(d.get("info") or {}))


def _summary(value: float, null: np.ndarray, n: int, info: dict) -> NullTest:
    if not n:
        return NullTest(value, None, None, None, 0, info)
    mean, q95, p = null_summary(np.array([[value]]), null.reshape(n, 1, 1))
    return NullTest(value, float(mean[0, 0]), float(q95[0, 0]), float(p[0, 0]), n, info)


def paired_svcca(dec_a: np.ndarray, dec_b: np.ndarray, keep: float = 0.99, n_shuffles: int = 0,
                 seed: int = 0) -> NullTest:
    """SVCCA of paired decoder rows (m, d_A) and (m, d_B), against ``n_shuffles`` shuffled pairings."""
    m = len(dec_a)
    if m < MIN_PAIRS or len(dec_b) != m:
        raise RiskscopeError(f"SVCCA of paired decoder rows needs at least {MIN_PAIRS} pairs, got {m}")
    cap = max(1, (m - 1) // 2 - 1)
    qa, qb = svd_basis(dec_a, keep, cap), svd_basis(dec_b, keep, cap)
    value = _mean_cc(qa.T @ qb)
    rng = np.random.default_rng(seed)
    null = np.array([_mean_cc(qa.T @ qb[torch.from_numpy(rng.permutation(m))]) for _ in range(n_shuffles)])
    return _summary(value, null, n_shuffles, {"dims_a": int(qa.shape[1]), "dims_b": int(qb.shape[1]),
                                              "max_dims": cap, "pairs": m, "keep": keep})


def paired_rsa(dec_a: np.ndarray, dec_b: np.ndarray, n_shuffles: int = 0, seed: int = 0,
               max_rows: int = 2000) -> NullTest:
    """RSA (Spearman of correlation-distance RDMs) of paired decoder rows, against shuffled pairings (Mantel);
    at most ``max_rows`` pairs, a seeded random subset."""
    m = len(dec_a)
    if m < MIN_PAIRS or len(dec_b) != m:
        raise RiskscopeError(f"RSA of paired decoder rows needs at least {MIN_PAIRS} pairs, got {m}")
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(m, max_rows, replace=False)) if m > max_rows else np.arange(m)
    ra, rb = rdm_ranks(dec_a[sub]), rdm_ranks(dec_b[sub])
    value = float(ra @ rb)
    k = len(sub)
    null = np.array([float(ra @ rb[_permuted_index(k, rng.permutation(k))]) for _ in range(n_shuffles)])
    return _summary(value, null, n_shuffles, {"pairs_used": int(k), "pairs": m, "rdm": "1 - Pearson correlation"})


@dataclass(frozen=True)
class FeaturePairing:
    """Every latent of A with its best-correlated latent of B, the junk masks and the paired-decoder tests."""

    best_b: np.ndarray
    """(F_A,) best-correlated kept latent of B for each latent of A (-1: A's latent is junk)."""
    corr: np.ndarray
    """(F_A,) its Pearson correlation (NaN for junk)."""
    mutual: np.ndarray
    """(F_A,) True where A's latent is also the best match of its B latent."""
    junk_a: dict
    """Rule name -> (F_A,) bool mask."""
    junk_b: dict
    """Rule name -> (F_B,) bool mask."""
    svcca: NullTest | None
    """SVCCA of the paired decoder rows against shuffled pairings."""
    rsa: NullTest | None
    """RSA of the paired decoder rows against shuffled pairings."""
    n_rows: int
    """Rows (tokens or texts) the correlations were computed on."""

    @property
    def kept_a(self) -> np.ndarray:
        return self.best_b >= 0


def pair_features(st: LatentStats, dec_a: np.ndarray, dec_b: np.ndarray, cfg: FeatureCompareConfig,
                  density: tuple = (None, None),
                  progress: Callable[[str], None] | None = None) -> FeaturePairing:
    """Drop junk latents, pair the rest by correlation, test the paired decoder rows against shuffled pairings."""
    ja, jb = junk_reasons(st, "a", cfg, density[0]), junk_reasons(st, "b", cfg, density[1])
    keep_a = ~np.logical_or.reduce(list(ja.values()))
    keep_b = ~np.logical_or.reduce(list(jb.values()))
    if progress:
        progress("pairing latents")
    best, corr, mutual = best_matches(st, keep_a, keep_b)
    ok = best >= 0
    sv = rs = None
    if ok.sum() >= MIN_PAIRS:
        A, B = np.asarray(dec_a, np.float64)[ok], np.asarray(dec_b, np.float64)[best[ok]]
        if progress:
            progress("SVCCA of paired decoder rows")
        sv = paired_svcca(A, B, cfg.keep, cfg.n_shuffles, cfg.seed)
        if progress:
            progress("RSA of paired decoder rows")
        rs = paired_rsa(A, B, cfg.n_shuffles, cfg.seed, cfg.rsa_features)
    return FeaturePairing(best, corr, mutual, ja, jb, sv, rs, st.n)


__all__ = ["FeatureCompareConfig", "FeaturePairing", "LatentStats", "MIN_PAIRS", "NullTest", "best_matches",
           "junk_reasons", "pair_features", "paired_rsa", "paired_svcca"]

