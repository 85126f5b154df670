"""The live parts of a pre-norm rotary block (Llama-style), resolved from a :class:`RotaryBlock`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ModelError
from ._spec import RotaryBlock


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` over the last dimension: the rotation of Llama-style rotary embeddings."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass(frozen=True, eq=False)
class RotaryParts:
    """One block's modules and attention constants (see :class:`~riskscope.models.adapters.RotaryBlock`)."""

    norm_attn: nn.Module
    """Norm before attention."""
    norm_mlp: nn.Module
    """Norm before the MLP."""
    mlp: nn.Module
    """The MLP."""
    q: nn.Module
    """Query projection."""
    k: nn.Module
    """Key projection."""
    v: nn.Module
    """Value projection."""
    o: nn.Module
    """Output projection."""
    q_norm: nn.Module | None
    """Per-head query norm before the rotation (None: none)."""
    k_norm: nn.Module | None
    """Per-head key norm before the rotation (None: none)."""
    head_dim: int
    """Width of one head."""
    scaling: float
    """Attention-score scale."""
    rotary_kwarg: str
    """Keyword argument of the block call holding ``(cos, sin)``."""

    def rope(self, x_BHTd: Tensor, cos_BTd: Tensor, sin_BTd: Tensor) -> Tensor:
        """Rotate per-head queries or keys (B, H, T, hd) by tables (B, T, hd)."""
        cos, sin = cos_BTd.unsqueeze(1).to(x_BHTd.dtype), sin_BTd.unsqueeze(1).to(x_BHTd.dtype)
        return x_BHTd * cos + rotate_half(x_BHTd) * sin

    def tables(self, kwargs: dict) -> tuple[Tensor, Tensor] | None:
        """The ``(cos, sin)`` tables, each (B, T, hd), of a recorded block call (None when absent)."""
        pe = kwargs.get(self.rotary_kwarg)
        if not isinstance(pe, (tuple, list)) or len(pe) != 2 or not all(torch.is_tensor(t) and t.ndim == 3 for t in pe):
            return None
        return pe[0], pe[1]


def _part(root: nn.Module, path: str, where: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ModelError(f"{where} has no {path!r} ({type(root).__name__}); it is not a Llama-style rotary block") \
            from None


def _optional(root: nn.Module, path: str | None) -> nn.Module | None:
    if not path:
        return None
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def rotary_parts(spec: RotaryBlock, block: nn.Module, attn: nn.Module, mlp: nn.Module) -> RotaryParts:
    """Resolve ``spec`` on one block (``attn`` and ``mlp`` are its attention and MLP), or raise :class:`ModelError`."""
    name = type(block).__name__
    try:
        head_dim, scaling = int(getattr(attn, spec.head_dim)), float(getattr(attn, spec.scaling))
    except AttributeError as e:
        raise ModelError(f"attention of {name} has no attribute {e.name!r}; it is not a Llama-style rotary block") \
            from None
    return RotaryParts(
        norm_attn=_part(block, spec.norm_attn, name), norm_mlp=_part(block, spec.norm_mlp, name), mlp=mlp,
        q=_part(attn, spec.q, name), k=_part(attn, spec.k, name), v=_part(attn, spec.v, name),
        o=_part(attn, spec.o, name), q_norm=_optional(attn, spec.q_norm), k_norm=_optional(attn, spec.k_norm),
        head_dim=head_dim, scaling=scaling, rotary_kwarg=spec.rotary_kwarg,
    )


__all__ = ["RotaryParts", "rotary_parts", "rotate_half"]
