"""The target block, computed only where the objective looks.

The objective reads the target layer at a few positions (``last:2``: 2 tokens per
prompt). Every token's keys and values at the target layer matter (the selected
queries attend to them), but its query, attention output, MLP and residual sums
matter only at the selected rows. For a pre-norm rotary block (Llama, Mistral, Qwen2,
Qwen3, SmolLM, ...) that is 2 of ~40 tokens: the target block shrinks to its K/V
projections. Where the block's parts live comes from the family's adapter
(:meth:`~riskscope.models.Layout.rotary`); the same operations are applied in the same
order, so the result is exact to float rounding. :class:`SteeredSlice` compares it with
the block itself at setup and uses the block whenever they differ (sliding windows,
soft-capping, a family the adapter does not describe...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import RotaryParts


class RowTarget:
    """A pre-norm rotary decoder block split into 'K/V for every token' and 'the rest for some rows'."""

    def __init__(self, parts: RotaryParts, cos_TH: Tensor, sin_TH: Tensor) -> None:
        self.parts = parts
        self.hd, self.scaling = parts.head_dim, parts.scaling
        self.cos_TH, self.sin_TH = cos_TH, sin_TH  # rotary tables for absolute positions 0..T-1

    def _heads(self, proj: torch.nn.Module, norm: torch.nn.Module | None, x: Tensor) -> Tensor:
        """(..., H, hd) per-head projections of ``x`` (..., D), normed per head when the block does so."""
        y = proj(x).view(*x.shape[:-1], -1, self.hd)
        return norm(y) if norm is not None else y

    def kv(self, h_BTD: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Rotated keys and values (B, Hkv, T, hd) of tokens at absolute positions start..start+T-1."""
        p = self.parts
        x = p.norm_attn(h_BTD)
        k = self._heads(p.k, p.k_norm, x).transpose(1, 2)
        v = self._heads(p.v, None, x).transpose(1, 2)
        pos = slice(start, start + h_BTD.shape[1])
        return p.rope(k, self.cos_TH[None, pos], self.sin_TH[None, pos]), v

    def rows(self, h_ND: Tensor, pos_N: Tensor, k_NHTd: Tensor, v_NHTd: Tensor) -> Tensor:
        """Block output at N rows: row n is the token at absolute position ``pos_N[n]`` whose own
        sequence's keys/values (positions 0..T-1, causal) are ``k_NHTd[n]``, ``v_NHTd[n]``."""
        p = self.parts
        N, T = h_ND.shape[0], k_NHTd.shape[2]
        x = p.norm_attn(h_ND)
        q = self._heads(p.q, p.q_norm, x)[:, :, None]                          # (N, H, 1, hd)
        q = p.rope(q, self.cos_TH[pos_N][:, None], self.sin_TH[pos_N][:, None])
        groups = q.shape[1] // k_NHTd.shape[1]                                  # grouped K/V heads
        k = k_NHTd.repeat_interleave(groups, dim=1) if groups > 1 else k_NHTd
        v = v_NHTd.repeat_interleave(groups, dim=1) if groups > 1 else v_NHTd
        mask = (torch.arange(T, device=h_ND.device)[None] <= pos_N[:, None])[:, None, None, :]  # (N, 1, 1, T)
        att = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, scale=self.scaling)
        h = h_ND + p.o(att.reshape(N, -1))
        return h + p.mlp(p.norm_mlp(h))


def rotary_tables(parts: RotaryParts, kwargs: dict, lengths: list[int]) -> tuple[Tensor, Tensor] | None:
    """cos/sin (T, hd) for positions 0..T-1 from a recorded block call (the longest prompt's row)."""
    pe = parts.tables(kwargs)
    if pe is None:
        return None
    row = max(range(len(lengths)), key=lambda i: lengths[i]) if pe[0].shape[0] > 1 else 0
    return pe[0][row].detach(), pe[1][row].detach()


__all__ = ["RowTarget", "rotary_tables"]
