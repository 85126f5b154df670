"""A windowed-perplexity filter: gibberish (optimised adversarial suffixes) reads as very unlikely text.

A text's score is the mean token negative log-likelihood (nats; ``log perplexity``) of its worst
window of ``window`` tokens under the loaded model. Thresholds are calibrated on benign text to a
chosen false-positive rate, separately per length bin (the maximum over more windows is higher,
so long benign texts need a higher threshold than short ones). The explanation is per window:
which token spans score above the threshold, and the worst one.

Fluent attacks (paraphrases, role play, natural-language suffixes) have ordinary perplexity and
pass: this filter catches token-level gibberish only.

>>> window_means(np.array([1.0, 1.0, 9.0, 9.0]), window=2)
(array([0, 1, 2]), array([1., 5., 9.]))
>>> cal = PerplexityCalibration.from_dict({"format": FORMAT, "model": "m", "weight_hash": "h",
...     "config": {"window": 2}, "bins": [{"min_tokens": 1, "max_tokens": 8, "threshold": 3.0, "n": 40},
...     {"min_tokens": 9, "max_tokens": None, "threshold": 4.0, "n": 40}]})
>>> cal.threshold_for(5), cal.threshold_for(500)
(3.0, 4.0)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_json, json_float
from .._version import __version__
from ..errors import ModelError, RiskscopeError
from ..hooks import pad_batch, run_batch, tokenize
from ..models import LoadedModel
from ._protocol import ScoreBatch

FORMAT = "riskscope-perplexity/1"


@dataclass(frozen=True)
class PerplexityConfig:
    """How texts are windowed and how thresholds are calibrated."""

    window: int = 10
    """Tokens per window (Jain et al. 2023 use 10); shorter texts are one window."""
    stride: int = 1
    """Tokens between window starts."""
    fpr: float = 0.01
    """False-positive rate on the benign calibration texts, per length bin."""
    length_edges: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    """Upper token counts of the length bins (a last bin holds longer texts)."""
    min_per_bin: int = 30
    """A bin with fewer calibration texts is merged into its neighbour."""
    batch_tokens: int = 1024
    """Padded tokens per forward (bounds the memory of the full logits)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "length_edges", tuple(int(e) for e in self.length_edges))
        if self.window < 1 or self.stride < 1:
            raise RiskscopeError(f"perplexity window and stride must be at least 1, got {self.window}, {self.stride}")
        if not 0.0 < self.fpr < 1.0:
            raise RiskscopeError(f"perplexity fpr must be between 0 and 1 (exclusive), got {self.fpr}")
        if list(self.length_edges) != sorted(set(self.length_edges)) or any(e < 1 for e in self.length_edges):
            raise RiskscopeError(f"length_edges must be increasing positive token counts, got {self.length_edges}")
        if self.min_per_bin < 1 or self.batch_tokens < 1:
            raise RiskscopeError("min_per_bin and batch_tokens must be at least 1")

    @classmethod
    def from_dict(cls, d: dict) -> "PerplexityConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "length_edges" else v) for k, v in d.items() if k in known})


# --- token likelihoods --------------------------------------------------------------------------


def token_nll(lm: LoadedModel, ids: Sequence[Sequence[int]], batch_tokens: int = 1024) -> list[np.ndarray]:
    """Per text, the (T-1,) negative log-likelihood (nats) of tokens 1..T-1 given their prefix."""
    order = np.argsort([-len(r) for r in ids], kind="stable")
    out: list[np.ndarray] = [np.zeros(0)] * len(ids)
    pad = lm.tokenizer.pad_token_id
    i = 0
    with torch.inference_mode():
        while i < len(order):
            width = max(len(ids[order[i]]), 1)
            rows = order[i:i + max(1, batch_tokens // width)]
            i += len(rows)
            chunk = [ids[r] for r in rows]
            if width < 2:
                continue  # one token: nothing is predicted
            x, mask = pad_batch(chunk, pad, "right", lm.device)
            logits = run_batch(lm, x, mask).logits[:, :-1].float()  # (B, T-1, V)
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").double().cpu().numpy()
            for j, r in enumerate(rows):
                out[r] = nll[j, :max(len(ids[r]) - 1, 0)]
    return out


def window_means(nll: np.ndarray, window: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, means)``: mean NLL of each window ``nll[s:s+window]`` (the last window always included)."""
    n = len(nll)
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    w = min(window, n)
    cs = np.concatenate([[0.0], np.cumsum(nll)])
    starts = np.arange(0, n - w + 1, stride)
    if starts[-1] != n - w:
        starts = np.append(starts, n - w)
    return starts, (cs[starts + w] - cs[starts]) / w


@dataclass(frozen=True, eq=False)
class TextPerplexity:
    """The windowed perplexity of one text."""

    ids: tuple[int, ...]
    """Its token ids."""
    nll: np.ndarray = field(repr=False)
    """(T-1,) NLL of tokens 1..T-1."""
    starts: np.ndarray = field(repr=False)
    """(K,) window starts, indices into ``nll`` (the window covers tokens ``s+1 .. s+w``)."""
    means: np.ndarray = field(repr=False)
    """(K,) mean NLL of each window."""
    window: int = 10

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def score(self) -> float:
        """Mean NLL of the worst window (0 for a text of one token: nothing to judge)."""
        return float(self.means.max()) if len(self.means) else 0.0

    @property
    def log_ppl(self) -> float:
        """Mean NLL of the whole text (log perplexity)."""
        return float(self.nll.mean()) if len(self.nll) else 0.0

    def token_span(self, k: int) -> tuple[int, int]:
        """Token index range ``[a, b)`` of window ``k``."""
        s = int(self.starts[k])
        return s + 1, s + 1 + min(self.window, len(self.nll))


def text_perplexities(lm: LoadedModel, texts: Sequence[str], window: int = 10, stride: int = 1,
                      batch_tokens: int = 1024, ids: Sequence[Sequence[int]] | None = None) -> list[TextPerplexity]:
    """Windowed perplexity of each text (``ids``: their token ids when already known)."""
    ids = tokenize(lm, texts) if ids is None else [list(r) for r in ids]
    if any(len(r) > lm.context_length for r in ids):
        raise RiskscopeError(f"a text is longer than the model context ({lm.context_length} tokens)")
    out = []
    for r, nll in zip(ids, token_nll(lm, ids, batch_tokens)):
        starts, means = window_means(nll, window, stride)
        out.append(TextPerplexity(tuple(r), nll, starts, means, window))
    return out


# --- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthBin:
    """Texts of ``min_tokens..max_tokens`` tokens share one threshold."""

    min_tokens: int
    max_tokens: int | None
    """Inclusive upper bound (None: no bound)."""
    threshold: float
    """Worst-window mean NLL at which a text of this length is flagged."""
    n: int
    """Benign calibration texts in the bin."""

    def holds(self, n_tokens: int) -> bool:
        return n_tokens >= self.min_tokens and (self.max_tokens is None or n_tokens <= self.max_tokens)


@dataclass(frozen=True, eq=False)
class PerplexityCalibration:
    """Per-length-bin thresholds for one model's weights; saved as JSON (``riskscope-perplexity/1``)."""

    model_id: str
    weight_hash: str
    config: PerplexityConfig
    bins: tuple[LengthBin, ...]
    meta: dict = field(default_factory=dict)
    """Provenance: number of texts, the benign score quantiles, riskscope version."""

    def threshold_for(self, n_tokens: int) -> float:
        for b in self.bins:
            if b.holds(n_tokens):
                return b.threshold
        return self.bins[-1].threshold if n_tokens > (self.bins[-1].max_tokens or 0) else self.bins[0].threshold

    def to_dict(self) -> dict:
        return {"format": FORMAT, "riskscope_version": __version__, "model": self.model_id,
                "weight_hash": self.weight_hash, "config": asdict(self.config),
                "score": "mean token negative log-likelihood (nats) of the worst window",
                "bins": [{"min_tokens": b.min_tokens, "max_tokens": b.max_tokens,
                          "threshold": json_float(b.threshold, None), "n": b.n} for b in self.bins],
                "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        return atomic_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, where: str = "calibration") -> "PerplexityCalibration":
        if not isinstance(d, dict):
            raise RiskscopeError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT:
            raise RiskscopeError(f"{where}: field 'format' is {d.get('format')!r}, expected {FORMAT!r}; "
                                 f"make one with `riskscope perplexity calibrate`")
        for key in ("model", "weight_hash", "bins"):
            if key not in d:
                raise RiskscopeError(f"{where}: field {key!r} is missing")
        try:
            bins = tuple(LengthBin(int(b["min_tokens"]), None if b.get("max_tokens") is None else int(b["max_tokens"]),
                                   float(b["threshold"]), int(b.get("n", 0))) for b in d["bins"])
            config = PerplexityConfig.from_dict(d.get("config") or {})
        except (KeyError, TypeError, ValueError) as e:
            raise RiskscopeError(f"{where}: field 'bins' or 'config' is malformed ({e})") from None
        if not bins:
            raise RiskscopeError(f"{where}: field 'bins' is empty")
        return cls(str(d["model"]), str(d["weight_hash"]), config, bins, d.get("meta") or {})

    @classmethod
    def load(cls, path: str | Path) -> "PerplexityCalibration":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RiskscopeError(f"{path}: no such calibration file; make one with `riskscope perplexity calibrate`") \
                from None
        except json.JSONDecodeError as e:
            raise RiskscopeError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        return cls.from_dict(d, str(path))


def _merge_bins(edges: Sequence[int], n_tokens: np.ndarray, min_per_bin: int) -> list[tuple[int, int | None]]:
    """Token ranges covering 1..inf, each holding at least ``min_per_bin`` of ``n_tokens`` (when possible)."""
    bounds = [(lo, hi) for lo, hi in zip([1, *[e + 1 for e in edges]], [*edges, None])]
    groups: list[list] = []
    cur: list | None = None
    for lo, hi in bounds:
        count = int(((n_tokens >= lo) & ((n_tokens <= hi) if hi is not None else True)).sum())
        if cur is None:
            cur = [lo, hi, count]
        else:
            cur[1], cur[2] = hi, cur[2] + count
        if cur[2] >= min_per_bin:
            groups.append(cur)
            cur = None
    if cur is not None:
        if groups:
            groups[-1][1], groups[-1][2] = cur[1], groups[-1][2] + cur[2]
        else:
            groups.append(cur)
    return [(lo, hi) for lo, hi, _ in groups]


def calibrate_perplexity(lm: LoadedModel, texts: Sequence[str], config: PerplexityConfig = PerplexityConfig(),
                         meta: dict | None = None,
                         measured: Sequence[TextPerplexity] | None = None) -> PerplexityCalibration:
    """Thresholds at which ``config.fpr`` of the benign ``texts`` are flagged, per length bin.

    A bin's threshold is the smallest observed benign score with at most ``fpr`` of the bin's texts
    above or at it (so with 100 texts, ``fpr=0.001`` puts it just above the maximum: such a rate
    cannot be resolved from 100 texts, see ``meta["resolution"]``). ``measured``: the texts'
    :func:`text_perplexities` under the same window and stride, when already computed (calibrating
    to several rates without running the model again).
    """
    texts = [t for t in texts]
    if len(texts) < 10:
        raise RiskscopeError(f"calibrate the perplexity filter on at least 10 benign texts (got {len(texts)})")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise RiskscopeError("a calibration text is empty or not a string")
    if measured is not None:
        if len(measured) != len(texts) or any(m.window != config.window for m in measured):
            raise RiskscopeError("measured perplexities must be one per text, with the config's window")
        tp = list(measured)
    else:
        tp = text_perplexities(lm, texts, config.window, config.stride, config.batch_tokens)
    scores = np.array([t.score for t in tp])
    n_tok = np.array([t.n_tokens for t in tp])
    bins = []
    for lo, hi in _merge_bins(config.length_edges, n_tok, config.min_per_bin):
        sel = (n_tok >= lo) & ((n_tok <= hi) if hi is not None else True)
        s = np.sort(scores[sel]) if sel.any() else np.sort(scores)
        k = int(np.floor(config.fpr * len(s)))  # at most k benign texts may reach the threshold
        thr = float(np.nextafter(s[len(s) - 1 - k], np.inf)) if k == 0 else float(s[len(s) - k])
        bins.append(LengthBin(lo, hi, thr, int(sel.sum())))
    info = {"n_texts": len(texts), "resolution": 1.0 / len(texts),
            "benign_score_quantiles": {q: json_float(np.quantile(scores, float(q))) for q in ("0.5", "0.9", "0.99")},
            **(meta or {})}
    return PerplexityCalibration(lm.model_id, lm.weight_hash, config, tuple(bins), info)


# --- the filter ---------------------------------------------------------------------------------


def _spans(starts: np.ndarray, hot: np.ndarray, w: int) -> list[tuple[int, int]]:
    """Merge hot windows (start s covers nll[s:s+w]) into disjoint nll index ranges."""
    spans: list[list[int]] = []
    for s in starts[hot]:
        a, b = int(s), int(s) + w
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


class PerplexityFilter:
    """Flags texts whose worst window is less likely than ``fpr`` of benign texts of their length."""

    name = "perplexity"

    def __init__(self, lm: LoadedModel, calibration: PerplexityCalibration) -> None:
        if calibration.weight_hash != lm.weight_hash:
            raise ModelError(f"the perplexity calibration was made on weights {calibration.weight_hash[:12]}... but "
                             f"model {lm.model_id!r} has {lm.weight_hash[:12]}...; calibrate on this model")
        self.lm = lm
        self.calibration = calibration

    def measure(self, texts: Sequence[str], ids: Sequence[Sequence[int]] | None = None) -> list[TextPerplexity]:
        c = self.calibration.config
        return text_perplexities(self.lm, texts, c.window, c.stride, c.batch_tokens, ids=ids)

    def explain(self, tp: TextPerplexity) -> dict:
        """JSON-ready: log perplexity, the worst window and the merged spans above the threshold (token ranges
        ``[start, end)`` into the text's token ids, with their text)."""
        thr = self.calibration.threshold_for(tp.n_tokens)
        dec = self.lm.tokenizer.decode
        out = {"log_ppl": json_float(tp.log_ppl), "tokens": tp.n_tokens, "worst_window": None, "anomalous_spans": []}
        if len(tp.means):
            k = int(np.argmax(tp.means))
            a, b = tp.token_span(k)
            out["worst_window"] = {"start": a, "end": b, "log_ppl": json_float(tp.means[k]),
                                   "text": dec(list(tp.ids[a:b]))}
            w = min(tp.window, len(tp.nll))
            for a, b in _spans(tp.starts, tp.means >= thr, w):
                out["anomalous_spans"].append({"start": a + 1, "end": b + 1, "text": dec(list(tp.ids[a + 1:b + 1])),
                                               "log_ppl": json_float(tp.nll[a:b].mean())})
        return out

    def score(self, texts: Sequence[str], ids: Sequence[Sequence[int]] | None = None) -> ScoreBatch:
        tps = self.measure(texts, ids)
        scores = np.array([t.score for t in tps], dtype=np.float64)
        thr = np.array([self.calibration.threshold_for(t.n_tokens) for t in tps], dtype=np.float64)
        return ScoreBatch(self.name, scores, thr, tuple(self.explain(t) for t in tps))

    def describe(self) -> dict:
        c = self.calibration
        return {"model_id": c.model_id, "weight_hash": c.weight_hash, "window": c.config.window,
                "stride": c.config.stride, "fpr": c.config.fpr, "calibration_texts": c.meta.get("n_texts"),
                "bins": [{"min_tokens": b.min_tokens, "max_tokens": b.max_tokens, "threshold": json_float(b.threshold)}
                         for b in c.bins]}


__all__ = ["FORMAT", "LengthBin", "PerplexityCalibration", "PerplexityConfig", "PerplexityFilter", "TextPerplexity",
           "calibrate_perplexity", "text_perplexities", "token_nll", "window_means"]
