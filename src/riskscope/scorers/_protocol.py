"""What a scorer is: texts in, one score and one decision per text out.

Every scorer (the probe, the perplexity filter) answers :meth:`Scorer.score` with a
:class:`ScoreBatch`: scores where higher means more suspicious, the threshold each score is
compared with, the decision, and JSON-ready details per text. The service runs any list of
scorers side by side on the same micro-batch.

>>> b = ScoreBatch("demo", np.array([0.2, 0.9]), np.array([0.5, 0.5]))
>>> b.flagged.tolist(), len(b)
([False, True], 2)
>>> b.row(1)["flagged"]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .._io import json_float
from ..errors import RiskscopeError


@dataclass(frozen=True, eq=False)
class ScoreBatch:
    """One scorer's answer for a list of texts."""

    scorer: str
    """Name of the scorer, e.g. ``probe`` or ``perplexity``."""
    scores: np.ndarray = field(repr=False)
    """(N,) score per text; higher means more suspicious."""
    thresholds: np.ndarray = field(repr=False)
    """(N,) the threshold each score is compared with (``score >= threshold`` flags the text)."""
    details: tuple[dict, ...] = ()
    """Per text, extra JSON-ready facts (empty, or one dict per text)."""

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        t = np.broadcast_to(np.asarray(self.thresholds, dtype=np.float64), s.shape).copy()
        object.__setattr__(self, "scores", s)
        object.__setattr__(self, "thresholds", t)
        object.__setattr__(self, "details", tuple(self.details))
        if self.details and len(self.details) != len(s):
            raise RiskscopeError(f"scorer {self.scorer!r} gave {len(self.details)} details for {len(s)} texts")

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def flagged(self) -> np.ndarray:
        """(N,) bool: the score reaches its threshold."""
        return self.scores >= self.thresholds

    def row(self, i: int) -> dict:
        """Text ``i`` as a JSON-ready dict: score, threshold, flagged, plus its details."""
        out = {"score": json_float(self.scores[i], None), "threshold": json_float(self.thresholds[i], None),
               "flagged": bool(self.flagged[i])}
        if self.details:
            out.update(self.details[i])
        return out


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores texts: ``score(texts) -> ScoreBatch`` plus a JSON description of itself."""

    name: str

    def score(self, texts: Sequence[str]) -> ScoreBatch:
        """Score ``texts`` (one :class:`ScoreBatch` row per text, in order)."""
        ...

    def describe(self) -> dict:
        """What the scorer is (model, weights, version), JSON-ready."""
        ...


__all__ = ["ScoreBatch", "Scorer"]
