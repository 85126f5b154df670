"""``LinearReadout``: an already-fitted linear score from arrays, in the estimator shape a :class:`Probe` holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from .._io import save_safetensors
from ._config import ProbeError


class LinearReadout:
    """The score ``((x - mean_) / scale_) @ coef_ + intercept_`` of given arrays (scikit-learn-style attributes).

    For weights that come from elsewhere (a batched fit, a ranking's per-layer probe): no ``fit``.

    >>> r = LinearReadout(np.array([1.0, -2.0]), 0.5, np.zeros(2), np.ones(2))
    >>> r.decision_function(np.array([[1.0, 1.0]])).tolist()
    [-0.5]
    """

    def __init__(self, coef, intercept: float, mean, scale):
        self.coef_ = np.asarray(coef, dtype=np.float64).reshape(1, -1)
        self.intercept_ = np.asarray([float(intercept)])
        self.mean_ = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale_ = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.n_features_in_ = int(self.coef_.shape[1])

    def decision_function(self, X) -> np.ndarray:
        """(N,) logits of rows ``X`` (N, W)."""
        X = np.asarray(X, dtype=np.float64)
        return ((X - self.mean_) / self.scale_) @ self.coef_[0] + self.intercept_[0]

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"format_version": 1, "estimator": type(self).__name__, "n_features_in": self.n_features_in_}
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_safetensors({"coef": np.ascontiguousarray(self.coef_), "intercept": np.ascontiguousarray(self.intercept_),
                          "mean": np.ascontiguousarray(self.mean_), "scale": np.ascontiguousarray(self.scale_)},
                         path / "weights.safetensors")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LinearReadout":
        """Read a readout written by :meth:`save` (unknown JSON keys are ignored)."""
        path = Path(path)
        try:
            t = load_file(str(path / "weights.safetensors"))
        except FileNotFoundError as e:
            raise ProbeError(f"{path} is not a saved probe: {e.filename} is missing") from e
        return cls(t["coef"], float(t["intercept"].reshape(-1)[0]), t["mean"], t["scale"])


__all__ = ["LinearReadout"]
