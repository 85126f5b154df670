"""Reading activations: scoped hooks, :func:`capture`, and running one padded batch."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._batch import batch_mask, current_mask, pad_batch, position_ids_for, position_index
from ._checks import check_texts
from ._points import HOOKS, HookPoint, module_for
from ._readouts import Readouts, reduce_readouts


class StopForward(Exception):
    """Raise from a hook to end the forward early; :func:`run_batch` catches it and returns None."""


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value, new):
    return (new, *value[1:]) if isinstance(value, tuple) else new


@contextlib.contextmanager
def on_activation(lm: LoadedModel, point: HookPoint, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn(x)`` on the activation at ``point`` in every forward inside the block.

    ``fn`` returns a replacement tensor or None (read only); it may raise :class:`StopForward`.
    The hook is removed on exit, also on error.
    """
    module, side = module_for(lm, point.normalised(lm))
    if side == "pre":

        def pre(mod, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(mod, args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def stop_after(lm: LoadedModel, layer: int) -> Iterator[None]:
    """End every forward inside the block once block ``layer`` has run (see :class:`StopForward`)."""

    def halt(mod, args, output):
        raise StopForward

    handle = lm.layout.blocks[lm.layout.layer_index(layer)].register_forward_hook(halt)
    try:
        yield
    finally:
        handle.remove()


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
    indices into the non-pad tokens ((B, k, W)); a :class:`~riskscope.hooks.Readouts` gives
    ``{readout: (B, W)}`` per point. With ``stop=True`` the forward is cut
    after the deepest point (use through :func:`run_batch`, which catches the stop).
    """
    out = Captured()
    out.n_layers = lm.n_layers
    points = sorted({p.normalised(lm) for p in points}, key=lambda p: (p.layer, HOOKS.index(p.hook)))
    with contextlib.ExitStack() as stack:
        for p in points:

            def grab(x, p=p):
                out[p] = _reduce(x.detach(), current_mask(), reduce)
                return None

            stack.enter_context(on_activation(lm, p, grab))
        if stop and points:
            stack.enter_context(stop_after(lm, max(p.layer for p in points)))
        yield out


def _reduce(x: Tensor, mask: Tensor | None, how) -> Tensor:
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    mask = mask.to(x.device)
    if isinstance(how, Readouts):
        return reduce_readouts(x, mask, how)
    if how == "all":
        return x
    if how == "mean":
        keep = mask.bool()[..., None]
        return torch.where(keep, x, 0).sum(1) / keep.sum(1).clamp_min(1)
    idx = position_index(mask, how)
    picked = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
    return picked[:, 0] if how == "last" else picked




def run_batch(lm: LoadedModel, input_ids: Tensor, attention_mask: Tensor, **kwargs):
    """Forward one padded batch with the mask visible to hooks; returns the model output,
    or ``None`` when a :func:`capture` with ``stop=True`` cut the forward short."""
    with batch_mask(attention_mask):
        try:
            return lm.model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_for(attention_mask), use_cache=False, **kwargs)
        except StopForward:
            return None


def run_texts(lm: LoadedModel, texts: Sequence[str], side: str = "right", **kwargs):
    """Tokenise, pad and run ``texts`` as one batch; returns (output, attention_mask).
    Texts are checked first (:func:`~riskscope.hooks.check_texts`: none empty, none too long)."""
    ids = check_texts(lm, texts).ids
    if not ids:
        raise RiskscopeError("no texts to run: give at least one text")
    input_ids, mask = pad_batch(ids, lm.tokenizer.pad_token_id, side, lm.device)
    return run_batch(lm, input_ids, mask, **kwargs), mask




__all__ = ["Captured", "StopForward", "capture", "on_activation", "run_batch", "run_texts", "stop_after"]
