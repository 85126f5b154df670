"""``LogisticProbe``: a scikit-learn classifier on standardised activations, fitted in torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.numpy import load_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, X, y="no_validation", reset=True, **kw):
        return estimator._validate_data(X, y, reset=reset, **kw)

from .._io import save_safetensors
from ._config import ProbeError
from ._solver import fit_many

FORMAT_VERSION = 1


class LogisticProbe(ClassifierMixin, BaseEstimator):
    """Regularised logistic regression with built-in standardisation.

    Minimises scikit-learn's objective on features standardised with the
    training rows' mean and standard deviation: ``C * sum(logloss) + 0.5 ||w||^2``
    (``l2``), ``C * sum(logloss) + ||w||_1`` (``l1``) or the elastic-net mix;
    the intercept is not penalised. Two classes give a logistic model, more a
    multinomial (softmax) one, as in sklearn.

    Args:
        penalty: ``l2`` (Newton-CG), ``l1`` or ``elasticnet`` (FISTA).
        C: inverse regularisation strength, as in sklearn.
        l1_ratio: L1 share of the ``elasticnet`` penalty.
        standardize: standardise features inside the model.
        max_iter: Newton steps (default 50) or FISTA iterations (default 5000).
        tol: max-abs gradient of the mean-loss objective at convergence.

    Attributes:
        coef_: (1, D) or (classes, D) weights on *standardised* features.
        intercept_: (1,) or (classes,).
        mean_, scale_: (D,) the standardisation (0 and 1 when off).
        classes_: the class labels.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 5)); y = (X[:, 0] > 0).astype(int)
        >>> probe = LogisticProbe(C=1.0).fit(X, y)
        >>> probe.score(X, y) > 0.9
        True
    """

    def __init__(
        self,
        penalty: Literal["l2", "l1", "elasticnet"] = "l2",
        C: float = 1.0,
        l1_ratio: float = 0.5,
        standardize: bool = True,
        max_iter: int | None = None,
        tol: float = 1e-8,
    ):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y) -> LogisticProbe:
        """Fit on rows ``X`` (N, D) and labels ``y`` (N,)."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        if self.penalty not in ("l2", "l1", "elasticnet"):
            raise ProbeError(f"penalty must be 'l2', 'l1' or 'elasticnet', got {self.penalty!r}")
        if not self.C > 0:
            raise ProbeError(f"C must be > 0, got {self.C}")
        self.classes_, yk = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ProbeError(f"y contains one class only ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        K = len(self.classes_)
        loss = "logistic" if K == 2 else "multinomial"
        fit = fit_many(
            X[None], yk.astype(np.float64), np.ones((1, len(y)), bool), [float(self.C)],
            penalty=self.penalty, l1_ratio=self.l1_ratio, loss=loss, n_classes=K if K > 2 else None,
            standardize=self.standardize, tol=self.tol, max_iter=self.max_iter, dtype=torch.float64,
        )
        self.coef_ = fit.coef[0, 0, 0]  # (K or 1, D)
        self.intercept_ = fit.intercept[0, 0, 0]
        self.mean_ = fit.mean[0, 0]
        self.scale_ = fit.scale[0, 0]
        self.n_iter_ = np.asarray([int(fit.n_iter[0, 0, 0])])
        self.converged_ = bool(fit.converged[0, 0, 0])
        return self

    def decision_function(self, X) -> np.ndarray:
        """Logits: (N,) for two classes, (N, classes) otherwise."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, classes)."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Most probable class of each row."""
        z = self.decision_function(X)
        idx = (z > 0).astype(int) if z.ndim == 1 else z.argmax(1)
        return self.classes_[idx]

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into directory ``path``."""
        check_is_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        classes = self.classes_.tolist()
        config = {
            "format_version": FORMAT_VERSION, "estimator": type(self).__name__, "params": self.get_params(),
            "classes": classes, "n_features_in": int(self.n_features_in_), "n_iter": int(self.n_iter_[0]),
            "converged": self.converged_,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_safetensors(
            {"coef": np.ascontiguousarray(self.coef_), "intercept": np.ascontiguousarray(self.intercept_),
             "mean": np.ascontiguousarray(self.mean_), "scale": np.ascontiguousarray(self.scale_)},
            path / "weights.safetensors",
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LogisticProbe:
        """Read a probe written by :meth:`save` (unknown JSON keys are ignored).

        A missing, damaged or inconsistent file is a :class:`ProbeError` naming the file (and the
        field or tensor) and what is wrong with it.
        """
        path = Path(path)
        if not path.is_dir():
            raise ProbeError(f"{path}: no such probe folder; save a probe there first (LogisticProbe.save, "
                             f"`riskscope probe` or `riskscope run`)")
        cfg_file, w_file = path / "config.json", path / "weights.safetensors"
        for f in (cfg_file, w_file):
            if not f.is_file():
                raise ProbeError(f"{f} is missing: {path} is not a saved probe (or an incomplete one); "
                                 f"save it again")
        config = _read_config(cfg_file)
        classes = config["classes"]
        try:
            tensors = load_file(str(w_file))
        except Exception as e:  # safetensors raises its own error type for damaged headers and data
            msg = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
            raise ProbeError(f"{w_file}: not a readable safetensors file ({msg}); the file is damaged or "
                             f"truncated: save the probe again") from None
        _check_weights(w_file, tensors, len(classes))
        n_features = int(tensors["coef"].shape[1])
        if config.get("n_features_in", n_features) != n_features:
            raise ProbeError(f"{cfg_file}: field 'n_features_in' is {config['n_features_in']} but {w_file.name} "
                             f"holds weights for {n_features} features; save the probe again")
        known = cls().get_params()
        try:
            probe = cls(**{k: v for k, v in config.get("params", {}).items() if k in known})
        except (TypeError, ValueError) as e:
            raise ProbeError(f"{cfg_file}: field 'params' does not describe a probe ({e}); save the probe again") \
                from None
        probe.classes_ = np.asarray(classes)
        probe.coef_ = tensors["coef"]
        probe.intercept_ = tensors["intercept"]
        probe.mean_ = tensors["mean"]
        probe.scale_ = tensors["scale"]
        probe.n_features_in_ = n_features
        probe.n_iter_ = np.asarray([int(config.get("n_iter", 0))])
        probe.converged_ = bool(config.get("converged", True))
        return probe


def _read_config(cfg_file: Path) -> dict:
    """``config.json`` of a saved probe, checked field by field."""
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ProbeError(f"{cfg_file}: not UTF-8 text (byte {e.start}); save the probe again") from None
    except json.JSONDecodeError as e:
        raise ProbeError(f"{cfg_file}:{e.lineno}: invalid JSON ({e.msg}); save the probe again") from None
    if not isinstance(config, dict):
        raise ProbeError(f"{cfg_file}: must hold a JSON object, not a {type(config).__name__}")
    classes = config.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or len({json.dumps(c) for c in classes}) != len(classes):
        raise ProbeError(f"{cfg_file}: field 'classes' is missing or is not a list of at least 2 distinct labels")
    if not isinstance(config.get("params", {}), dict):
        raise ProbeError(f"{cfg_file}: field 'params' must be a JSON object")
    for key in ("n_features_in", "n_iter"):
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProbeError(f"{cfg_file}: field {key!r} must be a non-negative integer, got {value!r}")
    return config


def _check_weights(w_file: Path, tensors: dict, n_classes: int) -> None:
    """The four arrays :meth:`LogisticProbe.save` writes, with shapes that fit together and finite values."""
    for key in ("coef", "intercept", "mean", "scale"):
        if key not in tensors:
            raise ProbeError(f"{w_file}: tensor {key!r} is missing; save the probe again")
        if tensors[key].dtype.kind != "f":
            raise ProbeError(f"{w_file}: tensor {key!r} has dtype {tensors[key].dtype}, expected floats")
    k = 1 if n_classes == 2 else n_classes
    coef = tensors["coef"]
    if coef.ndim != 2 or coef.shape[0] != k or coef.shape[1] < 1:
        raise ProbeError(f"{w_file}: tensor 'coef' has shape {tuple(coef.shape)}, expected ({k}, n_features) for "
                         f"{n_classes} classes")
    want = {"intercept": (k,), "mean": (coef.shape[1],), "scale": (coef.shape[1],)}
    for key, shape in want.items():
        if tuple(tensors[key].shape) != shape:
            raise ProbeError(f"{w_file}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {shape} "
                             f"(coef is {tuple(coef.shape)})")
    for key in ("coef", "intercept", "mean", "scale"):
        if not np.isfinite(tensors[key]).all():
            raise ProbeError(f"{w_file}: tensor {key!r} holds NaN or infinite values; refit the probe")
    if not (tensors["scale"] > 0).all():
        raise ProbeError(f"{w_file}: tensor 'scale' holds values <= 0; refit the probe")
