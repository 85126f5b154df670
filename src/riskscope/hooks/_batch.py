"""The batch being run, as hooks see it: its padding mask lives in a context variable.

A context variable (not a module global) keeps concurrent forwards apart: two
threads, or two asyncio tasks of a server, each see the mask of their own batch.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._points import Positions

_MASK: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar("riskscope_batch_mask", default=None)


@contextlib.contextmanager
def batch_mask(mask: Tensor | None) -> Iterator[None]:
    """Make ``mask`` ((B, T), 1 for real tokens) the mask that position-aware hooks read inside the block."""
    token = _MASK.set(mask)
    try:
        yield
    finally:
        _MASK.reset(token)


def current_mask() -> Tensor | None:
    """The padding mask of the batch being run in this context (None outside :func:`batch_mask`)."""
    return _MASK.get()


def position_index(mask: Tensor, positions: Positions) -> Tensor | None:
    """(B, k) absolute token indices for ``positions`` given a (B, T) mask; None = all tokens."""
    if positions is None:
        return None
    lengths = mask.sum(1)
    first = mask.float().argmax(1)  # first real token (0 for right padding)
    if positions == "last":
        return (first + lengths - 1)[:, None]
    rel = torch.as_tensor(list(positions), device=mask.device)
    if len(rel) == 0:
        raise RiskscopeError("positions must not be empty")
    idx = torch.where(rel[None, :] >= 0, rel[None, :], lengths[:, None] + rel[None, :])
    if bool(((idx < 0) | (idx >= lengths[:, None])).any()):
        raise RiskscopeError(f"positions {list(positions)} fall outside a text of {int(lengths.min())} tokens")
    return first[:, None] + idx


# --- running batches ----------------------------------------------------------------------------


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int, side: str = "right",
              device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pad token-id lists to (B, T) ``input_ids`` and ``attention_mask``."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        sl = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        input_ids[i, sl] = torch.as_tensor(row, dtype=torch.long)
        mask[i, sl] = 1
    return input_ids.to(device), mask.to(device)


def position_ids_for(mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so padding side never shifts them."""
    return (mask.long().cumsum(1) - 1).clamp_min(0)


def tokenize(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, exactly as the tokenizer makes them (no padding, no truncation)."""
    return [list(x) for x in lm.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


__all__ = ["batch_mask", "current_mask", "pad_batch", "position_ids_for", "position_index", "tokenize"]
