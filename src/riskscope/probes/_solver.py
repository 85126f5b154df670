"""Batched solvers: many regularised linear models fitted at once in torch.

One call fits every combination of layer ``L``, training mask ``M`` (outer and
inner CV folds) and regularisation strength ``C`` on activations
``X_LND``. Features are standardised per (layer, mask) with the mean and
standard deviation of that mask's training rows only, without materialising
the standardised copies: a standardised weight ``w`` acts on raw activations
as ``(x - mean) @ (w / scale)``.

Objectives match scikit-learn (``n`` = training rows of the mask)::

    l2          mean(loss) + ||w||^2 / (2 C n)
    l1          mean(loss) + ||w||_1 / (C n)
    elasticnet  mean(loss) + (r ||w||_1 + (1 - r) ||w||^2 / 2) / (C n)

which are sklearn's ``C * sum(loss) + penalty`` divided by ``C n``; the
intercept is never penalised. ``loss`` is the logistic loss (binary), the
softmax cross-entropy (``multinomial``, one weight vector per class, like
sklearn) or half the squared error (``squared``: ridge with ``alpha = 1 / C``).

L2 problems are solved by a truncated Newton method: each Newton step is a
preconditioned conjugate-gradient solve whose Hessian-vector products are two
batched matmuls against the shared activations, followed by a backtracking
line search. The preconditioner is the top of the eigen-spectrum of the
layer's standardised covariance (all rows: it only changes the speed, never the
solution). L1 and elastic-net problems use FISTA with adaptive restart. Layers
are solved one after another (problems of one layer in one batch): batched
together, the slowest layer would set every layer's iteration count.
Nothing here ever calls ``torch.linalg.solve`` (batched LU hangs MKL on some
machines); the only factorisation is one symmetric ``eigh`` per layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch

from ._problems import Loss, Precond, Problems, View

Penalty = Literal["l2", "l1", "elasticnet"]


@dataclass(frozen=True, eq=False)
class BatchFit:
    """Every model of one :func:`fit_many` call, in standardised coordinates.

    Shapes use ``L`` layers, ``M`` masks, ``C`` regularisation values, ``K``
    outputs (1 for ``logistic`` and ``squared``, classes for ``multinomial``).
    """

    coef: np.ndarray
    """(L, M, C, K, D) weights acting on standardised features."""
    intercept: np.ndarray
    """(L, M, C, K) unpenalised intercepts."""
    mean: np.ndarray
    """(L, M, D) training-row feature means of each mask."""
    scale: np.ndarray
    """(L, M, D) training-row feature standard deviations (0 replaced by 1)."""
    n_iter: np.ndarray
    """(L, M, C) Newton or FISTA iterations each problem took."""
    grad_norm: np.ndarray
    """(L, M, C) final max-abs (sub)gradient of the scaled objective."""
    converged: np.ndarray
    """(L, M, C) whether ``grad_norm <= tol`` was reached."""

    def decision_function(self, X_LND: np.ndarray) -> np.ndarray:
        """Scores of every row under every model, float64: (L, M, C, K, N)."""
        L, M, C, K, D = self.coef.shape
        a = torch.from_numpy(self.coef / self.scale[:, :, None, None, :])  # raw-space weights
        offset = torch.einsum("lmckd,lmd->lmck", a, torch.from_numpy(self.mean))
        X = _as_tensor(X_LND).to(torch.float64)
        z = torch.bmm(a.reshape(L, -1, D), X.transpose(1, 2)).view(L, M, C, K, -1)
        return (z + (torch.from_numpy(self.intercept) - offset)[..., None]).numpy()


def _precondition(pre: Precond, V: View, rw, rb, c):
    """Approximate inverse Hessian times the residual (rw, rb).

    The softmax loss is blind to adding one vector to every class, so for it
    the class-mean part is projected out: it is zero at every iterate from zero
    (the penalty keeps it so) and the block-diagonal approximation would
    mis-scale it badly.
    """
    multi = V.P.loss == "multinomial"
    if multi:
        rw, rb = rw - rw.mean(2, keepdim=True), rb - rb.mean(2, keepdim=True)
    zw, zb = pre.apply(rw, c, V.alpha), rb / c
    if multi:
        zw, zb = zw - zw.mean(2, keepdim=True), zb - zb.mean(2, keepdim=True)
    return zw, zb


def _dot(aw, ab, bw, bb) -> torch.Tensor:
    return (aw * bw).sum((-1, -2)) + (ab * bb).sum(-1)


def _cg(V: View, pre: Precond, gw, gb, curv, p, gnorm, max_cg: int):
    """Preconditioned CG on H d = -g for every problem of V; converged problems leave the batch.

    Stops a problem when its preconditioned residual has fallen by the forcing
    factor ``eta = clip(sqrt(|g|), 1e-3, 0.5)`` in every layer.
    """
    dw_out, db_out = torch.zeros_like(gw), torch.zeros_like(gb)
    c = V.mean_curvature(curv).clamp_min(1e-8)
    rw, rb = -gw, -gb
    zw, zb = _precondition(pre, V, rw, rb, c)
    pw, pb = zw, zb
    rz = _dot(rw, rb, zw, zb)  # (L, Q')
    eta_r0 = gnorm.sqrt().clamp(1e-3, 0.5) * rz.clamp_min(0).sqrt()
    dw, db = torch.zeros_like(gw), torch.zeros_like(gb)
    live = torch.arange(gw.shape[1])
    for _ in range(max_cg):
        hw, hb = V.hvp(pw, pb, curv, p)
        php = _dot(pw, pb, hw, hb)
        step = torch.where(php > 0, rz / php.clamp_min(1e-30), torch.zeros_like(rz))
        dw, db = dw + step[..., None, None] * pw, db + step[..., None] * pb
        rw, rb = rw - step[..., None, None] * hw, rb - step[..., None] * hb
        zw, zb = _precondition(pre, V, rw, rb, c)
        rz_new = _dot(rw, rb, zw, zb)
        done = (rz_new.clamp_min(0).sqrt() <= eta_r0).all(0)  # (Q',)
        if bool(done.all()):
            break
        beta = rz_new / rz.clamp_min(1e-30)
        pw, pb = zw + beta[..., None, None] * pw, zb + beta[..., None] * pb
        rz = rz_new
        if bool(done.any()):  # shrink the batch: converged problems are written out
            dw_out[:, live[done]], db_out[:, live[done]] = dw[:, done], db[:, done]
            keep = ~done
            live, V = live[keep], V.subset(keep)
            dw, db, rw, rb, pw, pb = dw[:, keep], db[:, keep], rw[:, keep], rb[:, keep], pw[:, keep], pb[:, keep]
            rz, eta_r0, c = rz[:, keep], eta_r0[:, keep], c[:, keep]
            curv = None if curv is None else curv[:, keep]
            p = p[:, keep]
    dw_out[:, live], db_out[:, live] = dw, db
    return dw_out, db_out


def _newton_cg(P: Problems, pre: Precond, tol: float, max_iter: int, max_cg: int):
    """Truncated Newton with backtracking (Armijo) line search; converged problems leave the batch."""
    full = P.view()
    w = torch.zeros(P.L, P.Q, P.K, P.D, dtype=P.dtype)
    b = full.init_intercept()
    f, gw, gb, curv, p = full.value_grad(w, b)
    gnorm = torch.maximum(gw.abs().amax((-1, -2)), gb.abs().amax(-1))  # (L, Q)
    n_iter = torch.zeros(P.L, P.Q, dtype=torch.long)
    eps = torch.finfo(P.dtype).eps
    for _ in range(max_iter):
        act = torch.nonzero((gnorm > tol).any(0)).flatten()
        if len(act) == 0:
            break
        n_iter[:, act] += (gnorm[:, act] > tol).long()
        V = P.view(act)
        ws, bs, fs, gws, gbs, gns = w[:, act], b[:, act], f[:, act], gw[:, act], gb[:, act], gnorm[:, act]
        cs = None if curv is None else curv[:, act]
        ps = p[:, act]
        dw, db = _cg(V, pre, gws, gbs, cs, ps, gns, max_cg)
        slope = _dot(gws, gbs, dw, db)  # < 0 for a descent direction
        t = torch.ones_like(fs)
        accepted = gns <= tol  # already-converged layers of an active problem keep their point
        for _ in range(30):
            f_t, gw_t, gb_t, curv_t, p_t = V.value_grad(ws + t[..., None, None] * dw, bs + t[..., None] * db)
            ok = (f_t <= fs + 1e-4 * t * slope + 50 * eps * (fs.abs() + 1)) & ~accepted  # float noise allowance
            o2, o3 = ok[..., None], ok[..., None, None]
            ws, bs = torch.where(o3, ws + t[..., None, None] * dw, ws), torch.where(o2, bs + t[..., None] * db, bs)
            fs, gws, gbs = torch.where(ok, f_t, fs), torch.where(o3, gw_t, gws), torch.where(o2, gb_t, gbs)
            cs = None if cs is None else torch.where(o3, curv_t, cs)
            ps = torch.where(o3, p_t, ps)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, 0.5 * t)
        w[:, act], b[:, act], f[:, act], gw[:, act], gb[:, act] = ws, bs, fs, gws, gbs
        if curv is not None:
            curv[:, act] = cs
        p[:, act] = ps
        gnorm[:, act] = torch.maximum(gws.abs().amax((-1, -2)), gbs.abs().amax(-1))
    return w, b, n_iter, gnorm


def _soft(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (x.abs() - t).clamp_min(0.0)


def _subgrad_norm(V: View, w, b, l1, l2) -> torch.Tensor:
    """Max-abs minimum-norm subgradient of the composite objective: (L, Q)."""
    _, gw, gb, _, _ = V.value_grad(w, b, l2)
    t = l1[:, None, None]
    sub = torch.where(w != 0, gw + t * torch.sign(w), torch.sign(gw) * (gw.abs() - t).clamp_min(0))
    return torch.maximum(sub.abs().amax((-1, -2)), gb.abs().amax(-1))


def _lipschitz(V: View, n_power: int = 30) -> torch.Tensor:
    """Largest eigenvalue of [X~ 1]^T diag(m / n) [X~ 1] per (layer, problem), by power iteration: (L, Q)."""
    L, Q, D = V.P.L, len(V.sel), V.P.D
    vw = torch.randn(L, Q, 1, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(V.P.dtype)
    vb = torch.ones(L, Q, 1, dtype=V.P.dtype)
    lam = torch.ones(L, Q, dtype=V.P.dtype)
    for _ in range(n_power):
        nrm = torch.sqrt((vw * vw).sum((-1, -2)) + (vb * vb).sum(-1)).clamp_min(1e-30)
        vw, vb = vw / nrm[..., None, None], vb / nrm[..., None]
        hw, hb = V.backward(V.forward(vw, vb) * V.mn)
        lam = (vw * hw).sum((-1, -2)) + (vb * hb).sum(-1)
        vw, vb = hw, hb
    return lam * 1.05 + 1e-12


def _fista(P: Problems, l1: torch.Tensor, l2: torch.Tensor, tol: float, max_iter: int):
    """Proximal gradient with Nesterov momentum and adaptive restart (O'Donoghue & Candes 2015)."""
    V = P.view()
    cmax = {"logistic": 0.25, "multinomial": 0.5, "squared": 1.0}[P.loss]  # bound on the loss curvature
    lip = _lipschitz(V) * cmax  # (L, Q)
    lip_w, lip_b = (lip + l2)[..., None, None], lip[..., None]
    w = torch.zeros(P.L, P.Q, P.K, P.D, dtype=P.dtype)
    b = V.init_intercept()
    yw, yb = w.clone(), b.clone()
    tk = torch.ones(P.L, P.Q, dtype=P.dtype)
    n_iter = torch.zeros(P.L, P.Q, dtype=torch.long)
    gnorm = _subgrad_norm(V, w, b, l1, l2)
    done = gnorm <= tol
    for it in range(max_iter):
        if bool(done.all()):
            break
        _, gw, gb, _, _ = V.value_grad(yw, yb, l2)
        w_new = _soft(yw - gw / lip_w, l1[:, None, None] / lip_w)
        b_new = yb - gb / lip_b
        w_new = torch.where(done[..., None, None], w, w_new)  # converged problems stay put
        b_new = torch.where(done[..., None], b, b_new)
        n_iter += (~done).long()
        restart = ((yw - w_new) * (w_new - w)).sum((-1, -2)) + ((yb - b_new) * (b_new - b)).sum(-1) > 0
        restart = restart | done
        tk = torch.where(restart, torch.ones_like(tk), tk)
        tk1 = 0.5 * (1 + torch.sqrt(1 + 4 * tk * tk))
        mom = torch.where(restart, torch.zeros_like(tk), (tk - 1) / tk1)
        yw, yb = w_new + mom[..., None, None] * (w_new - w), b_new + mom[..., None] * (b_new - b)
        w, b, tk = w_new, b_new, tk1
        if it % 10 == 9 or it == max_iter - 1:
            gnorm = torch.where(done, gnorm, _subgrad_norm(V, w, b, l1, l2))
            done = done | (gnorm <= tol)
    return w, b, n_iter, gnorm


def _as_tensor(X) -> torch.Tensor:
    """A float tensor view of X without copying; read-only arrays (memory maps) are only ever read."""
    if isinstance(X, torch.Tensor):
        return X if X.is_floating_point() else X.double()
    a = np.asarray(X)
    if a.dtype not in (np.float32, np.float64):  # float16 stores widen exactly to float32
        a = a.astype(np.float32 if np.issubdtype(a.dtype, np.floating) and a.itemsize < 4 else np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": nothing here writes to it
        return torch.from_numpy(a)


def fit_many(
    X_LND: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    masks_MN: np.ndarray | torch.Tensor,
    Cs: np.ndarray | list[float],
    *,
    penalty: Penalty = "l2",
    l1_ratio: float = 0.5,
    loss: Loss = "logistic",
    n_classes: int | None = None,
    standardize: bool = True,
    tol: float = 1e-6,
    max_iter: int | None = None,
    dtype: torch.dtype = torch.float32,
    precond_rank: int = 128,
    per_layer: bool = True,
) -> BatchFit:
    """Fit L x M x C regularised linear models at once.

    Args:
        X_LND: activations, ``L`` layers x ``N`` rows x ``D`` features.
        y: targets, (N,) shared by all masks or (M, N) per mask; 0/1 for
            ``logistic``, 0..K-1 for ``multinomial``, real for ``squared``.
        masks_MN: boolean training masks, one row per problem set (fold).
        Cs: inverse regularisation strengths (sklearn's ``C``).
        penalty: ``l2`` (truncated Newton) or ``l1`` / ``elasticnet`` (FISTA).
        l1_ratio: share of L1 in the elastic-net penalty (sklearn's ``l1_ratio``).
        loss: ``logistic``, ``multinomial`` or ``squared``.
        n_classes: number of classes for ``multinomial`` (default ``max(y) + 1``).
        standardize: standardise features with each mask's training rows.
        tol: stop when the max-abs gradient of the scaled objective is below this.
        max_iter: Newton steps (default 50) or FISTA iterations (default 5000).
        dtype: working precision; float32 is about twice as fast and converges
            to ``tol`` down to about 1e-6.
        precond_rank: eigenpairs per layer kept in the Newton-CG preconditioner.
        per_layer: solve the layers one after another (False: all in one batch, where a problem stays in
            the batch while any layer needs it; kept for ``bench/bench_probe_layers.py``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(2, 40, 3)); y = (X[0, :, 0] > 0).astype(float)
        >>> fit = fit_many(X, y, np.ones((1, 40), bool), [1.0], dtype=torch.float64)
        >>> fit.coef.shape
        (2, 1, 1, 1, 3)
    """
    X = _as_tensor(X_LND)
    if X.dim() != 3:
        raise ValueError(f"X_LND must have 3 dimensions (layers, rows, features), got shape {tuple(X.shape)}")
    masks = torch.as_tensor(np.asarray(masks_MN, dtype=bool) if not isinstance(masks_MN, torch.Tensor) else masks_MN).bool()
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64) if not isinstance(y, torch.Tensor) else y).to(torch.float64)
    Cs_t = torch.as_tensor(np.asarray(Cs, dtype=np.float64).reshape(-1))
    L, N, D = X.shape
    if masks.dim() != 2 or masks.shape[1] != N:
        raise ValueError(f"masks_MN must have shape (M, {N}), got {tuple(masks.shape)}")
    if y_t.shape[-1] != N or y_t.dim() > 2:
        raise ValueError(f"y must have shape ({N},) or (M, {N}), got {tuple(y_t.shape)}")
    if bool((masks.sum(1) == 0).any()):
        raise ValueError("every training mask must select at least one row")
    if bool((Cs_t <= 0).any()):
        raise ValueError("every C must be > 0")
    y_t = torch.where(torch.isnan(y_t), torch.zeros_like(y_t), y_t)  # rows outside masks may be NaN
    K = 1 if loss != "multinomial" else int(n_classes or int(y_t.max().item()) + 1)
    if L > 1 and per_layer:  # independent layers: batched together, the slowest would set every layer's iterations
        parts = [fit_many(X[i:i + 1], y_t, masks, Cs_t, penalty=penalty, l1_ratio=l1_ratio, loss=loss, n_classes=K,
                          standardize=standardize, tol=tol, max_iter=max_iter, dtype=dtype, precond_rank=precond_rank)
                 for i in range(L)]
        return BatchFit(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                           for f in fields(BatchFit)})
    M, nC = masks.shape[0], Cs_t.shape[0]
    y_MN = y_t if y_t.dim() == 2 else y_t[None].expand(M, N)
    P = Problems(X, masks, y_MN, Cs_t, loss, K, standardize, dtype)
    if penalty == "l2":
        pre = Precond(P.Xc, P.global_sd if standardize else torch.ones_like(P.global_sd), precond_rank)
        newton = max_iter or (3 if loss == "squared" else 50)
        w, b, n_iter, gnorm = _newton_cg(P, pre, tol, newton, 500 if loss == "squared" else 200)
    elif penalty in ("l1", "elasticnet"):
        r = 1.0 if penalty == "l1" else float(l1_ratio)
        w, b, n_iter, gnorm = _fista(P, P.alpha_Q * r, P.alpha_Q * (1 - r), tol, 5000 if max_iter is None else max_iter)
    else:
        raise ValueError(f"penalty must be 'l2', 'l1' or 'elasticnet', got {penalty!r}")
    shape = (L, M, nC)
    return BatchFit(
        coef=w.to(torch.float64).reshape(*shape, K, D).numpy(),
        intercept=b.to(torch.float64).reshape(*shape, K).numpy(),
        mean=P.mean_LMD.numpy(),
        scale=P.scale_LMD.numpy(),
        n_iter=n_iter.reshape(shape).numpy(),
        grad_norm=gnorm.to(torch.float64).reshape(shape).numpy(),
        converged=(gnorm <= tol).reshape(shape).numpy(),
    )
