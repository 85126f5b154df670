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
solution). L1 and elastic-net problems use FISTA with adaptive restart.
Nothing here ever calls ``torch.linalg.solve`` (batched LU hangs MKL on some
machines); the only factorisation is one symmetric ``eigh`` per layer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Loss = Literal["logistic", "multinomial", "squared"]
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
        """Scores of every row under every model: (L, M, C, K, N)."""
        X = np.asarray(X_LND, dtype=np.float64)
        a = self.coef / self.scale[:, :, None, None, :]
        offset = np.einsum("lmckd,lmd->lmck", a, self.mean)
        z = np.einsum("lnd,lmckd->lmckn", X, a, optimize=True)
        return z + (self.intercept - offset)[..., None]


class _Design:
    """Standardised activations of every (layer, mask) as implicit matmuls."""

    def __init__(self, X_LND: torch.Tensor, masks_MN: torch.Tensor, standardize: bool, dtype: torch.dtype):
        L, N, D = X_LND.shape
        M = masks_MN.shape[0]
        center_LD = X_LND.sum(1, dtype=torch.float64) / N
        # one working copy, centred on all rows so that fold statistics do not cancel
        self.Xc = X_LND.to(dtype) - center_LD.to(dtype)[:, None, :]  # (L, N, D)
        m = masks_MN.to(dtype)
        n_M = m.sum(1)
        sq = self.Xc * self.Xc
        self.global_sd = (sq.sum(1, dtype=torch.float64) / N).sqrt()  # (L, D), for the preconditioner
        if standardize:
            mu = torch.einsum("mn,lnd->lmd", m, self.Xc).to(torch.float64) / n_M.double()[None, :, None]
            ex2 = torch.einsum("mn,lnd->lmd", m, sq).to(torch.float64) / n_M.double()[None, :, None]
            sd = (ex2 - mu**2).clamp_min(0.0).sqrt()
            tiny = torch.finfo(dtype).eps * 10 * (self.global_sd[:, None, :] + (mu + center_LD[:, None]).abs())
            sd = torch.where(sd > tiny, sd, torch.ones_like(sd))  # constant features: scale 1, like StandardScaler
        else:
            mu = -center_LD[:, None, :].expand(L, M, D)
            sd = torch.ones(L, M, D, dtype=torch.float64)
        del sq
        self.mean_LMD = mu + center_LD[:, None, :]
        self.scale_LMD = sd
        self.mu = mu.to(dtype)  # (L, M, D) relative to the all-row centre
        self.inv_s = (1.0 / sd).to(dtype)  # (L, M, D)
        self.shape = (L, M, N, D)

    def forward(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """w (L, M, C, K, D), b (L, M, C, K) -> z (L, M, C, K, N)."""
        L, M, C, K, D = w.shape
        a = w * self.inv_s[:, :, None, None, :]
        z = torch.bmm(a.reshape(L, -1, D), self.Xc.transpose(1, 2)).view(L, M, C, K, -1)
        off = (a * self.mu[:, :, None, None, :]).sum(-1)
        return z + (b - off)[..., None]

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r (L, M, C, K, N) -> (X~^T r (L, M, C, K, D), sum_n r (L, M, C, K))."""
        L, M, C, K, N = r.shape
        g = torch.bmm(r.reshape(L, -1, N), self.Xc).view(L, M, C, K, -1)
        rs = r.sum(-1)
        g = (g - rs[..., None] * self.mu[:, :, None, None, :]) * self.inv_s[:, :, None, None, :]
        return g, rs


class _Precond:
    """Spectral preconditioner: top eigenpairs of each layer's standardised covariance.

    Computed once per layer on all rows by a randomised subspace iteration in
    float32 (Halko et al. 2011); it only changes how fast CG converges.
    """

    def __init__(self, Xc: torch.Tensor, sd_LD: torch.Tensor, rank: int, n_power: int = 1, seed: int = 0):
        L, N, D = Xc.shape
        inv = torch.where(sd_LD > 0, 1.0 / sd_LD, torch.ones_like(sd_LD)).float()
        Xs = Xc.float() * (inv[:, None, :] / math.sqrt(N))  # (L, N, D), Xs^T Xs = covariance
        full = min(D, N)
        k = max(1, min(rank, full))
        width = min(k + 16, full)
        if width >= full:
            if D <= N:
                lam, V = torch.linalg.eigh(Xs.transpose(1, 2) @ Xs)
            else:
                lam, U = torch.linalg.eigh(Xs @ Xs.transpose(1, 2))
                V = Xs.transpose(1, 2) @ U / lam.clamp_min(1e-12).sqrt()[:, None, :]
        else:
            g = torch.Generator().manual_seed(seed)
            Q = torch.randn(L, D, width, generator=g)
            for _ in range(n_power + 1):
                Q = torch.linalg.qr(Xs.transpose(1, 2) @ (Xs @ Q)).Q
            XQ = Xs @ Q  # (L, N, width)
            lam, U = torch.linalg.eigh(XQ.transpose(1, 2) @ XQ)
            V = Q @ U
        lam, V = lam[:, -k:], V[:, :, -k:]  # ascending order: keep the top k
        self.lam = lam.clamp_min(0.0).to(Xc.dtype)  # (L, k)
        self.V = V.to(Xc.dtype).contiguous()  # (L, D, k)
        self.tail = self.lam[:, 0] if k < full else torch.zeros(L, dtype=Xc.dtype)

    def apply(self, v: torch.Tensor, c: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Approximate (c * Cov + alpha)^-1 v; v (L, M, C, K, D), c and alpha broadcast to (L, M, C, K)."""
        L, M, C, K, D = v.shape
        lam = self.lam[:, None, None, None, :]
        c_, a_ = c[..., None], alpha[..., None]
        tail_inv = 1.0 / (c_ * self.tail[:, None, None, None, None] + a_)
        proj = torch.bmm(v.reshape(L, -1, D), self.V).view(L, M, C, K, -1)
        proj = proj * (1.0 / (c_ * lam + a_) - tail_inv)
        back = torch.bmm(proj.reshape(L, -1, proj.shape[-1]), self.V.transpose(1, 2)).view(L, M, C, K, D)
        return back + v * tail_inv


class _Objective:
    """Loss, gradient and Hessian-vector products of the scaled objectives."""

    def __init__(self, design: _Design, y: torch.Tensor, masks_MN: torch.Tensor, Cs: torch.Tensor, loss: Loss, K: int):
        L, M, N, D = design.shape
        self.design, self.loss, self.K = design, loss, K
        dt = design.Xc.dtype
        self.m = masks_MN.to(dt)[None, :, None, None, :]  # (1, M, 1, 1, N)
        self.n = masks_MN.to(dt).sum(1)[None, :, None, None]  # (1, M, 1, 1)
        self.mn = self.m / self.n[..., None]  # rows weighted 1/n
        self.alpha = (1.0 / (Cs.to(dt)[None, None, :, None] * self.n))  # (1, M, C, 1) = 1/(C n)
        y = y.to(dt)
        y = y if y.dim() == 2 else y[None].expand(M, N)
        if loss == "multinomial":
            self.Y = torch.nn.functional.one_hot(y.long().clamp(0, K - 1), K).to(dt)  # (M, N, K)
            self.Y = self.Y.permute(0, 2, 1)[None, :, None]  # (1, M, 1, K, N)
        else:
            self.Y = y[None, :, None, None, :]  # (1, M, 1, 1, N)

    def init_intercept(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Intercept of the null model (weights zero) for each problem."""
        pos = (self.Y * self.mn).sum(-1)  # (1, M, 1, K) weighted mean target
        if self.loss == "squared":
            b = pos
        elif self.loss == "logistic":
            b = torch.logit(pos.clamp(1e-6, 1 - 1e-6))
        else:
            b = pos.clamp_min(1e-6).log()
            b = b - b.mean(-1, keepdim=True)
        return b.expand(shape).clone()

    def value_grad(self, w: torch.Tensor, b: torch.Tensor, l2: torch.Tensor):
        """Return f, (gw, gb), curvature weights, z; l2 is the L2 coefficient (broadcast to (L, M, C, K))."""
        z = self.design.forward(w, b)
        if self.loss == "logistic":
            # log(1 + e^z) - y z, stable
            f_rows = torch.nn.functional.softplus(z) - self.Y * z
            p = torch.sigmoid(z)
            r = p - self.Y
            curv = p * (1 - p)
        elif self.loss == "squared":
            r = z - self.Y
            f_rows = 0.5 * r * r
            curv = None
            p = z
        else:
            lse = torch.logsumexp(z, dim=3, keepdim=True)
            p = torch.exp(z - lse)
            f_rows = (lse - z) * self.Y  # summed over K below gives -log p_y
            r = p - self.Y
            curv = p
        f = (f_rows * self.mn).sum((-1, -2)) + 0.5 * (l2[..., 0] * (w * w).sum((-1, -2)))
        gw, gb = self.design.backward(r * self.mn)
        gw = gw + l2[..., None] * w
        return f, gw, gb, curv, p

    def hvp(self, vw: torch.Tensor, vb: torch.Tensor, curv, p, l2: torch.Tensor):
        dz = self.design.forward(vw, vb)
        if self.loss == "logistic":
            u = curv * dz
        elif self.loss == "squared":
            u = dz
        else:
            u = p * (dz - (p * dz).sum(3, keepdim=True))
        hw, hb = self.design.backward(u * self.mn)
        return hw + l2[..., None] * vw, hb

    def mean_curvature(self, curv) -> torch.Tensor:
        if curv is None:
            return torch.ones_like(self.n).expand(-1, -1, 1, 1)
        return (curv * self.mn).sum(-1)


def _precondition(pre: _Precond, rw, rb, c, alpha, loss: Loss):
    """Approximate inverse Hessian times the residual.

    For the softmax the loss is blind to adding one vector to every class, so
    the class-mean part of the residual is removed first: it is zero at every
    iterate from zero (the penalty keeps it so), and the block-diagonal
    approximation would badly mis-scale it.
    """
    if loss == "multinomial":
        rw = rw - rw.mean(3, keepdim=True)
        rb = rb - rb.mean(3, keepdim=True)
    zw, zb = pre.apply(rw, c, alpha), rb / c
    if loss == "multinomial":
        zw = zw - zw.mean(3, keepdim=True)
        zb = zb - zb.mean(3, keepdim=True)
    return zw, zb


def _dot(aw, ab, bw, bb):
    return (aw * bw).sum((-1, -2)) + (ab * bb).sum(-1)


def _newton_cg(obj: _Objective, pre: _Precond, shape, tol: float, max_iter: int, max_cg: int):
    L, M, C, K, D = shape
    dt = obj.design.Xc.dtype
    w = torch.zeros(shape, dtype=dt)
    b = obj.init_intercept((L, M, C, K))
    l2 = obj.alpha.expand(L, M, C, 1)
    eps = torch.finfo(dt).eps
    n_iter = torch.zeros(L, M, C, dtype=torch.long)
    f, gw, gb, curv, p = obj.value_grad(w, b, l2)
    gnorm = torch.maximum(gw.abs().amax((-1, -2)), gb.abs().amax(-1))
    for it in range(max_iter):
        active = gnorm > tol
        if not bool(active.any()):
            break
        n_iter += active.long()
        act = active[..., None].to(dt)
        c = obj.mean_curvature(curv).expand(L, M, C, K).clamp_min(1e-8)
        alpha = l2.expand(L, M, C, K)
        # preconditioned CG on H d = -g, forcing term eta (Eisenstat-Walker flavour)
        rw, rb = -gw * act[..., None], -gb * act
        dw, db = torch.zeros_like(w), torch.zeros_like(b)
        zw, zb = _precondition(pre, rw, rb, c, alpha, obj.loss)
        pw, pb = zw, zb
        rz = _dot(rw, rb, zw, zb)
        r0 = rz.clamp_min(0).sqrt()
        eta = torch.clamp(gnorm.sqrt(), max=0.5).clamp_min(1e-3)
        for _ in range(max_cg):
            hw, hb = obj.hvp(pw, pb, curv, p, l2)
            php = _dot(pw, pb, hw, hb)
            step = torch.where(php > 0, rz / php.clamp_min(1e-30), torch.zeros_like(rz))
            dw = dw + step[..., None, None] * pw
            db = db + step[..., None] * pb
            rw = rw - step[..., None, None] * hw
            rb = rb - step[..., None] * hb
            zw, zb = _precondition(pre, rw, rb, c, alpha, obj.loss)
            rz_new = _dot(rw, rb, zw, zb)
            if bool((rz_new.clamp_min(0).sqrt() <= eta * r0).all()):
                break
            beta = rz_new / rz.clamp_min(1e-30)
            pw = zw + beta[..., None, None] * pw
            pb = zb + beta[..., None] * pb
            rz = rz_new
        # backtracking line search, per problem
        slope = _dot(gw, gb, dw, db)  # < 0
        t = torch.ones(L, M, C, dtype=dt)
        accepted = ~active
        for _ in range(30):
            w_try = w + t[..., None, None] * dw
            b_try = b + t[..., None] * db
            f_try, gw_t, gb_t, curv_t, p_t = obj.value_grad(w_try, b_try, l2)
            noise = 50 * eps * (f.abs() + 1)
            ok = (f_try <= f + 1e-4 * t * slope + noise) & ~accepted
            sel = ok[..., None]
            w = torch.where(sel[..., None], w_try, w)
            b = torch.where(sel, b_try, b)
            gw = torch.where(sel[..., None], gw_t, gw)
            gb = torch.where(sel, gb_t, gb)
            f = torch.where(ok, f_try, f)
            if curv is not None:
                curv = torch.where(sel[..., None], curv_t, curv)
            p = torch.where(sel[..., None], p_t, p)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * 0.5)
        gnorm = torch.maximum(gw.abs().amax((-1, -2)), gb.abs().amax(-1))
    return w, b, n_iter, gnorm


def _soft(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (x.abs() - t).clamp_min(0.0)


def _fista(obj: _Objective, pre: _Precond, shape, l1: torch.Tensor, l2: torch.Tensor, tol: float, max_iter: int):
    """Proximal gradient with Nesterov momentum and adaptive restart; step 1/Lipschitz."""
    L, M, C, K, D = shape
    dt = obj.design.Xc.dtype
    # Lipschitz bound of the smooth part: curvature <= 1/4 (logistic), 1/2 (softmax), 1 (squared)
    cmax = {"logistic": 0.25, "multinomial": 0.5, "squared": 1.0}[obj.loss]
    lip = _lipschitz(obj, (L, M, 1, 1, D)) * cmax  # (L, M, 1, 1)
    lip_w = (lip + l2).expand(L, M, C, K)  # (L, M, C, K)
    lip_b = lip.expand(L, M, C, K)
    w = torch.zeros(shape, dtype=dt)
    b = obj.init_intercept((L, M, C, K))
    yw, yb = w.clone(), b.clone()
    tk = torch.ones(L, M, C, dtype=dt)
    n_iter = torch.zeros(L, M, C, dtype=torch.long)
    gnorm = torch.full((L, M, C), float("inf"), dtype=dt)
    if max_iter == 0:
        gnorm = _subgrad_norm(obj, w, b, l1, l2)
    done = torch.zeros(L, M, C, dtype=torch.bool)
    for it in range(max_iter):
        _, gw, gb, _, _ = obj.value_grad(yw, yb, l2)
        w_new = _soft(yw - gw / lip_w[..., None], l1[..., None] / lip_w[..., None])
        b_new = yb - gb / lip_b
        keep = done[..., None]  # converged problems stay put
        w_new = torch.where(keep[..., None], w, w_new)
        b_new = torch.where(keep, b, b_new)
        n_iter += (~done).long()
        # adaptive restart (O'Donoghue & Candes 2015): momentum points uphill
        restart = ((yw - w_new) * (w_new - w)).sum((-1, -2)) + ((yb - b_new) * (b_new - b)).sum(-1) > 0
        tk = torch.where(restart | done, torch.ones_like(tk), tk)
        tk1 = 0.5 * (1 + torch.sqrt(1 + 4 * tk * tk))
        mom = torch.where(restart | done, torch.zeros_like(tk), (tk - 1) / tk1)
        yw = w_new + mom[..., None, None] * (w_new - w)
        yb = b_new + mom[..., None] * (b_new - b)
        w, b, tk = w_new, b_new, tk1
        if it % 10 == 9 or it == max_iter - 1:
            gnorm = torch.where(done, gnorm, _subgrad_norm(obj, w, b, l1, l2))
            done = done | (gnorm <= tol)
            if bool(done.all()):
                break
    return w, b, n_iter, gnorm


def _subgrad_norm(obj: _Objective, w, b, l1, l2) -> torch.Tensor:
    """Max-abs minimum-norm subgradient of the composite objective."""
    _, gw, gb, _, _ = obj.value_grad(w, b, l2)
    t = l1[..., None]
    sub = torch.where(w != 0, gw + t * torch.sign(w), torch.sign(gw) * (gw.abs() - t).clamp_min(0))
    return torch.maximum(sub.abs().amax((-1, -2)), gb.abs().amax(-1))


def _lipschitz(obj: _Objective, shape, n_power: int = 30) -> torch.Tensor:
    """Largest eigenvalue of X~^T diag(m/n) X~ (with the intercept column) per (layer, mask), by power iteration."""
    L, M, _, _, D = shape
    dt = obj.design.Xc.dtype
    g = torch.Generator().manual_seed(0)
    vw = torch.randn(shape, generator=g, dtype=torch.float64).to(dt)
    vb = torch.ones(L, M, 1, 1, dtype=dt)
    lam = torch.ones(L, M, 1, 1, dtype=dt)
    mn = obj.mn
    for _ in range(n_power):
        nrm = torch.sqrt((vw * vw).sum((-1, -2)) + (vb * vb).sum(-1)).clamp_min(1e-30)
        vw, vb = vw / nrm[..., None, None], vb / nrm[..., None]
        dz = obj.design.forward(vw, vb)
        hw, hb = obj.design.backward(dz * mn)
        lam = (vw * hw).sum((-1, -2)) + (vb * hb).sum(-1)
        vw, vb = hw, hb
    return lam.reshape(L, M, 1, 1) * 1.05 + 1e-12


def _as_tensor(X) -> torch.Tensor:
    """A float tensor view of X without copying; read-only arrays (memory maps) are only ever read."""
    if isinstance(X, torch.Tensor):
        return X if X.is_floating_point() else X.double()
    a = np.asarray(X)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
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
    M, nC = masks.shape[0], Cs_t.shape[0]
    shape = (L, M, nC, K, D)
    design = _Design(X, masks, standardize, dtype)
    obj = _Objective(design, y_t, masks, Cs_t, loss, K)
    alpha = obj.alpha.expand(L, M, nC, 1)
    if penalty == "l2":
        sd = design.global_sd if standardize else torch.ones_like(design.global_sd)
        pre = _Precond(design.Xc, sd, precond_rank)
        if loss == "squared":
            max_iter_, max_cg = (max_iter or 3), 500
        else:
            max_iter_, max_cg = (max_iter or 50), 200
        w, b, n_iter, gnorm = _newton_cg(obj, pre, shape, tol, max_iter_, max_cg)
    elif penalty in ("l1", "elasticnet"):
        r = 1.0 if penalty == "l1" else float(l1_ratio)
        w, b, n_iter, gnorm = _fista(obj, None, shape, alpha * r, alpha * (1 - r), tol, max_iter or 5000)
    else:
        raise ValueError(f"penalty must be 'l2', 'l1' or 'elasticnet', got {penalty!r}")
    return BatchFit(
        coef=w.to(torch.float64).numpy(),
        intercept=b.to(torch.float64).numpy(),
        mean=design.mean_LMD.numpy(),
        scale=design.scale_LMD.numpy(),
        n_iter=n_iter.numpy(),
        grad_norm=gnorm.to(torch.float64).numpy(),
        converged=(gnorm <= tol).numpy(),
    )
