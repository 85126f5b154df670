"""What the service runs: the probe (and the perplexity filter) on one loaded model.

:meth:`Engine.prepare` checks texts against the token limit on the event loop (with a tokenizer of
its own, so it never shares one with the worker); :meth:`Engine.score` runs in the worker thread on
one micro-batch.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import RiskscopeError
from ..probes import Probe
from ..scorers import PerplexityCalibration, PerplexityFilter, ProbeScorer, bundle_digest, bundle_folder
from ._config import ServeConfig
from ._limits import ApiError


@dataclass(frozen=True)
class Job:
    """One text as it will be scored."""

    index: int
    """Its place in the request."""
    text: str
    """The text scored (cut to the token limit when truncated)."""
    ids: tuple[int, ...]
    """Its token ids."""
    tokens: int
    """Tokens of the text as sent."""
    truncated: bool


def default_calibration_texts() -> list[str]:
    """The built-in dataset's texts (benign, fluent prose) for calibrating the perplexity filter."""
    from ..data import load_dataset

    return load_dataset("cyber_risk_pairs").texts


class Engine:
    """The loaded model and its scorers. Construction checks the files (cheap); :meth:`load` loads the model."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.folder = bundle_folder(config.probe)
        self.probe = Probe.load(self.folder)
        self.version = bundle_digest(self.folder)
        self.calibration: PerplexityCalibration | None = None
        if config.perplexity:
            path = config.perplexity_calibration
            if path is None and (Path(config.probe) / "perplexity.json").is_file():
                path = str(Path(config.probe) / "perplexity.json")
            if path is not None:
                self.calibration = PerplexityCalibration.load(path)
                if self.probe.weight_hash and self.calibration.weight_hash != self.probe.weight_hash:
                    raise RiskscopeError(f"{path}: calibrated on weights {self.calibration.weight_hash[:12]}... but the "
                                         f"probe's model has {str(self.probe.weight_hash)[:12]}...; calibrate again")
        self.lm: Any = None
        self.scorer: ProbeScorer | None = None
        self.filter: PerplexityFilter | None = None
        self._tokenizer: Any = None
        self._tok_lock = threading.Lock()
        self.state = "loading"
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def load(self) -> None:
        """Load the model and build the scorers (call in the worker thread); sets :attr:`state`."""
        try:
            lm = self.probe.load_model(device=self.config.device, dtype=self.config.dtype)
            self.scorer = ProbeScorer(self.probe, lm, batch_size=self.config.forward_batch, version=self.version)
            if self.config.perplexity:
                if self.calibration is None:
                    from ..scorers import calibrate_perplexity

                    self.calibration = calibrate_perplexity(lm, default_calibration_texts(),
                                                            meta={"texts": "built-in cyber_risk_pairs"})
                self.filter = PerplexityFilter(lm, self.calibration)
            self._tokenizer = copy.deepcopy(lm.tokenizer)
            self.lm = lm
            self.state = "ready"
        except Exception as e:  # shown by /readyz and the log; the process keeps answering
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            raise

    def describe(self) -> dict:
        """Model, weights and probe version: sent with every answer."""
        d = {"model": {"id": self.probe.model_id, "weights_hash": self.probe.weight_hash},
             "probe": {"version": self.version, "hook": self.probe.hook, "layer": int(self.probe.layer),
                       "positions": self.probe.positions if isinstance(self.probe.positions, str)
                       else list(self.probe.positions), "threshold": float(self.probe.threshold)}}
        if self.lm is not None:
            d["model"]["id"] = self.lm.model_id
            d["model"]["weights_hash"] = self.lm.weight_hash
        if self.filter is not None:
            d["perplexity"] = self.filter.describe()
        return d

    def prepare(self, texts: Sequence[str]) -> list[Job]:
        """Token-count ``texts``; over-long ones raise 413, or are cut when the config says ``truncate``."""
        limit = self.config.max_tokens
        with self._tok_lock:
            ids = self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]
            jobs = []
            for i, (text, row) in enumerate(zip(texts, ids)):
                n = len(row)
                if n <= limit:
                    jobs.append(Job(i, text, tuple(row), n, False))
                    continue
                if not self.config.truncate:
                    raise ApiError(413, "text_too_long", f"texts[{i}] has {n} tokens; the limit is {limit} (or start "
                                   f"the server with --truncate to score the first {limit})", f"texts[{i}]")
                cut, cut_ids = self._cut(row, limit)
                jobs.append(Job(i, cut, cut_ids, n, True))
        return jobs

    def _cut(self, row: Sequence[int], limit: int) -> tuple[str, tuple[int, ...]]:
        """The text of the first ``limit`` tokens, re-tokenised to at most ``limit`` tokens."""
        keep = limit
        while keep > 0:
            text = self._tokenizer.decode(list(row[:keep]), skip_special_tokens=True)
            again = self._tokenizer([text], add_special_tokens=True)["input_ids"][0]
            if len(again) <= limit and text.strip():
                return text, tuple(again)
            keep -= 1
        raise ApiError(422, "text_unusable", "a text cannot be cut to the token limit")

    def score(self, jobs: Sequence[Job]) -> list[dict]:
        """Score one micro-batch (worker thread): the probe, then the perplexity filter when on."""
        if self.scorer is None:
            raise RiskscopeError("the model is not loaded")
        texts = [j.text for j in jobs]
        risk = self.scorer.score(texts)
        ppl = self.filter.score(texts, ids=[j.ids for j in jobs]) if self.filter is not None else None
        out = []
        for k in range(len(jobs)):
            r = {"risk_score": float(risk.scores[k]), "risky": bool(risk.flagged[k]),
                 "threshold": float(risk.thresholds[k])}
            if ppl is not None:
                r["perplexity"] = ppl.row(k)
            out.append(r)
        return out


__all__ = ["Engine", "Job", "default_calibration_texts"]
