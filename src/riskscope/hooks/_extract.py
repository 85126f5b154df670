"""Capture activations for many texts in memory: length-sorted batches, early-stopped forwards.

The store (``store.py``) writes the same batches to disk; use this for a few
hundred texts you want as arrays now (scoring, interventions).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..models import LoadedModel
from ._batch import pad_batch, tokenize
from ._capture import capture, run_batch
from ._points import HookPoint


def iter_captures(lm: LoadedModel, ids: Sequence[Sequence[int]], rows: Sequence[int], points: Sequence[HookPoint],
                  reduce, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """Yield ``(row_indices, attention_mask, {point: tensor})`` per batch of ``rows`` (in the given order)."""
    pad_id = lm.tokenizer.pad_token_id
    for b in range(0, len(rows), batch_size):
        rows_b = np.asarray(rows[b:b + batch_size])
        input_ids, mask = pad_batch([ids[i] for i in rows_b], pad_id, "right", lm.device)
        with torch.inference_mode(), capture(lm, points, reduce, stop=True) as got:
            run_batch(lm, input_ids, mask)
        yield rows_b, mask, dict(got)


def capture_texts(lm: LoadedModel, texts: Sequence[str], points: Sequence[HookPoint], reduce="last",
                  batch_size: int = 32) -> dict[HookPoint, np.ndarray]:
    """``{point: (N, W) float32}`` (or (N, k, W) for explicit positions), rows in input order."""
    ids = tokenize(lm, texts)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    points = [p.normalised(lm) for p in points]
    out: dict[HookPoint, np.ndarray] = {}
    for rows_b, _, got in iter_captures(lm, ids, order, points, reduce, batch_size):
        for p in points:
            x = got[p].float().cpu().numpy()
            if p not in out:
                out[p] = np.empty((len(ids), *x.shape[1:]), np.float32)
            out[p][rows_b] = x
    return out
