"""Operations on activations as frozen values, applied by the scoped :func:`intervene`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._batch import current_mask, position_index
from ._capture import on_activation
from ._points import HookPoint, Positions


def _select(x: Tensor, positions: Positions) -> tuple[Tensor, Tensor | None]:
    """A (B, T, 1) boolean of the positions an op touches (None = all)."""
    if positions is None:
        return x, None
    mask = current_mask()
    if mask is None:
        if positions == "last":
            idx = torch.full((x.shape[0], 1), x.shape[1] - 1, device=x.device)
        else:
            rel = torch.as_tensor(list(positions), device=x.device)
            idx = (rel % x.shape[1])[None, :].expand(x.shape[0], -1)
    else:
        idx = position_index(mask.to(x.device), positions)
    sel = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    sel.scatter_(1, idx, True)
    return x, sel[..., None]


def _vec(v, x: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class _Op:
    point: HookPoint
    positions: Positions = field(default=None, kw_only=True)

    def edit(self, x: Tensor) -> Tensor:  # (B, T, W) -> (B, T, W)
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        x, sel = _select(x, self.positions)
        new = self.edit(x)
        return new if sel is None else torch.where(sel, new, x)


@dataclass(frozen=True)
class Set(_Op):
    """Replace the activation with ``value`` (broadcast to (B, T, W)): activation patching."""

    value: Tensor = None

    def edit(self, x):
        return _vec(self.value, x).expand_as(x)


@dataclass(frozen=True)
class Add(_Op):
    """Add ``scale * vector`` (width W): steering."""

    vector: Tensor = None
    scale: float = 1.0

    def edit(self, x):
        return x + self.scale * _vec(self.vector, x)


@dataclass(frozen=True)
class Clamp(_Op):
    """Set units ``indices`` (e.g. neurons) to ``value`` (a float or one value per index)."""

    indices: tuple[int, ...] = ()
    value: float | Tensor = 0.0

    def edit(self, x):
        idx = _indices(self.indices, x)
        out = x.clone()
        out[..., idx] = _vec(self.value, x)
        return out


@dataclass(frozen=True)
class Scale(_Op):
    """Multiply units ``indices`` by ``factor``."""

    indices: tuple[int, ...] = ()
    factor: float = 1.0

    def edit(self, x):
        idx = _indices(self.indices, x)
        out = x.clone()
        out[..., idx] = x[..., idx] * self.factor
        return out


@dataclass(frozen=True)
class Ablate(_Op):
    """Zero-ablate (``mean=None``) or mean-ablate units ``indices`` (empty = all units)."""

    indices: tuple[int, ...] = ()
    mean: Tensor | None = None

    def edit(self, x):
        idx = _indices(self.indices, x) if self.indices else slice(None)
        out = x.clone()
        out[..., idx] = 0.0 if self.mean is None else _vec(self.mean, x)[idx]
        return out


Op = Union[Set, Add, Clamp, Scale, Ablate]


def _indices(indices: Sequence[int], x: Tensor) -> Tensor:
    idx = torch.as_tensor(list(indices), dtype=torch.long, device=x.device)
    width = x.shape[-1]
    if len(idx) and bool(((idx < -width) | (idx >= width)).any()):
        raise RiskscopeError(f"unit index out of range: {list(indices)} for a width of {width}")
    return idx


@contextlib.contextmanager
def intervene(lm: LoadedModel, ops: Sequence[Op]) -> Iterator[None]:
    """Apply ``ops`` to every forward inside the block; all hooks are removed on exit."""
    with contextlib.ExitStack() as stack:
        for op in ops:
            stack.enter_context(on_activation(lm, op.point.normalised(lm), op))
        yield


__all__ = ["Ablate", "Add", "Clamp", "Op", "Scale", "Set", "intervene"]
