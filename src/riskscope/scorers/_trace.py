"""Where in the text the risk is sensed.

* :func:`token_traces` applies a probe trained on last-token activations at
  every token position, so each prefix of the text gets a score (the Mistral-7B probing study's
  "visualise activations throughout the input").
* The same call adds gradient x input attribution: the gradient of the
  probe's last-token logit with respect to each input embedding, dotted with
  that embedding - how much each input token pushes the final score.

>>> TokenTrace("ab", ("a", "b"), np.array([0.2, 0.9]), np.array([-1.4, 2.2]), None).peak
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..effects import token_text
from .._io import atomic_json
from ..errors import RiskscopeError
from ..hooks import StopForward, capture, on_activation, pad_batch, run_batch, tokenize
from ..models import LoadedModel
from ..probes import Probe


@dataclass(frozen=True, eq=False)
class TokenTrace:
    """Per-token probe scores of one text."""

    text: str
    tokens: tuple[str, ...]
    """Each token as text."""
    prob: np.ndarray = field(repr=False)
    """(T,) probe probability of risky after each token (the prefix up to it)."""
    logit: np.ndarray = field(repr=False)
    """(T,) the probe's logit after each token."""
    attribution: np.ndarray | None = field(repr=False)
    """(T,) gradient x input of the last-token logit per input token (None when not computed)."""
    label: int | None = None

    @property
    def peak(self) -> int:
        """Index of the token with the highest score."""
        return int(np.argmax(self.logit))

    def to_dict(self) -> dict:
        def r(a):
            return None if a is None else [round(float(x), 5) if math.isfinite(x) else None for x in a]
        return {"text": self.text, "label": self.label, "tokens": list(self.tokens), "prob": r(self.prob),
                "logit": r(self.logit), "attribution": r(self.attribution), "peak": self.peak}


@dataclass(frozen=True, eq=False)
class TokenTraces:
    """Traces of several texts under one probe."""

    probe: str
    """The probe's hook point, e.g. ``resid_post.22``."""
    traces: tuple[TokenTrace, ...]

    def to_dict(self) -> dict:
        return {"probe": self.probe, "traces": [t.to_dict() for t in self.traces]}

    def save(self, path: str | Path) -> Path:
        return atomic_json(path, self.to_dict())


def _grad_x_input(lm: LoadedModel, probe: Probe, ids: list[list[int]]) -> list[np.ndarray]:
    """Gradient x input of the probe's logit at the last token, per token, for one right-padded batch."""
    input_ids, mask = pad_batch(ids, lm.tokenizer.pad_token_id, "right", lm.device)
    w = torch.as_tensor(probe.direction(), dtype=torch.float32, device=lm.device)  # raw-space weights
    point = probe.point.normalised(lm)
    got: list[torch.Tensor] = []

    def record(x):
        got.append(x)
        raise StopForward  # nothing after the probe's point is needed (run_batch catches this)

    with torch.enable_grad(), on_activation(lm, point, record):
        emb = lm.layout.embed(input_ids).detach().float().requires_grad_(True)
        run_batch(lm, None, mask, inputs_embeds=emb.to(lm.model.dtype))
        if not got:
            raise RiskscopeError(f"the forward never reached {point}")
        x = got[0]
        last = (mask.sum(1) - 1).long()
        feats = x[torch.arange(len(ids)), last] if probe.positions == "last" else \
            (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        (feats.float() @ w).sum().backward()
    gxi = (emb.grad * emb.detach()).sum(-1).cpu().numpy()  # (B, T)
    return [gxi[i, :len(r)] for i, r in enumerate(ids)]


def token_traces(
    lm: LoadedModel,
    probe: Probe,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    attribution: bool = True,
    batch_size: int = 8,
) -> TokenTraces:
    """Score every token position of ``texts`` with ``probe``; optionally add gradient x input.

    Args:
        lm: the model the probe was trained on.
        probe: a :class:`~riskscope.probes.Probe` on ``last`` or ``mean`` positions.
        texts: the texts to trace.
        labels: their labels, kept for display.
        attribution: also compute gradient x input of the last-token logit.
        batch_size: texts per forward.
    """
    probe = Probe.of(probe)
    if probe.positions not in ("last", "mean"):
        raise RiskscopeError(f"a token trace needs a probe on 'last' or 'mean' positions; probe {probe.name} reads "
                             f"token indices {list(probe.positions)}")
    probe.check(lm)
    texts = list(texts)
    if labels is not None and len(labels) != len(texts):
        raise RiskscopeError(f"{len(labels)} labels for {len(texts)} texts")
    ids = tokenize(lm, texts)
    if any(len(r) == 0 for r in ids):
        raise RiskscopeError("a text tokenises to nothing")
    if any(len(r) > lm.context_length for r in ids):
        raise RiskscopeError(f"a text is longer than the model context ({lm.context_length} tokens)")
    traces: list[TokenTrace] = []
    for s in range(0, len(texts), batch_size):
        chunk = ids[s:s + batch_size]
        input_ids, mask = pad_batch(chunk, lm.tokenizer.pad_token_id, "right", lm.device)
        with torch.inference_mode(), capture(lm, [probe.point], reduce="all", stop=True) as got:
            run_batch(lm, input_ids, mask)
        acts = next(iter(got.values())).float().cpu().numpy()  # (B, T, W)
        attr = _grad_x_input(lm, probe, chunk) if attribution else [None] * len(chunk)
        for i, row in enumerate(chunk):
            z = probe.logit(acts[i, :len(row)])
            with np.errstate(over="ignore"):
                prob = 1.0 / (1.0 + np.exp(-z))
            j = s + i
            traces.append(TokenTrace(texts[j], tuple(token_text(lm.tokenizer, t) for t in row), prob, z, attr[i],
                                     None if labels is None else int(labels[j])))
    return TokenTraces(probe=probe.name, traces=tuple(traces))


def pick_trace_texts(store, n_pairs: int = 3, seed: int = 0) -> tuple[list[str], list[int]]:
    """Both members of ``n_pairs`` random pairs of a store (risky first), for a trace figure."""
    rows = store.rows
    by_pair: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("pair_id") is not None:
            by_pair.setdefault(r["pair_id"], []).append(r)
    keys = sorted(k for k, v in by_pair.items() if len(v) == 2)
    if not keys:
        keys_rows = rows[: 2 * n_pairs]
        return [r["text"] for r in keys_rows], [int(r["label"]) for r in keys_rows]
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in rng.permutation(len(keys))[:n_pairs]:
        for r in sorted(by_pair[keys[i]], key=lambda r: -int(r["label"])):
            texts.append(r["text"])
            labels.append(int(r["label"]))
    return texts, labels


__all__ = ["TokenTrace", "TokenTraces", "pick_trace_texts", "token_traces"]
