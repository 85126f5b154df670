"""The batched problems behind :func:`fit_many`: implicit standardisation, losses, preconditioner.

Problems are indexed by ``q = m * C + c`` (training mask ``m``, regularisation
value ``c``) and share the layer's activations. A :class:`View` gathers the
per-problem pieces of a subset of problems so solvers can drop converged ones.

Shapes: ``L`` layers, ``N`` rows, ``D`` features, ``M`` masks, ``Q`` problems
per layer, ``K`` outputs (1, or classes for the softmax).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Loss = Literal["logistic", "multinomial", "squared"]


class Problems:
    """Activations, fold statistics, targets and penalties of all L x M x C problems."""

    def __init__(
        self,
        X_LND: torch.Tensor,
        masks_MN: torch.Tensor,
        y_MN: torch.Tensor,
        Cs: torch.Tensor,
        loss: Loss,
        K: int,
        standardize: bool,
        dtype: torch.dtype,
    ):
        L, N, D = X_LND.shape
        M, C = masks_MN.shape[0], Cs.shape[0]
        self.loss, self.K, self.dtype = loss, K, dtype
        self.L, self.N, self.D, self.M, self.C = L, N, D, M, C
        center_LD = X_LND.sum(1, dtype=torch.float64) / N
        # one working copy, centred on all rows so that fold statistics do not cancel in float32
        self.Xc = X_LND.to(dtype) - center_LD.to(dtype)[:, None, :]  # (L, N, D)
        m = masks_MN.to(dtype)
        n_M = m.sum(1)
        sq = self.Xc * self.Xc
        self.global_sd = (sq.sum(1, dtype=torch.float64) / N).sqrt()  # (L, D)
        if standardize:
            mu = torch.einsum("mn,lnd->lmd", m, self.Xc).to(torch.float64) / n_M.double()[None, :, None]
            ex2 = torch.einsum("mn,lnd->lmd", m, sq).to(torch.float64) / n_M.double()[None, :, None]
            sd = (ex2 - mu**2).clamp_min(0.0).sqrt()
            tiny = torch.finfo(dtype).eps * 10 * (self.global_sd[:, None, :] + (mu + center_LD[:, None]).abs())
            sd = torch.where(sd > tiny, sd, torch.ones_like(sd))  # constant feature: scale 1, like StandardScaler
        else:
            mu = -center_LD[:, None, :].expand(L, M, D)
            sd = torch.ones(L, M, D, dtype=torch.float64)
        del sq
        self.mean_LMD = mu + center_LD[:, None, :]  # float64, reported
        self.scale_LMD = sd
        self.mu_LMD = mu.to(dtype)  # relative to the all-row centre
        self.inv_s_LMD = (1.0 / sd).to(dtype)
        self.mn_MN = m / n_M[:, None]  # training rows weighted 1 / n
        self.m_of_q = torch.arange(M).repeat_interleave(C)
        self.alpha_Q = 1.0 / (Cs.to(dtype)[torch.arange(C).repeat(M)] * n_M[self.m_of_q])  # 1 / (C n)
        y = y_MN.to(dtype)
        if loss == "multinomial":
            self.Y_MKN = torch.nn.functional.one_hot(y.long().clamp(0, K - 1), K).to(dtype).permute(0, 2, 1)
        else:
            self.Y_MKN = y[:, None, :]

    @property
    def Q(self) -> int:
        return self.M * self.C

    def view(self, sel: torch.Tensor | None = None) -> View:
        """The problems ``sel`` (indices into Q; all when None)."""
        return View(self, torch.arange(self.Q) if sel is None else sel)


class View:
    """A subset of problems with their per-problem pieces gathered."""

    def __init__(self, P: Problems, sel: torch.Tensor):
        self.P, self.sel = P, sel
        m = P.m_of_q[sel]
        self.inv_s = P.inv_s_LMD[:, m]  # (L, Q', D)
        self.mu = P.mu_LMD[:, m]
        self.mn = P.mn_MN[m][None, :, None, :]  # (1, Q', 1, N)
        self.Y = P.Y_MKN[m][None]  # (1, Q', K, N)
        self.alpha = P.alpha_Q[sel]  # (Q',)

    def subset(self, keep: torch.Tensor) -> View:
        """The problems of this view where boolean ``keep`` (Q',) is true."""
        return View(self.P, self.sel[keep])

    def forward(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """w (L, Q', K, D), b (L, Q', K) -> z (L, Q', K, N) = standardised X @ w + b."""
        L, Q, K, D = w.shape
        a = w * self.inv_s[:, :, None, :]
        z = torch.bmm(a.reshape(L, Q * K, D), self.P.Xc.transpose(1, 2)).view(L, Q, K, -1)
        return z + (b - (a * self.mu[:, :, None, :]).sum(-1))[..., None]

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r (L, Q', K, N) -> (standardised X^T r (L, Q', K, D), sum_n r (L, Q', K))."""
        L, Q, K, N = r.shape
        g = torch.bmm(r.reshape(L, Q * K, N), self.P.Xc).view(L, Q, K, -1)
        rs = r.sum(-1)
        return (g - rs[..., None] * self.mu[:, :, None, :]) * self.inv_s[:, :, None, :], rs

    def init_intercept(self) -> torch.Tensor:
        """Intercepts of the null model (all weights zero): (L, Q', K)."""
        mean = (self.Y * self.mn).sum(-1)  # (1, Q', K)
        if self.P.loss == "logistic":
            mean = torch.logit(mean.clamp(1e-6, 1 - 1e-6))
        elif self.P.loss == "multinomial":
            mean = mean.clamp_min(1e-6).log()
            mean = mean - mean.mean(-1, keepdim=True)
        return mean.expand(self.P.L, -1, -1).clone()

    def value_grad(self, w: torch.Tensor, b: torch.Tensor, l2: torch.Tensor | None = None):
        """Objective (L, Q'), gradient (gw, gb), curvature weights and model output.

        ``l2`` is the L2 coefficient per problem (Q',), default ``1 / (C n)``.
        """
        l2 = self.alpha if l2 is None else l2
        z = self.forward(w, b)
        loss = self.P.loss
        if loss == "logistic":
            rows = torch.nn.functional.softplus(z) - self.Y * z
            p = torch.sigmoid(z)
            curv = p * (1 - p)
        elif loss == "squared":
            rows = 0.5 * (z - self.Y) ** 2
            p, curv = z, None
        else:
            lse = torch.logsumexp(z, dim=2, keepdim=True)
            p = torch.exp(z - lse)
            rows = (lse - z) * self.Y
            curv = p
        f = (rows * self.mn).sum((-1, -2)) + 0.5 * l2 * (w * w).sum((-1, -2))
        gw, gb = self.backward((p - self.Y) * self.mn)
        return f, gw + l2[:, None, None] * w, gb, curv, p

    def hvp(self, vw: torch.Tensor, vb: torch.Tensor, curv, p) -> tuple[torch.Tensor, torch.Tensor]:
        """Hessian of the L2 objective times (vw, vb) at the point where ``curv``/``p`` were taken."""
        dz = self.forward(vw, vb)
        if self.P.loss == "logistic":
            u = curv * dz
        elif self.P.loss == "squared":
            u = dz
        else:
            u = p * (dz - (p * dz).sum(2, keepdim=True))
        hw, hb = self.backward(u * self.mn)
        return hw + self.alpha[:, None, None] * vw, hb

    def mean_curvature(self, curv) -> torch.Tensor:
        """Average loss curvature over training rows, per (layer, problem, output): (L, Q', K)."""
        if curv is None:
            return torch.ones(self.P.L, len(self.sel), self.P.K, dtype=self.P.dtype)
        return (curv * self.mn).sum(-1)


class Precond:
    """Spectral preconditioner: top eigenpairs of each layer's standardised covariance.

    Computed once per layer on all rows by randomised subspace iteration in
    float32 (Halko et al. 2011). It approximates ``c * Cov + alpha`` and only
    changes how fast conjugate gradients converge, never the solution.
    """

    def __init__(self, Xc: torch.Tensor, sd_LD: torch.Tensor, rank: int, n_power: int = 1, seed: int = 0):
        L, N, D = Xc.shape
        inv = torch.where(sd_LD > 0, 1.0 / sd_LD, torch.ones_like(sd_LD)).float()
        Xs = Xc.float() * (inv[:, None, :] / math.sqrt(N))  # (L, N, D); Xs^T Xs = covariance
        full = min(D, N)
        k = max(1, min(rank, full))
        width = min(k + 16, full)
        if width >= full:
            if D <= N:
                lam, V = torch.linalg.eigh(Xs.transpose(1, 2) @ Xs)
            else:  # dual: eigenvectors of the N x N Gram, mapped back
                lam, U = torch.linalg.eigh(Xs @ Xs.transpose(1, 2))
                V = Xs.transpose(1, 2) @ U / lam.clamp_min(1e-12).sqrt()[:, None, :]
        else:
            Q = torch.randn(L, D, width, generator=torch.Generator().manual_seed(seed))
            for _ in range(n_power + 1):
                Q = torch.linalg.qr(Xs.transpose(1, 2) @ (Xs @ Q)).Q
            XQ = Xs @ Q  # (L, N, width)
            lam, U = torch.linalg.eigh(XQ.transpose(1, 2) @ XQ)
            V = Q @ U
        lam, V = lam[:, -k:], V[:, :, -k:]  # eigh sorts ascending: keep the top k
        self.lam = lam.clamp_min(0.0).to(Xc.dtype)  # (L, k)
        self.V = V.to(Xc.dtype).contiguous()  # (L, D, k)
        self.tail = self.lam[:, 0] if k < full else torch.zeros(L, dtype=Xc.dtype)

    def apply(self, v: torch.Tensor, c: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Approximately solve (c Cov + alpha) x = v; v (L, Q, K, D), c (L, Q, K), alpha (Q,)."""
        L, Q, K, D = v.shape
        c_, a_ = c[..., None], alpha[None, :, None, None]
        tail_inv = 1.0 / (c_ * self.tail[:, None, None, None] + a_)
        proj = torch.bmm(v.reshape(L, Q * K, D), self.V).view(L, Q, K, -1)
        proj = proj * (1.0 / (c_ * self.lam[:, None, None, :] + a_) - tail_inv)
        back = torch.bmm(proj.reshape(L, Q * K, -1), self.V.transpose(1, 2)).view(L, Q, K, D)
        return back + v * tail_inv
