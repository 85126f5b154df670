"""Capture activations for many texts in memory: length-sorted batches, early-stopped forwards.

The store (``store.py``) writes the same batches to disk; use this for a few
hundred texts you want as arrays now (scoring, interventions). Every text is
checked first (:func:`~riskscope.hooks.check_texts`): none empty, none longer than
the model's context unless the caller asks to truncate.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._batch import pad_batch
from ._capture import capture, run_batch
from ._checks import check_texts, check_token_ids
from ._points import HookPoint
from ._readouts import Readouts, check_readouts, content_mask, span_mask


class CapturedTexts(dict):
    """``{point: (N, W) float32}`` from :func:`capture_texts`, plus what was cut to fit the context."""

    truncated: tuple[int, ...] = ()
    """Indices of the texts cut to the model's first ``context_length`` tokens (``truncate=True`` only)."""
    n_tokens: tuple[int, ...] = ()
    """Token count of each text before any cut."""


def iter_captures(lm: LoadedModel, ids: Sequence[Sequence[int]], rows: Sequence[int], points: Sequence[HookPoint],
                  reduce, batch_size: int, *, readouts: Sequence[str] | None = None,
                  twins: Sequence[int | None] | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """Yield ``(row_indices, attention_mask, {point: tensor})`` per batch of ``rows`` (in the given order).

    With ``readouts`` (names from :data:`~riskscope.hooks.READOUTS`) ``reduce`` is ignored and each
    point gives ``{readout: (B, W)}``, all from the same forward; ``twins[i]`` is the row index of row
    ``i``'s twin (None: no twin) for the ``span`` readout.

    Every selected row must have tokens and fit the model's context (cut long rows first, as
    :func:`check_token_ids` does with ``truncate=True``); a bad row fails before the first forward.
    """
    if batch_size < 1:
        raise RiskscopeError(f"batch_size must be >= 1, got {batch_size}")
    check_token_ids(lm, [ids[i] for i in rows], what="row", index=rows)
    if readouts is not None:
        readouts = check_readouts(readouts)
        special = set(getattr(lm.tokenizer, "all_special_ids", None) or ())
    pad_id = lm.tokenizer.pad_token_id
    for b in range(0, len(rows), batch_size):
        rows_b = np.asarray(rows[b:b + batch_size])
        batch = [ids[i] for i in rows_b]
        input_ids, mask = pad_batch(batch, pad_id, "right", lm.device)
        how = reduce
        if readouts is not None:
            width = input_ids.shape[1]
            span = None
            if "span" in readouts:
                tw = [None if twins is None or twins[i] is None else ids[twins[i]] for i in rows_b]
                span = span_mask(batch, tw, width)
            how = Readouts(readouts, content=content_mask(batch, special, width), span=span)
        with torch.inference_mode(), capture(lm, points, how, stop=True) as got:
            run_batch(lm, input_ids, mask)
        yield rows_b, mask, dict(got)


def capture_texts(lm: LoadedModel, texts: Sequence[str], points: Sequence[HookPoint], reduce="last",
                  batch_size: int = 32, truncate: bool = False, readout: str | None = None) -> CapturedTexts:
    """``{point: (N, W) float32}`` (or (N, k, W) for explicit positions), rows in input order.

    ``readout`` (a name from :data:`~riskscope.hooks.READOUTS`) replaces ``reduce``; texts have no
    twins here, so ``span`` is the mean over each text's content tokens.

    An empty or whitespace-only text, or one longer than the model's context, is a
    :class:`~riskscope.errors.RiskscopeError` naming its index, before any forward; with
    ``truncate=True`` long texts keep their first ``context_length`` tokens instead, and the
    result's ``truncated`` lists their indices.
    """
    checked = check_texts(lm, texts, truncate)
    if not checked.ids:
        raise RiskscopeError("no texts to capture: give at least one text")
    ids = checked.ids
    order = np.argsort([-len(x) for x in ids], kind="stable")
    points = [p.normalised(lm) for p in points]
    out = CapturedTexts()
    out.truncated, out.n_tokens = checked.truncated, checked.n_tokens
    names = None if readout is None else (readout,)
    for rows_b, _, got in iter_captures(lm, ids, order, points, reduce, batch_size, readouts=names):
        for p in points:
            x = (got[p] if readout is None else got[p][readout]).float().cpu().numpy()
            if p not in out:
                out[p] = np.empty((len(ids), *x.shape[1:]), np.float32)
            out[p][rows_b] = x
    return out
