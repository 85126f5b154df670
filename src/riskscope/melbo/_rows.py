"""The target block, computed only where the objective looks.

The objective reads the target layer at a few positions (``last:2``: 2 tokens per
prompt). Every token's keys and values at the target layer matter (the selected
queries attend to them), but its query, attention output, MLP and residual sums
matter only at the selected rows. For a pre-norm rotary block (Llama, Mistral, Qwen2,
SmolLM, ...) that is 2 of ~40 tokens: the target block shrinks to its K/V
projections. The same operations are applied in the same order, so the result is
exact to float rounding; :class:`SteeredSlice` compares it with the block itself at
setup and uses the block whenever they differ (other families, Gemma's extra norms,
Qwen3's q/k norms, sliding windows, soft-capping...).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor

_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")


class RowTarget:
    """A pre-norm rotary decoder block split into 'K/V for every token' and 'the rest for some rows'."""

    def __init__(self, block: torch.nn.Module, cos_TH: Tensor, sin_TH: Tensor) -> None:
        self.ln1, self.attn = block.input_layernorm, block.self_attn
        self.ln2, self.mlp = block.post_attention_layernorm, block.mlp
        mod = sys.modules[type(self.attn).__module__]
        self.rotate_half = mod.rotate_half
        self.hd, self.scaling = int(self.attn.head_dim), float(self.attn.scaling)
        self.cos_TH, self.sin_TH = cos_TH, sin_TH  # rotary tables for absolute positions 0..T-1

    @staticmethod
    def applies(block: torch.nn.Module) -> bool:
        attn = getattr(block, "self_attn", None)
        if attn is None or not all(hasattr(block, p) for p in _PARTS) or not all(hasattr(attn, a) for a in _ATTN):
            return False
        return hasattr(sys.modules.get(type(attn).__module__), "rotate_half")

    def _rope(self, x_BHTd: Tensor, cos_BTd: Tensor, sin_BTd: Tensor) -> Tensor:
        cos, sin = cos_BTd.unsqueeze(1).to(x_BHTd.dtype), sin_BTd.unsqueeze(1).to(x_BHTd.dtype)
        return x_BHTd * cos + self.rotate_half(x_BHTd) * sin

    def kv(self, h_BTD: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Rotated keys and values (B, Hkv, T, hd) of tokens at absolute positions start..start+T-1."""
        B, T, _ = h_BTD.shape
        x = self.ln1(h_BTD)
        k = self.attn.k_proj(x).view(B, T, -1, self.hd).transpose(1, 2)
        v = self.attn.v_proj(x).view(B, T, -1, self.hd).transpose(1, 2)
        pos = slice(start, start + T)
        return self._rope(k, self.cos_TH[None, pos], self.sin_TH[None, pos]), v

    def rows(self, h_ND: Tensor, pos_N: Tensor, k_NHTd: Tensor, v_NHTd: Tensor) -> Tensor:
        """Block output at N rows: row n is the token at absolute position ``pos_N[n]`` whose own
        sequence's keys/values (positions 0..T-1, causal) are ``k_NHTd[n]``, ``v_NHTd[n]``."""
        N, T = h_ND.shape[0], k_NHTd.shape[2]
        x = self.ln1(h_ND)
        q = self.attn.q_proj(x).view(N, -1, 1, self.hd)                       # (N, H, 1, hd)
        q = self._rope(q, self.cos_TH[pos_N][:, None], self.sin_TH[pos_N][:, None])
        groups = q.shape[1] // k_NHTd.shape[1]
        k = k_NHTd.repeat_interleave(groups, dim=1) if groups > 1 else k_NHTd
        v = v_NHTd.repeat_interleave(groups, dim=1) if groups > 1 else v_NHTd
        mask = (torch.arange(T, device=h_ND.device)[None] <= pos_N[:, None])[:, None, None, :]  # (N, 1, 1, T)
        att = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, scale=self.scaling)
        h = h_ND + self.attn.o_proj(att.reshape(N, -1))
        return h + self.mlp(self.ln2(h))


def rotary_tables(kwargs: dict, lengths: list[int]) -> tuple[Tensor, Tensor] | None:
    """cos/sin (T, hd) for positions 0..T-1 from a recorded block call (the longest prompt's row)."""
    pe = kwargs.get("position_embeddings")
    if not isinstance(pe, (tuple, list)) or len(pe) != 2 or not all(torch.is_tensor(t) and t.ndim == 3 for t in pe):
        return None
    row = max(range(len(lengths)), key=lambda i: lengths[i]) if pe[0].shape[0] > 1 else 0
    return pe[0][row].detach(), pe[1][row].detach()


__all__ = ["RowTarget", "rotary_tables"]
