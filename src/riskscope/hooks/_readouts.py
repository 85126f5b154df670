"""Readouts: several token reductions of one activation, from the same forward.

A readout turns a text's (T, W) activations into one (W,) row:

* ``last`` - the last real (non-pad) token;
* ``mean`` - the mean over the content tokens: not padding, not special tokens (BOS, EOS);
* ``max`` - the element-wise maximum over the content tokens;
* ``span`` - the mean over the content tokens where a text differs from its twin (the matched text
  of its pair: tokens outside the longest common prefix and suffix of the two token lists). A text
  with no twin, or identical to it, uses all its content tokens, so for a single text ``span``
  equals ``mean`` (this is what scoring a new text does).

A row whose content mask is empty (a text made only of special tokens) falls back to its real tokens.

>>> import torch
>>> x = torch.arange(6.0).reshape(1, 3, 2)
>>> r = Readouts(("last", "mean", "max"), content=torch.tensor([[False, True, True]]))
>>> {k: v.tolist() for k, v in reduce_readouts(x, torch.ones(1, 3), r).items()}
{'last': [[4.0, 5.0]], 'mean': [[3.0, 4.0]], 'max': [[4.0, 5.0]]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..errors import RiskscopeError

READOUTS: tuple[str, ...] = ("last", "mean", "max", "span")
"""Every readout riskscope computes (see the module docstring)."""


def check_readouts(names: Sequence[str], what: str = "readouts") -> tuple[str, ...]:
    """``names`` as a tuple of known, distinct readouts (:class:`RiskscopeError` otherwise)."""
    names = tuple(names)
    bad = [n for n in names if n not in READOUTS]
    if bad:
        raise RiskscopeError(f"{what}: unknown readout {bad[0]!r}; choose from {', '.join(READOUTS)}")
    if len(set(names)) != len(names) or not names:
        raise RiskscopeError(f"{what}: give distinct readouts, at least one (got {list(names)})")
    return names


@dataclass(frozen=True, eq=False)
class Readouts:
    """Which readouts to take of a batch, with the batch's token masks (a capture ``reduce``)."""

    names: tuple[str, ...]
    """Readouts to compute, from :data:`READOUTS`."""
    content: Tensor | None = None
    """(B, T) bool: real tokens that are not special tokens (None: every real token)."""
    span: Tensor | None = None
    """(B, T) bool: tokens where each text differs from its twin (None: the content tokens)."""


def _masked_mean(x: Tensor, keep: Tensor) -> Tensor:
    k = keep[..., None]
    return torch.where(k, x, 0).sum(1) / k.sum(1).clamp_min(1)


def reduce_readouts(x: Tensor, mask: Tensor, how: Readouts) -> dict[str, Tensor]:
    """``{readout: (B, W)}`` of activations ``x`` (B, T, W) under padding ``mask`` (B, T)."""
    real = mask.to(x.device).bool()
    content = real if how.content is None else how.content.to(x.device) & real
    content = torch.where(content.any(1, keepdim=True), content, real)
    out: dict[str, Tensor] = {}
    for name in how.names:
        if name == "last":
            lengths = real.sum(1)
            first = real.float().argmax(1)
            out[name] = x[torch.arange(len(x), device=x.device), first + lengths - 1]
        elif name == "mean":
            out[name] = _masked_mean(x, content)
        elif name == "max":
            out[name] = torch.where(content[..., None], x, torch.finfo(x.dtype).min).amax(1)
        elif name == "span":
            span = content if how.span is None else how.span.to(x.device) & content
            span = torch.where(span.any(1, keepdim=True), span, content)
            out[name] = _masked_mean(x, span)
        else:
            raise RiskscopeError(f"unknown readout {name!r}; choose from {', '.join(READOUTS)}")
    return out


def content_mask(ids: Sequence[Sequence[int]], special: set[int], width: int) -> Tensor:
    """(B, width) bool: positions of each right-padded row that hold a non-special token."""
    out = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, row in enumerate(ids):
        out[i, :len(row)] = torch.as_tensor([t not in special for t in row], dtype=torch.bool)
    return out


def differing_tokens(a: Sequence[int], b: Sequence[int] | None) -> list[bool]:
    """Per token of ``a``: whether it lies outside the longest common prefix and suffix of ``a`` and ``b``
    (all True when there is no twin ``b``).

    >>> differing_tokens([1, 2, 3, 4], [1, 9, 4])
    [False, True, True, False]
    """
    if b is None:
        return [True] * len(a)
    n = min(len(a), len(b))
    pre = 0
    while pre < n and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and a[len(a) - 1 - suf] == b[len(b) - 1 - suf]:
        suf += 1
    return [pre <= i < len(a) - suf for i in range(len(a))]


def span_mask(ids: Sequence[Sequence[int]], twins: Sequence[Sequence[int] | None], width: int) -> Tensor:
    """(B, width) bool: the tokens of each right-padded row that differ from its twin (see :func:`differing_tokens`)."""
    out = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, (row, twin) in enumerate(zip(ids, twins)):
        out[i, :len(row)] = torch.as_tensor(differing_tokens(row, twin), dtype=torch.bool)
    return out


__all__ = ["READOUTS", "Readouts", "check_readouts", "content_mask", "differing_tokens", "reduce_readouts",
           "span_mask"]
