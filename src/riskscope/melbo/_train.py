"""Training many MELBO vectors (or adapters) at once.

Every vector is a batch row, so one optimiser step updates all of them. The update
is the MELBO paper's, applied row by row: the gradient of ``-objective`` is projected onto
the sphere's tangent (and, for ``hard`` orthogonality, away from the vectors before
it in a fixed order), AdamW (AMSGrad) steps, then the vectors are re-orthogonalised
(Gram-Schmidt in that same order, via QR) and renormalised to R. Adam is element-wise,
so one optimiser over a (V, D) tensor is exactly V independent optimisers.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ._config import MelboConfig
from ._engine import SteeredSlice

Progress = Callable[[int, int], object]


@dataclass
class TrainResult:
    """What one batched training run produced."""

    kind: str
    """``vector`` or ``adapter``."""
    radius_V: Tensor
    """R of each row."""
    theta_VD: Tensor | None = None
    """Learned steering vectors (norm R each), for ``kind == "vector"``."""
    A_VFr: Tensor | None = None
    """Adapter input factors (unit columns), for ``kind == "adapter"``."""
    B_VDr: Tensor | None = None
    """Adapter output factors (unit columns)."""
    curves_SV: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    """Objective of every row at every step (before that step's update)."""
    objective_V: Tensor = field(default_factory=lambda: torch.zeros(0))
    """Objective of the final vectors."""
    seconds: float = 0.0
    """Wall time of the optimisation loop (setup excluded)."""
    steps: int = 0

    @property
    def n(self) -> int:
        return int(self.radius_V.shape[0])

    @property
    def vector_steps_per_second(self) -> float:
        return self.n * self.steps / self.seconds if self.seconds > 0 else float("nan")


# --- constraints -------------------------------------------------------------------------------------------


def _orthonormal(theta_kD: Tensor) -> Tensor:
    """Gram-Schmidt of the rows in order (QR of the transpose), signs kept: (k, D) unit rows."""
    Q, R = torch.linalg.qr(theta_kD.T.double())
    sign = torch.sign(torch.diagonal(R))
    sign[sign == 0] = 1.0
    return (Q * sign).T.to(theta_kD.dtype)


def retract_vectors(theta_VD: Tensor, radius_V: Tensor, groups: Sequence[Tensor], hard: bool) -> Tensor:
    """Back onto the spheres (and, if ``hard``, orthogonal within each group, earlier rows first)."""
    if not hard:
        return theta_VD / theta_VD.norm(dim=1, keepdim=True).clamp_min(1e-30) * radius_V[:, None]
    out = theta_VD.clone()
    for idx in groups:
        out[idx] = _orthonormal(theta_VD[idx]) * radius_V[idx, None]
    return out


def project_vector_grads(grad_VD: Tensor, theta_VD: Tensor, radius_V: Tensor, groups: Sequence[Tensor],
                         hard: bool) -> Tensor:
    """Remove from each row's gradient its components along earlier rows (``hard``) and along itself."""
    g = grad_VD.clone()
    if hard:
        for idx in groups:
            Q = _orthonormal(theta_VD[idx])                        # (k, D)
            coef = torch.tril(g[idx] @ Q.T, diagonal=-1)          # (k, k): row j on earlier rows i < j
            g[idx] = g[idx] - coef @ Q
    return g - (g * theta_VD).sum(1, keepdim=True) * theta_VD / radius_V[:, None] ** 2


def _pair_mask(groups: Sequence[Tensor], n: int, device) -> Tensor:
    """(V, V) upper-triangular mask of pairs in the same group."""
    same = torch.zeros(n, n, dtype=torch.bool, device=device)
    for idx in groups:
        same[idx[:, None], idx[None, :]] = True
    return torch.triu(same, diagonal=1)


def soft_penalty_vectors(theta_VD: Tensor, groups: Sequence[Tensor]) -> Tensor:
    """Sum over same-group pairs of squared cosine similarity."""
    unit = theta_VD / theta_VD.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    return (cos.pow(2) * _pair_mask(groups, len(theta_VD), theta_VD.device)).sum()


def soft_penalty_adapters(A_VFr: Tensor, B_VDr: Tensor, groups: Sequence[Tensor]) -> Tensor:
    """Same, for the flattened weight perturbations B_v A_v^T (Frobenius cosine)."""
    inner = torch.einsum("ifr,jfs,idr,jds->ij", A_VFr, A_VFr, B_VDr, B_VDr)  # <B_i A_i^T, B_j A_j^T>
    norm = inner.diagonal().clamp_min(1e-30).sqrt()
    cos = inner / (norm[:, None] * norm[None, :])
    return (cos.pow(2) * _pair_mask(groups, len(A_VFr), A_VFr.device)).sum()


def _earlier_span(B_kDr: Tensor) -> tuple[Tensor, Tensor]:
    """An orthonormal basis Q (D, k*r) of the output columns in order (adapter 0's first), and a (k, k*r)
    mask of the basis columns that span the adapters *before* each adapter."""
    k, D, r = B_kDr.shape
    Q, R = torch.linalg.qr(B_kDr.permute(0, 2, 1).reshape(k * r, D).T.double())
    before = torch.arange(k * r, device=B_kDr.device)[None, :] < (torch.arange(k, device=B_kDr.device) * r)[:, None]
    return Q.to(B_kDr.dtype), before.to(B_kDr.dtype)


def project_earlier_outputs(X_VDr: Tensor, B_VDr: Tensor, groups: Sequence[Tensor]) -> Tensor:
    """``X`` (adapters' output factors, or their gradients) with each adapter's columns projected away from
    the span of the output columns of the adapters before it in its group (hard-orthogonal adapters)."""
    out = X_VDr.clone()
    for idx in groups:
        Q, before = _earlier_span(B_VDr[idx])                           # (D, k*r), (k, k*r)
        coef = torch.einsum("dm,kdr->kmr", Q, X_VDr[idx]) * before[:, :, None]
        out[idx] = X_VDr[idx] - torch.einsum("dm,kmr->kdr", Q, coef)
    return out


def retract_adapter_outputs(B_VDr: Tensor, groups: Sequence[Tensor], hard: bool) -> Tensor:
    """Unit-norm output columns; with ``hard`` each adapter's columns are first made orthogonal to every output
    column of the adapters before it in its group, so that the products ``B_i A_iᵀ`` and ``B_j A_jᵀ`` are
    exactly orthogonal (Frobenius): ``<B_i A_iᵀ, B_j A_jᵀ> = tr(A_i B_iᵀ B_j A_jᵀ) = 0`` when ``B_iᵀ B_j = 0``."""
    return _unit_columns(project_earlier_outputs(B_VDr, B_VDr, groups) if hard else B_VDr)


def _unit_columns(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _column_tangent(grad: Tensor, x: Tensor) -> Tensor:
    return grad - (grad * x).sum(1, keepdim=True) * x


# --- starts ------------------------------------------------------------------------------------------------


def random_vectors(n: int, d: int, radius: float | Tensor, generator: torch.Generator) -> Tensor:
    """``n`` Gaussian directions scaled to norm ``radius`` (CPU float32)."""
    v = torch.randn(n, d, generator=generator)
    r = radius if torch.is_tensor(radius) else torch.full((n,), float(radius))
    return v / v.norm(dim=1, keepdim=True) * r[:, None]


def _groups_of(labels_V: Tensor) -> list[Tensor]:
    return [torch.nonzero(labels_V == g).flatten() for g in torch.unique(labels_V, sorted=True)]


# --- the loop ----------------------------------------------------------------------------------------------


def chunk_size(cfg: MelboConfig, sl: SteeredSlice, n: int) -> int:
    if cfg.vector_batch is not None:
        return min(n, cfg.vector_batch)
    return max(1, min(n, cfg.token_budget // max(1, sl.tokens_per_vector())))


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients inside (only the perturbation's are needed); ``requires_grad`` restored after."""
    on = [p for p in model.parameters() if p.requires_grad]
    for p in on:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in on:
            p.requires_grad_(True)


def train(sl: SteeredSlice, cfg: MelboConfig, radius_V: Tensor, group_V: Tensor | None = None,
          progress: Progress | None = None, steps: int | None = None, init_VD: Tensor | None = None) -> TrainResult:
    """Train ``len(radius_V)`` vectors (or adapters, per ``cfg.adapter_rank``) together.

    ``group_V`` labels rows whose orthogonality is enforced among themselves (default: one group).
    ``init_VD`` replaces the random start of steering vectors (used by tests and the benchmark).
    The model's parameters get no gradients (their ``requires_grad`` flags are restored afterwards).
    """
    with frozen(sl.lm.model):
        return _train(sl, cfg, radius_V, group_V, progress, steps, init_VD)


def _train(sl: SteeredSlice, cfg: MelboConfig, radius_V: Tensor, group_V: Tensor | None, progress: Progress | None,
           steps: int | None, init_VD: Tensor | None) -> TrainResult:
    steps = cfg.steps if steps is None else steps
    device = sl.lm.device
    n = int(radius_V.shape[0])
    radius_V = radius_V.to(device, torch.float32)
    groups = [g.to(device) for g in _groups_of(group_V if group_V is not None else torch.zeros(n, dtype=torch.long))]
    ortho = cfg.ortho
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    D, F, r = sl.lm.d_model, sl.lm.layout.d_mlp, cfg.adapter_rank
    adapter = r > 0
    if adapter:
        A = _unit_columns(torch.randn(n, F, r, generator=gen)).to(device).requires_grad_(True)
        B = retract_adapter_outputs(torch.randn(n, D, r, generator=gen).to(device), groups, ortho == "hard")
        B.requires_grad_(True)
        params = [A, B]
        neurons = sl.neurons_PTF.float()
    else:
        start = init_VD if init_VD is not None else torch.randn(n, D, generator=gen)
        theta = retract_vectors(start.to(device, torch.float32), radius_V, groups, ortho == "hard")
        theta.requires_grad_(True)
        params = [theta]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=0.0, amsgrad=True)
    C = chunk_size(cfg, sl, n)

    def delta(c0: int, c1: int) -> Tensor:
        if not adapter:
            return theta[c0:c1]
        low = torch.einsum("ptf,cfr->cptr", neurons, A[c0:c1])
        return radius_V[c0:c1, None, None, None] * torch.einsum("cptr,cdr->cptd", low, B[c0:c1])

    def penalty() -> Tensor:
        return soft_penalty_adapters(A, B, groups) if adapter else soft_penalty_vectors(theta, groups)

    curves = torch.zeros(steps, n)
    scale = None
    t0 = time.perf_counter()
    for step in range(steps):
        opt.zero_grad(set_to_none=False)
        for c0 in range(0, n, C):
            c1 = min(n, c0 + C)
            obj = sl.objective_of(delta(c0, c1), cfg.p, cfg.q)
            (-obj.sum()).backward()
            curves[step, c0:c1] = obj.detach().cpu()
        if ortho == "soft" and cfg.soft_weight > 0 and n > 1:
            if scale is None:
                scale = float(curves[0].mean().clamp_min(1e-12))
            (cfg.soft_weight * scale * penalty()).backward()
        with torch.no_grad():
            if adapter:
                A.grad.copy_(_column_tangent(A.grad, A))
                gB = project_earlier_outputs(B.grad, B, groups) if ortho == "hard" else B.grad
                B.grad.copy_(_column_tangent(gB, B))
            else:
                theta.grad.copy_(project_vector_grads(theta.grad, theta, radius_V, groups, ortho == "hard"))
        opt.step()
        with torch.no_grad():
            if adapter:
                A.copy_(_unit_columns(A))
                B.copy_(retract_adapter_outputs(B, groups, ortho == "hard"))
            else:
                theta.copy_(retract_vectors(theta, radius_V, groups, ortho == "hard"))
        if progress is not None:
            progress(step + 1, steps)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = torch.cat([sl.objective_of(delta(c0, min(n, c0 + C)), cfg.p, cfg.q).cpu()
                           for c0 in range(0, n, C)])
    out = TrainResult(kind="adapter" if adapter else "vector", radius_V=radius_V.cpu(), curves_SV=curves,
                      objective_V=final, seconds=seconds, steps=steps)
    if adapter:
        out.A_VFr, out.B_VDr = A.detach().cpu(), B.detach().cpu()
    else:
        out.theta_VD = theta.detach().cpu()
    return out


def objective_of(sl: SteeredSlice, cfg: MelboConfig, theta_VD: Tensor, chunk: int | None = None) -> Tensor:
    """The objective (V,) of fixed vectors (no gradients), e.g. of random controls."""
    n = int(theta_VD.shape[0])
    C = chunk or chunk_size(cfg, sl, n)
    theta_VD = theta_VD.to(sl.lm.device, torch.float32)
    with torch.no_grad():
        return torch.cat([sl.objective_of(theta_VD[c0:c0 + C], cfg.p, cfg.q).cpu()
                          for c0 in range(0, n, C)])


__all__ = ["TrainResult", "objective_of", "project_earlier_outputs", "project_vector_grads", "random_vectors",
           "retract_adapter_outputs", "retract_vectors", "train"]
