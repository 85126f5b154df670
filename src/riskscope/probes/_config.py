"""Configuration of a per-layer probing run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import RiskscopeError

Target = Literal["binary", "category", "severity"]

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
"""Default grid of sklearn-style ``C`` on standardised features.

With the sum-form objective ``C * sum(loss) + ||w||^2 / 2`` and about 600
training rows, these span an effective per-row ridge strength
``1 / (C n)`` from about 1.7 (nearly the mean direction only) to 0.0017
(nearly unregularised once ``D`` approaches ``n``). For ``severity``
(ridge regression) the same grid is used as ``alpha = 1 / C``.
"""


class ProbeError(RiskscopeError, ValueError):
    """Bad input to a probe: one class only, too few pairs for the folds, mismatched lengths."""


@dataclass(frozen=True)
class ProbeConfig:
    """How :func:`evaluate_layers` fits and scores probes.

    Example:
        >>> ProbeConfig(folds=3).inner_folds
        4
    """

    folds: int = 5
    """Outer grouped cross-validation folds (pairs never straddle a fold)."""
    inner_folds: int = 4
    """Inner grouped folds inside each outer training fold, used to choose ``C``."""
    Cs: tuple[float, ...] = DEFAULT_CS
    """Grid of inverse regularisation strengths (sklearn ``C``; ridge ``alpha = 1 / C``)."""
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    """Weight penalty; ``l2`` uses batched Newton-CG, the others FISTA."""
    l1_ratio: float = 0.5
    """Share of L1 in the ``elasticnet`` penalty (sklearn's ``l1_ratio``)."""
    target: Target = "binary"
    """``binary`` risky/benign, ``category`` multinomial, ``severity`` ridge on risky rows."""
    seed: int = 0
    """Seed for fold assignment, label shuffling and bootstrap resampling."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of pairs for confidence intervals (0 disables them)."""
    ci_level: float = 0.95
    """Coverage of the percentile bootstrap confidence interval."""
    shuffled_control: bool = True
    """Also run the whole pipeline on shuffled labels with the same folds."""
    standardize: bool = True
    """Standardise features with each training fold's mean and standard deviation."""
    tol: float = 1e-5
    """Stop when the max-abs gradient of the mean-loss objective is below this."""
    max_iter: int | None = None
    """Newton steps (default 50) or FISTA iterations (default 5000) per problem."""
    dtype: Literal["float32", "float64"] = "float32"
    """Working precision of the batched solver (float32 is about 2x faster)."""
    max_memory_gb: float = 2.0
    """Solver working-memory budget; layers are fitted in chunks that fit it."""

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ProbeError(f"folds must be >= 2, got {self.folds}")
        if self.inner_folds < 2:
            raise ProbeError(f"inner_folds must be >= 2, got {self.inner_folds}")
        if len(self.Cs) == 0 or any(not c > 0 for c in self.Cs):
            raise ProbeError(f"Cs must be a non-empty tuple of positive numbers, got {self.Cs!r}")
        if tuple(sorted(self.Cs)) != tuple(self.Cs):
            object.__setattr__(self, "Cs", tuple(sorted(float(c) for c in self.Cs)))
        else:
            object.__setattr__(self, "Cs", tuple(float(c) for c in self.Cs))
        if self.penalty not in ("l2", "l1", "elasticnet"):
            raise ProbeError(f"penalty must be 'l2', 'l1' or 'elasticnet', got {self.penalty!r}")
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise ProbeError(f"l1_ratio must be in [0, 1], got {self.l1_ratio}")
        if self.target not in ("binary", "category", "severity"):
            raise ProbeError(f"target must be 'binary', 'category' or 'severity', got {self.target!r}")
        if self.n_bootstrap < 0:
            raise ProbeError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0.0 < self.ci_level < 1.0:
            raise ProbeError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if not self.tol > 0:
            raise ProbeError(f"tol must be > 0, got {self.tol}")
        if self.dtype not in ("float32", "float64"):
            raise ProbeError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.max_memory_gb > 0:
            raise ProbeError(f"max_memory_gb must be > 0, got {self.max_memory_gb}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the fields."""
        d = asdict(self)
        d["Cs"] = list(self.Cs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeConfig:
        """Build from :meth:`to_dict` output, ignoring unknown keys."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "Cs" in known:
            known["Cs"] = tuple(known["Cs"])
        return cls(**known)
