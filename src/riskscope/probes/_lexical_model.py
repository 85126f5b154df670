"""``LexicalModel``: the TF-IDF 1-2 gram logistic regression as a saveable estimator of texts (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from .._io import atomic_json, save_safetensors
from ._config import ProbeError


class LexicalModel:
    """TF-IDF word 1-2 grams (sublinear tf) + L2 logistic regression: the lexical baseline, fitted once.

    Saved as ``config.json`` (vocabulary) + ``weights.safetensors`` (idf, coef, intercept).

    >>> m = LexicalModel(C=10.0).fit(["door left open", "door locked"] * 3, [1, 0] * 3)
    >>> bool(m.decision_function(["left open"])[0] > 0)
    True
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, texts: Sequence[str], y) -> "LexicalModel":
        self.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        with threadpool_limits(1):
            X = self.vectorizer_.fit_transform(list(texts))
            lr = LogisticRegression(C=self.C, max_iter=10_000, tol=1e-8).fit(X, np.asarray(y).astype(int))
        self.coef_ = lr.coef_.reshape(-1).astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) log-odds of risky from the words of each text."""
        return np.asarray(self.vectorizer_.transform(list(texts)) @ self.coef_ + self.intercept_, dtype=np.float64)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        vocab = {k: int(v) for k, v in self.vectorizer_.vocabulary_.items()}
        atomic_json(path / "config.json", {"format_version": 1, "estimator": type(self).__name__, "C": self.C,
                                           "ngram_range": [1, 2], "sublinear_tf": True, "vocabulary": vocab})
        save_safetensors({"idf": np.ascontiguousarray(self.vectorizer_.idf_, dtype=np.float64),
                          "coef": np.ascontiguousarray(self.coef_), "intercept": np.array([self.intercept_])},
                         path / "weights.safetensors")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LexicalModel":
        path = Path(path)
        try:
            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
            t = load_file(str(path / "weights.safetensors"))
        except (OSError, ValueError) as e:
            raise ProbeError(f"{path}: not a saved lexical model ({str(e)[:80]})") from None
        vocab = cfg.get("vocabulary")
        if not isinstance(vocab, dict) or len(vocab) != len(t["idf"]) or len(t["coef"]) != len(vocab):
            raise ProbeError(f"{path / 'config.json'}: field 'vocabulary' does not match the weights")
        m = cls(C=float(cfg.get("C", 1.0)))
        m.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=vocab)
        m.vectorizer_.idf_ = t["idf"]
        m.coef_ = t["coef"].astype(np.float64)
        m.intercept_ = float(t["intercept"][0])
        return m


__all__ = ["LexicalModel"]
