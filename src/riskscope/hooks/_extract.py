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


class CapturedTexts(dict):
    """``{point: (N, W) float32}`` from :func:`capture_texts`, plus what was cut to fit the context."""

    truncated: tuple[int, ...] = ()
    """Indices of the texts cut to the model's first ``context_length`` tokens (``truncate=True`` only)."""
    n_tokens: tuple[int, ...] = ()
    """Token count of each text before any cut."""


def iter_captures(lm: LoadedModel, ids: Sequence[Sequence[int]], rows: Sequence[int], points: Sequence[HookPoint],
                  reduce, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """Yield ``(row_indices, attention_mask, {point: tensor})`` per batch of ``rows`` (in the given order).

    Every selected row must have tokens and fit the model's context (cut long rows first, as
    :func:`check_token_ids` does with ``truncate=True``); a bad row fails before the first forward.
    """
    if batch_size < 1:
        raise RiskscopeError(f"batch_size must be >= 1, got {batch_size}")
    check_token_ids(lm, [ids[i] for i in rows], what="row", index=rows)
    pad_id = lm.tokenizer.pad_token_id
    for b in range(0, len(rows), batch_size):
        rows_b = np.asarray(rows[b:b + batch_size])
        input_ids, mask = pad_batch([ids[i] for i in rows_b], pad_id, "right", lm.device)
        with torch.inference_mode(), capture(lm, points, reduce, stop=True) as got:
            run_batch(lm, input_ids, mask)
        yield rows_b, mask, dict(got)


def capture_texts(lm: LoadedModel, texts: Sequence[str], points: Sequence[HookPoint], reduce="last",
                  batch_size: int = 32, truncate: bool = False) -> CapturedTexts:
    """``{point: (N, W) float32}`` (or (N, k, W) for explicit positions), rows in input order.

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
    for rows_b, _, got in iter_captures(lm, ids, order, points, reduce, batch_size):
        for p in points:
            x = got[p].float().cpu().numpy()
            if p not in out:
                out[p] = np.empty((len(ids), *x.shape[1:]), np.float32)
            out[p][rows_b] = x
    return out
