"""What the probes predict for each row, by target: one rule for the dataset check and the probe step."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import RiskscopeError


def targets(rows: Sequence[Mapping], target: str) -> np.ndarray:
    """What the probes predict for each row (dicts with ``label``, ``category``, ``severity``): 0/1 labels,
    category names, or the severity of risky rows (NaN elsewhere)."""
    if target == "binary":
        return np.array([r["label"] for r in rows], dtype=np.int64)
    if target == "category":
        cats = [r.get("category") for r in rows]
        if any(c is None for c in cats):
            raise RiskscopeError("--target category needs a category on every row of the dataset")
        return np.asarray(cats)
    sev = [r.get("severity") if r["label"] == 1 else None for r in rows]
    if all(s is None for s in sev):
        raise RiskscopeError("--target severity needs severities on the risky rows of the dataset")
    return np.array([np.nan if s is None else float(s) for s in sev])


__all__ = ["targets"]
