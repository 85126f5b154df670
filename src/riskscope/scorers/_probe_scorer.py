"""The probe as a :class:`~riskscope.scorers.Scorer`: risk probability per text, and its decision.

The forward stops after the probe's layer (``Probe.score`` captures with an early stop), so a
probe at layer 10 of 30 costs about a third of a full forward.

>>> ProbeScorer.load("runs/default").score(["The fitness app requested access to contacts."])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RiskscopeError
from ..models import LoadedModel
from ..probes import Probe
from ._protocol import ScoreBatch


def bundle_folder(path: str | Path) -> Path:
    """The probe bundle folder of a run folder or bundle folder ``path``."""
    path = Path(path)
    if (path / "probe" / "bundle.json").is_file():
        return path / "probe"
    if (path / "bundle.json").is_file():
        return path
    raise RiskscopeError(f"{path} is not a probe bundle or run folder (no bundle.json); create one with "
                         f"`riskscope probe` or `riskscope run`")


def bundle_digest(path: str | Path) -> str:
    """sha256 over the bundle's files (names and contents): the probe's version, changes with any byte.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "bundle.json").write_text("{}")
    >>> len(bundle_digest(d))
    64
    """
    folder = bundle_folder(path)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f.name.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


class ProbeScorer:
    """Score texts with a saved probe on its model: ``score = P(risky)``, flagged at the probe's threshold."""

    name = "probe"

    def __init__(self, probe: Any, lm: LoadedModel, *, batch_size: int = 64, version: str = "") -> None:
        """``probe``: a :class:`~riskscope.probes.Probe`; ``lm``: the model it was trained on (checked);
        ``batch_size``: texts per padded forward; ``version``: the bundle digest, when known."""
        if batch_size < 1:
            raise RiskscopeError(f"batch_size must be at least 1, got {batch_size}")
        self.probe = probe
        self.lm = lm
        self.batch_size = int(batch_size)
        self.version = version
        self.probe.score([], lm=lm)  # checks the weights before any text is scored

    @classmethod
    def load(cls, path: str | Path, lm: LoadedModel | None = None, *, batch_size: int = 64,
             **load_kwargs) -> "ProbeScorer":
        """The probe of run or bundle folder ``path``; its model is loaded (``load_kwargs``) unless ``lm`` is given."""
        folder = bundle_folder(path)
        probe = Probe.load(folder)
        if lm is None:
            lm = probe.load_model(**load_kwargs)
        return cls(probe, lm, batch_size=batch_size, version=bundle_digest(folder))

    def score(self, texts: Sequence[str]) -> ScoreBatch:
        texts = list(texts)
        p = np.asarray(self.probe.score(texts, lm=self.lm, batch_size=self.batch_size), dtype=np.float64)
        return ScoreBatch(self.name, p, np.full(len(p), float(self.probe.threshold)))

    def describe(self) -> dict:
        pos = self.probe.positions
        return {"hook": self.probe.hook, "layer": int(self.probe.layer),
                "positions": pos if isinstance(pos, str) else list(pos), "threshold": float(self.probe.threshold),
                "model_id": self.probe.model_id, "weight_hash": self.probe.weight_hash, "version": self.version}


__all__ = ["ProbeScorer", "bundle_digest", "bundle_folder"]
