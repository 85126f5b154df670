"""The result of one layers(A) x layers(B) comparison: values, permutation null, p-values."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._io import json_float


@dataclass(frozen=True)
class SimilarityMatrix:
    """A layers(A) x layers(B) similarity matrix with its permutation null, cell by cell."""

    metric: str
    """``cka``, ``svcca`` or ``rsa``."""
    layers_a: list[str]
    """Row names (hook points of model A)."""
    layers_b: list[str]
    """Column names (hook points of model B)."""
    values_AB: np.ndarray
    """(len(layers_a), len(layers_b)) similarities."""
    null_mean_AB: np.ndarray | None = None
    """Mean of the similarity with B's rows shuffled (the shuffled-rows baseline), per cell."""
    null_q95_AB: np.ndarray | None = None
    """95th percentile of the shuffled-rows null, per cell."""
    p_AB: np.ndarray | None = None
    """One-sided permutation p-value per cell: (1 + #{null >= value}) / (1 + n_perm)."""
    n_perm: int = 0
    """Shuffles behind the null (0: no null)."""
    n_rows: int = 0
    """Texts (rows) compared."""
    info: dict = field(default_factory=dict)
    """How it was computed (block size, kept dimensions, ...)."""

    def to_dict(self) -> dict:
        def grid(x):
            return None if x is None else [[json_float(v) for v in row] for row in np.asarray(x, dtype=float)]

        return {"metric": self.metric, "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
                "values": grid(self.values_AB), "null_mean": grid(self.null_mean_AB),
                "null_q95": grid(self.null_q95_AB), "p": grid(self.p_AB), "n_perm": self.n_perm,
                "n_rows": self.n_rows, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "SimilarityMatrix":
        def arr(x):
            return None if x is None else np.array([[np.nan if v is None else v for v in row] for row in x], float)

        return cls(metric=d["metric"], layers_a=list(d["layers_a"]), layers_b=list(d["layers_b"]),
                   values_AB=arr(d["values"]), null_mean_AB=arr(d.get("null_mean")),
                   null_q95_AB=arr(d.get("null_q95")), p_AB=arr(d.get("p")), n_perm=int(d.get("n_perm", 0)),
                   n_rows=int(d.get("n_rows", 0)), info=dict(d.get("info") or {}))


def null_summary(values_AB: np.ndarray, null_PAB: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 95th percentile and one-sided p-value of ``values_AB`` against the null stack (P, A, B)."""
    p = (1 + (null_PAB >= values_AB[None] - 1e-12).sum(0)) / (1 + null_PAB.shape[0])
    return null_PAB.mean(0), np.quantile(null_PAB, 0.95, axis=0), p


__all__ = ["SimilarityMatrix", "null_summary"]
