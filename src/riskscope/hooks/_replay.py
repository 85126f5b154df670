"""Block replay: what every block received in one forward, re-run on edited hidden states.

Everything a block needs besides its hidden states (attention masks, rotary tables,
position ids, a KV cache: whatever the family passes) is the same in an edited run as in
the clean one. :meth:`BlockReplay.recording` records, during one forward, the exact
``(args, kwargs)`` each block from ``start`` to ``stop`` is called with (and can end the
forward early once nothing more is needed); :meth:`BlockReplay.run` then calls blocks
``L..T`` on edited hidden states, with :mod:`riskscope.hooks` operations active and the
recorded batch's mask visible to position-aware hooks, and :meth:`BlockReplay.logits`
applies the final norm, the unembedding and the family's logit soft cap at chosen
positions. It relies only on each block being called as ``block(hidden_states, ...)``.

>>> replay = BlockReplay.record(lm, input_ids, mask)                       # doctest: +SKIP
>>> h = replay.run(replay.hidden_in(4) + delta, 4)  # blocks 4.. on an edit  # doctest: +SKIP
>>> next_token_logits = replay.logits(h, -1)  # (B, V)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._batch import batch_mask
from ._capture import StopForward, run_batch
from ._ops import Op, intervene

Halt = Literal["before", "after"]


@dataclass(frozen=True, eq=False)
class BlockCall:
    """The arguments one block was called with (tensor positional arguments detached)."""

    args: tuple
    """Positional arguments (the first, when present, is the hidden states)."""
    kwargs: dict
    """Keyword arguments (``hidden_states`` among them when ``args`` is empty)."""

    @property
    def hidden(self) -> Tensor:
        """The hidden states (B, T, D) the block received."""
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def __call__(self, block: torch.nn.Module, hidden: Tensor, swap: dict[int, Any] | None = None) -> Tensor:
        """Call ``block`` on ``hidden`` with the recorded other arguments (objects in ``swap``, by id, replaced)."""
        args, kwargs = self.args, self.kwargs
        if swap:
            args = tuple(swap.get(id(a), a) for a in args)
            kwargs = {k: swap.get(id(v), v) for k, v in kwargs.items()}
        out = block(hidden, *args[1:], **kwargs) if args else block(**{**kwargs, "hidden_states": hidden})
        return out[0] if isinstance(out, tuple) else out


class BlockReplay:
    """Recorded block calls of one forward of ``lm``, re-runnable on edited hidden states.

    Args:
        lm: the model.
        mask: the batch's padding mask (B, T), made visible to hooks during :meth:`run`
            (None: hooks see no mask).
    """

    def __init__(self, lm: LoadedModel, mask: Tensor | None = None) -> None:
        self.lm, self.mask = lm, mask
        self.calls: dict[int, BlockCall] = {}

    @property
    def layers(self) -> list[int]:
        """The recorded layers, in order."""
        return sorted(self.calls)

    def complete(self, start: int = 0, stop: int | None = None) -> bool:
        """Whether every block ``start..stop`` (default: to the last) was recorded."""
        stop = self.lm.n_layers - 1 if stop is None else stop
        return all(i in self.calls for i in range(start, stop + 1))

    def require(self, start: int = 0, stop: int | None = None) -> None:
        """Raise a clear error unless every block ``start..stop`` was recorded."""
        stop = self.lm.n_layers - 1 if stop is None else stop
        missing = [i for i in range(start, stop + 1) if i not in self.calls]
        if missing:
            raise RiskscopeError(f"blocks {missing} of {self.lm.model_id} were never called; the layout's 'blocks' "
                                 f"path may be wrong (override it with --module-paths blocks=<dotted.path>)")

    def hidden_in(self, layer: int) -> Tensor:
        """The hidden states block ``layer`` received in the recorded forward."""
        return self.calls[self.lm.layout.layer_index(layer)].hidden

    # --- recording ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def recording(cls, lm: LoadedModel, start: int = 0, stop: int | None = None, *, halt: Halt | None = None,
                  mask: Tensor | None = None) -> Iterator["BlockReplay"]:
        """Record the calls of blocks ``start..stop`` (default: to the last) during forwards in the block.

        ``halt="before"`` ends the forward once block ``stop``'s input is recorded (the block itself
        does not run); ``halt="after"`` once block ``stop`` has run (e.g. to fill a KV cache up to it).
        The forward ends by :class:`~riskscope.hooks.StopForward`, which ends the ``with`` block
        quietly (:func:`~riskscope.hooks.run_batch` catches it too). Hooks are removed on exit.
        """
        lay = lm.layout
        start, stop = lay.layer_index(start), lay.layer_index(lay.n_layers - 1 if stop is None else stop)
        rec = cls(lm, mask)
        handles = []

        def make(layer: int):
            def pre(mod, args, kwargs):
                rec.calls[layer] = BlockCall(tuple(a.detach() if torch.is_tensor(a) else a for a in args),
                                             dict(kwargs))
                if halt == "before" and layer == stop:
                    raise StopForward
            return pre

        def after(mod, args, output):
            raise StopForward

        try:
            for layer in range(start, stop + 1):
                handles.append(lay.blocks[layer].register_forward_pre_hook(make(layer), with_kwargs=True))
            if halt == "after":
                handles.append(lay.blocks[stop].register_forward_hook(after))
            try:
                yield rec
            except StopForward:
                pass
        finally:
            for h in handles:
                h.remove()

    @classmethod
    def record(cls, lm: LoadedModel, input_ids: Tensor, attention_mask: Tensor, start: int = 0,
               stop: int | None = None, *, halt: Halt | None = "before", **forward_kwargs) -> "BlockReplay":
        """Run one padded batch (:func:`~riskscope.hooks.run_batch`, no gradients) and record blocks
        ``start..stop``; by default the forward ends at block ``stop``'s input. The mask is kept for :meth:`run`."""
        with torch.no_grad(), cls.recording(lm, start, stop, halt=halt, mask=attention_mask) as rec:
            run_batch(lm, input_ids, attention_mask, **forward_kwargs)
        rec.require(lm.layout.layer_index(start), lm.layout.layer_index(lm.n_layers - 1 if stop is None else stop))
        return rec

    # --- replaying ---------------------------------------------------------------------------------

    def run(self, hidden: Tensor, start: int, stop: int | None = None, *, ops: Sequence[Op] = (),
            replace: Sequence[tuple[Any, Any]] = ()) -> Tensor:
        """Output of block ``stop`` (default: the last recorded) after calling blocks ``start..stop`` on
        ``hidden`` (what block ``start`` receives instead of its recorded input); ``hidden`` itself when
        ``stop < start``. ``ops`` are applied (scoped; registered after any hook the caller already
        holds, so a capture entered before this call sees the values before the ops; enter
        :func:`~riskscope.hooks.intervene` first to read edited values) and the recorded mask is visible to hooks;
        ``replace`` lists ``(recorded object, object to use instead)`` pairs, matched by identity (a
        fresh KV cache for the recorded one)."""
        blocks = self.lm.layout.blocks
        stop = max(self.calls) if stop is None else stop
        swap = {id(old): new for old, new in replace} or None
        with contextlib.ExitStack() as stack:
            if self.mask is not None:
                stack.enter_context(batch_mask(self.mask))
            if ops:
                stack.enter_context(intervene(self.lm, ops))
            for layer in range(start, stop + 1):
                hidden = self.calls[layer](blocks[layer], hidden, swap)
        return hidden

    def logits(self, hidden: Tensor, positions: int | slice | Sequence[int] | None = None) -> Tensor:
        """Logits of last-block outputs ``hidden`` (B, T, D) at ``positions`` (an int gives (B, V); None:
        every position): the final norm, the unembedding and the family's soft cap, nothing else."""
        h = hidden if positions is None else hidden[:, positions if isinstance(positions, (int, slice))
                                                    else list(positions)]
        return self.lm.layout.logits(h)


__all__ = ["BlockCall", "BlockReplay"]
