"""Hook points and scoped operations on them.

A hook point is ``(hook, layer)`` with ``hook`` one of :data:`HOOKS`:

===============  ==========================================  =====================
hook             tensor                                       module / side
===============  ==========================================  =====================
``resid_pre``    residual stream entering the block           block input
``resid_post``   residual stream leaving the block            block output
``attn_out``     attention output (before any post-norm)      attention output[0]
``mlp_neurons``  MLP neurons (input of the down projection)   down-proj input
``mlp_out``      MLP output (before any post-norm)            MLP output
===============  ==========================================  =====================

Operations are frozen values (:class:`Set`, :class:`Add`, :class:`Clamp`,
:class:`Scale`, :class:`Ablate`) applied by :func:`intervene`, a context manager
whose hooks are removed in ``finally``. Activations are read with
:func:`capture`. Both are used through :func:`run_batch`, which pads by hand,
passes explicit ``position_ids`` (so left and right padding give the same
per-text values) and can stop the forward after the last layer it needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence, Union

import torch
from torch import Tensor

from .errors import RiskscopeError
from .models import LoadedModel

HOOKS = ("resid_pre", "resid_post", "attn_out", "mlp_neurons", "mlp_out")
HookName = Literal["resid_pre", "resid_post", "attn_out", "mlp_neurons", "mlp_out"]
# None = every token; "last" = last non-pad token; ints index the non-pad tokens (negative from the end).
Positions = Union[None, Literal["last"], Sequence[int]]


@dataclass(frozen=True, order=True)
class HookPoint:
    """One place in the model: ``HookPoint("mlp_neurons", 12)``; str is ``mlp_neurons.12``."""

    hook: str
    layer: int

    def __post_init__(self) -> None:
        if self.hook not in HOOKS:
            raise RiskscopeError(f"unknown hook {self.hook!r}; choose from {', '.join(HOOKS)}")

    def __str__(self) -> str:
        return f"{self.hook}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> "HookPoint":
        hook, _, layer = text.rpartition(".")
        return cls(hook, int(layer))

    def normalised(self, lm: LoadedModel) -> "HookPoint":
        return HookPoint(self.hook, lm.layout.layer_index(self.layer))

    def width(self, lm: LoadedModel) -> int:
        return lm.layout.d_mlp if self.hook == "mlp_neurons" else lm.layout.d_model


def _module(lm: LoadedModel, p: HookPoint) -> tuple[torch.nn.Module, str]:
    lay, i = lm.layout, lm.layout.layer_index(p.layer)
    return {
        "resid_pre": (lay.blocks[i], "pre"),
        "resid_post": (lay.blocks[i], "post"),
        "attn_out": (lay.attn[i], "post"),
        "mlp_neurons": (lay.mlp_down[i], "pre"),
        "mlp_out": (lay.mlp[i], "post"),
    }[p.hook]


# --- the batch being run: hooks read its mask to resolve "last" / indexed positions -------------


@dataclass
class _Batch:
    mask: Tensor | None = None  # (B, T) 1 for real tokens


_CURRENT: list[_Batch] = []


def _current_mask() -> Tensor | None:
    return _CURRENT[-1].mask if _CURRENT else None


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


def _select(x: Tensor, positions: Positions) -> tuple[Tensor, Tensor | None]:
    """A (B, T, 1) boolean of the positions an op touches (None = all)."""
    if positions is None:
        return x, None
    mask = _current_mask()
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


# --- operations ---------------------------------------------------------------------------------


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


# --- registering hooks (always scoped) ----------------------------------------------------------


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value, new):
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _register(lm: LoadedModel, point: HookPoint, fn, handles: list) -> None:
    """Register ``fn(x) -> x | None`` at ``point``; its handle goes into ``handles``."""
    module, side = _module(lm, point)
    if side == "pre":

        def pre(mod, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    else:

        def post(mod, args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        handles.append(module.register_forward_hook(post))


@contextlib.contextmanager
def _scoped() -> Iterator[list]:
    handles: list = []
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def intervene(lm: LoadedModel, ops: Sequence[Op]) -> Iterator[None]:
    """Apply ``ops`` to every forward inside the block; all hooks are removed on exit."""
    with _scoped() as handles:
        for op in ops:
            _register(lm, op.point.normalised(lm), op, handles)
        yield


class _Stop(Exception):
    """Raised by the stop hook once every requested activation is in hand."""


class Captured(dict):
    """``{HookPoint: tensor}`` filled by :func:`capture`; negative layers are looked up normalised."""

    n_layers: int = 0

    def __missing__(self, key):
        if isinstance(key, HookPoint) and key.layer < 0 and self.n_layers:
            return self[HookPoint(key.hook, self.n_layers + key.layer)]
        raise KeyError(key)


@contextlib.contextmanager
def capture(lm: LoadedModel, points: Sequence[HookPoint], reduce: str | Sequence[int] = "last",
            stop: bool = False) -> Iterator[Captured]:
    """Capture ``points`` during forwards in the block.

    ``reduce``: ``last`` (last non-pad token, (B, W)), ``mean`` (mean over non-pad tokens,
    (B, W)), ``all`` ((B, T, W), pads included, see the batch mask), or explicit token
    indices into the non-pad tokens ((B, k, W)). With ``stop=True`` the forward is cut
    after the deepest point (use through :func:`run_batch`, which catches the stop).
    """
    out = Captured()
    out.n_layers = lm.n_layers
    points = sorted({p.normalised(lm) for p in points}, key=lambda p: (p.layer, HOOKS.index(p.hook)))
    with _scoped() as handles:
        for p in points:

            def grab(x, p=p):
                out[p] = _reduce(x.detach(), _current_mask(), reduce)
                return None

            _register(lm, p, grab, handles)
        if stop and points:
            deepest = max(p.layer for p in points)
            block = lm.layout.blocks[deepest]

            def halt(mod, args, output):
                raise _Stop

            handles.append(block.register_forward_hook(halt))
        yield out


def _reduce(x: Tensor, mask: Tensor | None, how) -> Tensor:
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    mask = mask.to(x.device)
    if how == "all":
        return x
    if how == "mean":
        keep = mask.bool()[..., None]
        return torch.where(keep, x, 0).sum(1) / keep.sum(1).clamp_min(1)
    idx = position_index(mask, how)
    picked = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
    return picked[:, 0] if how == "last" else picked


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


def run_batch(lm: LoadedModel, input_ids: Tensor, attention_mask: Tensor, **kwargs):
    """Forward one padded batch with the mask visible to hooks; returns the model output,
    or ``None`` when a :func:`capture` with ``stop=True`` cut the forward short."""
    _CURRENT.append(_Batch(mask=attention_mask))
    try:
        return lm.model(input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids_for(attention_mask), use_cache=False, **kwargs)
    except _Stop:
        return None
    finally:
        _CURRENT.pop()


def tokenize(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, exactly as the tokenizer makes them (no padding, no truncation)."""
    return [list(x) for x in lm.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def run_texts(lm: LoadedModel, texts: Sequence[str], side: str = "right", **kwargs):
    """Tokenise, pad and run ``texts`` as one batch; returns (output, attention_mask)."""
    ids = tokenize(lm, texts)
    input_ids, mask = pad_batch(ids, lm.tokenizer.pad_token_id, side, lm.device)
    return run_batch(lm, input_ids, mask, **kwargs), mask


__all__ = [
    "HOOKS", "Ablate", "Add", "Captured", "Clamp", "HookPoint", "Op", "Positions", "Scale", "Set",
    "capture", "intervene", "pad_batch", "position_ids_for", "position_index", "run_batch", "run_texts",
    "tokenize",
]
