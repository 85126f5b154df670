"""The sparse autoencoder itself, in plain torch: ReLU-L1, TopK (+ AuxK), BatchTopK and JumpReLU.

Weights follow SAELens's names and shapes, so saving is a plain copy: ``W_enc_DF`` is
``W_enc`` [d_in, d_sae], ``W_dec_FD`` is ``W_dec`` [d_sae, d_in], ``b_enc`` [d_sae], ``b_dec``
[d_in], and ``threshold`` [d_sae] for JumpReLU. Shape suffixes: N tokens, D inputs, F latents,
M selected (token, latent) pairs.

Encoding: ``pre = (x - b_dec) @ W_enc + b_enc``; then ``relu`` (ReLU-L1), the k largest
per token (TopK), the ``k * N`` largest over a batch (BatchTopK, training only) or
``relu(pre) * (pre > threshold)`` (JumpReLU; how a trained BatchTopK SAE runs). Decoding:
``acts @ W_dec + b_dec``.

TopK kinds train sparsely: the dense ``pre`` is computed once without autograd, the
selected entries are re-read through :class:`_GatherPre`, whose backward is a sparse
product, and decoding is a sparse product too, so neither a dense (N, F) gradient nor a
dense decode is ever formed.

>>> sae = SparseAutoencoder(d_in=8, d_sae=32, arch="topk", k=4, seed=0)
>>> out = sae(torch.randn(5, 8))
>>> tuple(out.acts_NF.shape), int((out.acts_NF > 0).sum(1).max()) <= 4
((5, 32), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import RiskscopeError

KINDS = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass(frozen=True)
class SAEOutput:
    """What a forward pass gives: the reconstruction and the latent activations."""

    recon_ND: Tensor
    """Reconstruction of the input."""
    acts_NF: Tensor
    """Latent activations (dense; zeros where a latent is off)."""


@dataclass(frozen=True)
class TrainOutput:
    """One training forward: the loss to minimise and its parts (scalars), plus firing facts."""

    loss: Tensor
    """Total loss: mse + l1_coefficient * l1 + aux_coefficient * aux."""
    mse: Tensor
    """Squared error summed over inputs, averaged over tokens."""
    l1: Tensor
    """Decoder-norm-weighted L1 of the activations (ReLU-L1; 0 otherwise)."""
    aux: Tensor
    """AuxK loss: dead latents predicting the residual (TopK kinds; 0 when none are dead)."""
    l0: float
    """Mean active latents per token."""
    fvu: float
    """Batch fraction of variance unexplained (around the batch mean)."""
    counts_F: Tensor
    """Per latent: tokens of this batch it fired on (int64)."""
    min_selected: float
    """Smallest positive selected activation (BatchTopK threshold estimate; nan otherwise)."""


def _offsets(rows_M: Tensor, n: int) -> Tensor:
    """Start of each token's entries in ``rows_M`` (sorted), as ``embedding_bag`` wants them."""
    counts = torch.bincount(rows_M, minlength=n)
    return torch.cumsum(counts, 0) - counts


def _bag(cols_M: Tensor, offsets_N: Tensor, W_FD: Tensor, vals_M: Tensor) -> Tensor:
    """``out[n] = sum of vals[m] * W[cols[m]]`` over token n's entries: a sparse (N, F) @ (F, D) product
    (``embedding_bag``: its backward neither forms a dense (N, F) gradient nor gathers (M, D) rows)."""
    return nn.functional.embedding_bag(cols_M, W_FD, offsets_N, mode="sum", per_sample_weights=vals_M)


class _GatherPre(torch.autograd.Function):
    """``(x @ W + b)[rows, cols]`` with a sparse backward (the values are given, computed without autograd)."""

    @staticmethod
    def forward(ctx, x_ND, W_DF, b_F, vals_M, cols_M, offsets_N):
        ctx.save_for_backward(x_ND, W_DF, cols_M, offsets_N)
        return vals_M.clone()

    @staticmethod
    def backward(ctx, g_M):
        x_ND, W_DF, cols_M, offsets_N = ctx.saved_tensors
        with torch.enable_grad():
            Wt_FD = W_DF.detach().t().contiguous().requires_grad_(ctx.needs_input_grad[1])
            gx = _bag(cols_M, offsets_N, Wt_FD, g_M)  # (N, D): G @ W.T
            gW = torch.autograd.grad(gx, Wt_FD, grad_outputs=x_ND)[0].t() if ctx.needs_input_grad[1] else None
        gb = torch.zeros_like(W_DF[0]).index_add_(0, cols_M, g_M) if ctx.needs_input_grad[2] else None
        return gx.detach() if ctx.needs_input_grad[0] else None, gW, gb, None, None, None


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder over ``d_in``-wide activations with ``d_sae`` latents.

    ``arch``: ``relu``, ``topk``, ``batchtopk`` (trains with a batch-level top-k, runs as
    JumpReLU with ``threshold``) or ``jumprelu`` (inference only, e.g. loaded from disk).
    """

    def __init__(self, d_in: int, d_sae: int, arch: str = "topk", k: int = 32, seed: int = 0,
                 decoder_norm: float = 1.0, dtype: torch.dtype = torch.float32):
        super().__init__()
        if arch not in KINDS:
            raise RiskscopeError(f"unknown SAE architecture {arch!r}; riskscope reads {', '.join(KINDS)}")
        self.d_in, self.d_sae, self.arch, self.k = int(d_in), int(d_sae), arch, int(k)
        gen = torch.Generator().manual_seed(int(seed))
        W_dec = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * decoder_norm
        self.W_dec = nn.Parameter(W_dec.to(dtype))  # [F, D]
        self.W_enc = nn.Parameter(W_dec.t().contiguous().to(dtype))  # [D, F], tied at init
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in, dtype=dtype))
        self.register_buffer("threshold", torch.zeros(self.d_sae, dtype=dtype))

    # --- inference -----------------------------------------------------------------------------

    def pre_acts(self, x_ND: Tensor) -> Tensor:
        """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc``: (N, F)."""
        return torch.addmm(self.b_enc, x_ND.to(self.W_enc.dtype) - self.b_dec, self.W_enc)

    def encode(self, x_ND: Tensor) -> Tensor:
        """Latent activations (N, F); BatchTopK runs as JumpReLU with its threshold."""
        pre = self.pre_acts(x_ND)
        if self.arch == "relu":
            return torch.relu(pre)
        if self.arch == "topk":
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        return torch.relu(pre) * (pre > self.threshold)

    def decode(self, acts_NF: Tensor) -> Tensor:
        """Reconstruction (N, D) from latent activations."""
        return torch.addmm(self.b_dec, acts_NF.to(self.W_dec.dtype), self.W_dec)

    def forward(self, x_ND: Tensor) -> SAEOutput:
        acts = self.encode(x_ND)
        return SAEOutput(recon_ND=self.decode(acts), acts_NF=acts)

    # --- training ------------------------------------------------------------------------------

    def train_step(self, x_ND: Tensor, l1_coefficient: float = 0.0, dead_F: Tensor | None = None,
                   aux_k: int = 0, aux_coefficient: float = 0.0) -> TrainOutput:
        """The training forward on a batch of (normalised) inputs; call ``.loss.backward()`` on the result."""
        if self.arch == "relu":
            return self._train_relu(x_ND, l1_coefficient)
        if self.arch == "jumprelu":
            raise RiskscopeError("a JumpReLU SAE is inference-only here; train arch batchtopk instead")
        n = x_ND.shape[0]
        x_c = x_ND - self.b_dec  # differentiable in b_dec
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_c, self.W_enc)
            if self.arch == "topk":
                top_v, top_i = pre.topk(self.k, dim=-1, sorted=False)
                rows = torch.arange(n, device=x_ND.device).repeat_interleave(self.k)
                cols, vals_pre = top_i.reshape(-1), top_v.reshape(-1)
            else:
                flat_i = torch.relu(pre).reshape(-1).topk(self.k * n, sorted=False).indices.sort().values
                rows, cols, vals_pre = flat_i // self.d_sae, flat_i % self.d_sae, pre.reshape(-1)[flat_i]
            offsets = _offsets(rows, n)
        acts_M = torch.relu(_GatherPre.apply(x_c, self.W_enc, self.b_enc, vals_pre, cols, offsets))
        recon = _bag(cols, offsets, self.W_dec, acts_M) + self.b_dec
        err = recon - x_ND
        mse = err.pow(2).sum(-1).mean()
        aux = x_ND.new_zeros(())
        if dead_F is not None and aux_coefficient > 0 and bool(dead_F.any()):
            n_dead = int(dead_F.sum())
            k_aux = min(aux_k, n_dead)
            with torch.no_grad():
                a_v, a_i = pre.masked_fill(~dead_F[None, :], float("-inf")).topk(k_aux, dim=-1, sorted=False)
                a_cols = a_i.reshape(-1)
                a_off = torch.arange(n, device=x_ND.device) * k_aux
            a_acts = torch.relu(_GatherPre.apply(x_c, self.W_enc, self.b_enc, a_v.reshape(-1), a_cols, a_off))
            e_hat = _bag(a_cols, a_off, self.W_dec, a_acts)
            aux = min(n_dead / max(aux_k, 1), 1.0) * (e_hat - (x_ND - recon).detach()).pow(2).sum(-1).mean()
        loss = mse + aux_coefficient * aux
        with torch.no_grad():
            on = acts_M > 0
            counts = torch.bincount(cols[on], minlength=self.d_sae)
            l0 = float(on.sum()) / n
            min_sel = float(acts_M[on].min()) if bool(on.any()) else float("nan")
            fvu = float(err.pow(2).sum() / (x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12))
        return TrainOutput(loss=loss, mse=mse.detach(), l1=x_ND.new_zeros(()), aux=aux.detach(), l0=l0, fvu=fvu,
                           counts_F=counts, min_selected=min_sel)

    def _train_relu(self, x_ND: Tensor, l1_coefficient: float) -> TrainOutput:
        pre = torch.addmm(self.b_enc, x_ND - self.b_dec, self.W_enc)
        acts = torch.relu(pre)
        recon = torch.addmm(self.b_dec, acts, self.W_dec)
        err = recon - x_ND
        mse = err.pow(2).sum(-1).mean()
        l1 = (acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        with torch.no_grad():
            on = acts > 0
            fvu = float(err.pow(2).sum() / (x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12))
        return TrainOutput(loss=mse + l1_coefficient * l1, mse=mse.detach(), l1=l1.detach(),
                           aux=x_ND.new_zeros(()), l0=float(on.sum()) / x_ND.shape[0], fvu=fvu,
                           counts_F=on.sum(0), min_selected=float("nan"))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """TopK kinds keep decoder rows at unit norm: drop the gradient component along each row."""
        if self.arch in ("topk", "batchtopk") and self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec.data
            g -= (g * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Set decoder rows back to unit norm (TopK kinds, after each step)."""
        if self.arch in ("topk", "batchtopk"):
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on ``scale * x`` read raw ``x`` (SAELens's fold of the normalisation factor)."""
        self.W_enc.data *= scale
        self.W_dec.data /= scale
        self.b_dec.data /= scale


__all__ = ["KINDS", "SAEOutput", "SparseAutoencoder", "TrainOutput"]
