"""A probe bundle: a fitted probe plus everything needed to recompute its features.

``RUN/probe/`` holds ``bundle.json`` (format, model id + weight hash, hook, layer,
positions, threshold, metrics) beside the estimator's own ``config.json`` +
``weights.safetensors`` (which include the standardisation). Never pickle.

>>> probe = Probe.load("runs/default/probe")          # doctest: +SKIP
>>> probe.score(["The fitness app requested access to contacts."])  # doctest: +SKIP
array([0.83])
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._version import __version__
from ..errors import ModelError, RiskscopeError
from ..hooks import capture_texts
from ..hooks import HookPoint
from ..models import LoadedModel, load_model
from ._logistic import LogisticProbe

FORMAT = "riskscope-probe/1"


@dataclass(frozen=True, eq=False)
class Probe:
    """A fitted probe tied to one model and hook point."""

    estimator: LogisticProbe
    """The fitted estimator (standardisation inside)."""
    hook: str
    """Hook name, e.g. ``resid_post``."""
    layer: int
    """Layer index (normalised, >= 0)."""
    model_id: str
    """What ``load_model`` needs to rebuild the features."""
    weight_hash: str
    """The weights the probe was trained on; scoring with other weights is refused."""
    positions: str = "last"
    """How token activations were reduced to one row per text."""
    threshold: float = 0.5
    """Probability above which a text is called risky."""
    meta: dict = field(default_factory=dict)
    """Provenance: dataset, metrics of this layer, C, riskscope version."""

    @property
    def point(self) -> HookPoint:
        return HookPoint(self.hook, self.layer)

    def save(self, path: str | Path) -> Path:
        """Write the bundle directory atomically (temp dir + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.estimator.save(tmp)
        info = {"format": FORMAT, "riskscope_version": __version__, "model": self.model_id,
                "weight_hash": self.weight_hash, "hook": self.hook, "layer": self.layer,
                "positions": self.positions, "threshold": self.threshold, "meta": self.meta}
        (tmp / "bundle.json").write_text(json.dumps(info, indent=1, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Probe":
        path = Path(path)
        if (path / "probe" / "bundle.json").is_file():  # a run folder
            path = path / "probe"
        info_path = path / "bundle.json"
        if not info_path.is_file():
            raise RiskscopeError(f"{path} is not a probe bundle (no bundle.json); create one with `riskscope probe` "
                                 f"or `riskscope run`")
        info = json.loads(info_path.read_text())
        if info.get("format") != FORMAT:
            raise RiskscopeError(f"{info_path}: unknown probe format {info.get('format')!r}")
        return cls(estimator=LogisticProbe.load(path), hook=info["hook"], layer=int(info["layer"]),
                   model_id=info["model"], weight_hash=info["weight_hash"], positions=info.get("positions", "last"),
                   threshold=float(info.get("threshold", 0.5)), meta=info.get("meta", {}))

    def load_model(self, **kwargs) -> LoadedModel:
        """Load the probe's model and check its weights are the ones it was trained on."""
        lm = load_model(self.model_id, **kwargs)
        self.check_model(lm)
        return lm

    def check_model(self, lm: LoadedModel) -> None:
        if lm.weight_hash != self.weight_hash:
            raise ModelError(f"the probe was trained on weights {self.weight_hash[:12]}... but model "
                             f"{lm.model_id!r} has weights {lm.weight_hash[:12]}...; use the model it was trained on")

    def features(self, lm: LoadedModel, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        reduce = self.positions if isinstance(self.positions, str) else tuple(self.positions)
        return capture_texts(lm, texts, [self.point], reduce, batch_size)[self.point.normalised(lm)]

    def score(self, texts: Sequence[str], lm: LoadedModel | None = None, batch_size: int = 32) -> np.ndarray:
        """Probability that each text is risky, (N,)."""
        if isinstance(texts, str):
            texts = [texts]
        if lm is None:
            lm = self.load_model()
        else:
            self.check_model(lm)
        if not texts:
            return np.zeros(0)
        return self.estimator.predict_proba(self.features(lm, texts, batch_size))[:, 1]


__all__ = ["FORMAT", "Probe"]
