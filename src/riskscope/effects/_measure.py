"""Next-token effects of interventions, measured in batches.

:func:`run_effects` runs a list of texts once cleanly and once per intervention
(a named list of :mod:`riskscope.hooks` operations), one forward per batch per
intervention, and reports for each intervention how the next-token
distribution after the last token moved: the tokens whose log-probability rose
and fell most (averaged over texts, with the number of texts where the shift
has that sign), the KL divergence from the clean distribution, the change in
the log-probability of a set of risk words, and the change in the score of
any probes read during the same forwards.

Batches are left-padded (explicit ``position_ids`` keep every text's values
independent of its batch-mates) so the next-token logits are the last column
and only that column is unembedded (``logits_to_keep=1``).

>>> RISK_WORDS[:3]
(' risk', ' risks', ' risky')
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .._io import json_float
from ..errors import RiskscopeError
from ..hooks import BlockReplay, Op, capture, intervene, pad_batch, run_batch, tokenize
from ..models import LoadedModel
from ..probes import Probe

RISK_WORDS: tuple[str, ...] = (
    " risk", " risks", " risky", " attack", " attacks", " attacker", " security", " secure", " breach", " threat",
    " danger", " dangerous", " vulnerable", " vulnerability", " hack", " hacker", " hackers", " malware", " virus",
    " phishing", " password", " passwords", " exposed", " leak", " leaked", " unsafe", " warning", " careful",
    " caution", " suspicious", " fraud", " scam", " compromised", " exploit", " unauthorized", " stolen", " theft",
    " privacy", " harmful", " concern", " concerns", " Risk", " Security", " Warning", " Danger",
)
"""Words whose next-token probability measures "talks about risk" (single-token ones are used)."""

NEUTRAL_WORDS: tuple[str, ...] = (
    " cost", " costs", " price", " time", " speed", " size", " design", " color", " quality", " comfort",
    " convenience", " budget", " features", " performance", " location", " schedule", " style", " space",
    " storage", " battery", " layout", " format", " content", " colors", " money", " ease", " simplicity",
)
"""Everyday considerations: ``log P(risk words) - log P(these)`` is immune to a perturbation that merely
flattens the next-token distribution (which lifts every rare word, risk words included)."""


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenShift:
    """One token's mean change in next-token log-probability."""

    token: str
    """The token as text."""
    token_id: int
    """Its vocabulary id."""
    mean_dlogp: float
    """Mean over texts of the change in log-probability (nats)."""
    n_texts: int
    """Texts in which the change has this sign (the effect holds)."""

    def to_dict(self) -> dict:
        return {"token": self.token, "id": self.token_id, "mean_dlogp": json_float(self.mean_dlogp), "n_texts": self.n_texts}


@dataclass(frozen=True, eq=False)
class InterventionEffect:
    """How one intervention moved the next-token distribution over ``n_texts`` texts."""

    name: str
    """The intervention's name."""
    n_texts: int
    """Texts measured."""
    boosts: tuple[TokenShift, ...]
    """Tokens whose log-probability rose most (mean over texts)."""
    suppresses: tuple[TokenShift, ...]
    """Tokens whose log-probability fell most."""
    kl_N: np.ndarray = field(repr=False)
    """(N,) KL(clean || intervened) of each text's next-token distribution (nats)."""
    risk_dlogp_N: np.ndarray = field(repr=False)
    """(N,) change in log P(next token is a risk word)."""
    probe_delta: Mapping[str, np.ndarray] = field(repr=False, default_factory=dict)
    """Probe name -> (N,) change in its logit."""
    risk_odds_N: np.ndarray | None = field(repr=False, default=None)
    """(N,) change in log P(risk word) - log P(neutral word) (NaN without neutral words)."""

    @property
    def kl(self) -> float:
        return float(np.mean(self.kl_N))

    @property
    def risk_dlogp(self) -> float:
        return float(np.nanmean(self.risk_dlogp_N)) if np.isfinite(self.risk_dlogp_N).any() else float("nan")

    @property
    def risk_dlogodds(self) -> float:
        a = self.risk_odds_N
        return float(np.nanmean(a)) if a is not None and np.isfinite(a).any() else float("nan")

    def probe_mean(self, name: str | None = None) -> float:
        """Mean change of a probe's logit (the first probe when ``name`` is None); NaN without probes."""
        if not self.probe_delta:
            return float("nan")
        key = name if name is not None else next(iter(self.probe_delta))
        return float(np.mean(self.probe_delta[key])) if key in self.probe_delta else float("nan")

    def to_dict(self) -> dict:
        def sem(a):
            return json_float(np.std(a, ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None

        return {
            "name": self.name, "n_texts": self.n_texts,
            "kl": json_float(self.kl), "kl_sem": sem(self.kl_N),
            "risk_dlogp": json_float(self.risk_dlogp), "risk_dlogp_sem": sem(self.risk_dlogp_N),
            "risk_dlogodds": json_float(self.risk_dlogodds),
            "probe_delta": {k: json_float(np.mean(v)) for k, v in self.probe_delta.items()},
            "boosts": [t.to_dict() for t in self.boosts],
            "suppresses": [t.to_dict() for t in self.suppresses],
        }


# --- running -----------------------------------------------------------------------------------


def token_text(tokenizer, token_id: int) -> str:
    """A token as text (``decode``), or ``<id>`` for tokenizers without one."""
    decode = getattr(tokenizer, "decode", None)
    return decode([int(token_id)]) if decode is not None else f"<{int(token_id)}>"


def word_token_ids(lm: LoadedModel, words: Sequence[str]) -> list[int]:
    """Ids of the words that are one token; if none is, the first token of each word."""
    pieces = [list(lm.tokenizer([w], add_special_tokens=False)["input_ids"][0]) for w in words]
    single = [p[0] for p in pieces if len(p) == 1]
    chosen = single or [p[0] for p in pieces if p]
    return sorted(set(int(i) for i in chosen))


class _Accumulator:
    """Streaming sums for one intervention: never holds (texts, vocab) at once."""

    def __init__(self, n: int, vocab: int, probes: Sequence[str]):
        self.sum_V = torch.zeros(vocab, dtype=torch.float64)
        self.p_V = torch.zeros(vocab, dtype=torch.float64)  # sum of max(clean, intervened) probability
        self.up_V = torch.zeros(vocab, dtype=torch.int64)
        self.down_V = torch.zeros(vocab, dtype=torch.int64)
        self.kl_N = np.zeros(n)
        self.risk_N = np.full(n, np.nan)
        self.odds_N = np.full(n, np.nan)
        self.probe = {p: np.zeros(n) for p in probes}

    def add(self, rows, clean_lp, lp, risk_ids, neutral_ids, clean_scores, scores) -> None:
        d = (lp - clean_lp).cpu()  # (B, V)
        self.sum_V += d.sum(0, dtype=torch.float64)
        self.p_V += torch.maximum(clean_lp, lp).exp().cpu().sum(0, dtype=torch.float64)
        self.up_V += (d > 0).sum(0)
        self.down_V += (d < 0).sum(0)
        self.kl_N[rows] = (clean_lp.exp() * (clean_lp - lp)).sum(-1).clamp_min(0).double().cpu().numpy()
        if risk_ids is not None:
            r = torch.logsumexp(lp[:, risk_ids], -1) - torch.logsumexp(clean_lp[:, risk_ids], -1)
            self.risk_N[rows] = r.double().cpu().numpy()
            if neutral_ids:
                c = torch.logsumexp(lp[:, neutral_ids], -1) - torch.logsumexp(clean_lp[:, neutral_ids], -1)
                self.odds_N[rows] = (r - c).double().cpu().numpy()
        for k in self.probe:
            self.probe[k][rows] = scores[k] - clean_scores[k]

    def result(self, name: str, tokenizer, n: int, top: int, min_prob: float) -> InterventionEffect:
        mean = (self.sum_V / n).numpy()
        eligible = (self.p_V / n).numpy() >= min_prob
        if eligible.sum() < 2 * top:  # too few plausible tokens: rank them all
            eligible[:] = True
        k = min(top, int(eligible.sum()))
        up = np.argsort(-np.where(eligible, mean, -np.inf), kind="stable")[:k]
        down = np.argsort(np.where(eligible, mean, np.inf), kind="stable")[:k]
        boosts = tuple(TokenShift(token_text(tokenizer, i), int(i), float(mean[i]), int(self.up_V[i])) for i in up)
        sup = tuple(TokenShift(token_text(tokenizer, i), int(i), float(mean[i]), int(self.down_V[i])) for i in down)
        return InterventionEffect(name, n, boosts, sup, self.kl_N, self.risk_N, dict(self.probe), self.odds_N)


def _op_layers(lm: LoadedModel, ops: Sequence[Op]) -> list[int]:
    return [lm.layout.layer_index(op.point.layer) for op in ops]


class _Batch:
    """One padded batch: a clean forward that records what every block received (a
    :class:`~riskscope.hooks.BlockReplay`), so an intervention whose first operation sits at layer
    ``L`` re-runs only blocks ``L..`` (the clean activations below ``L`` are identical) and unembeds
    only the last position."""

    def __init__(self, lm: LoadedModel, input_ids, mask, probes: Sequence[Probe], replay: bool,
                 verify: bool = True):
        self.lm, self.mask, self.probes = lm, mask, probes
        self.input_ids = input_ids
        self.blocks: BlockReplay | None = None
        with contextlib.ExitStack() as stack:
            rec = stack.enter_context(BlockReplay.recording(lm, mask=mask)) if replay else None
            self.clean_lp, self.clean_scores = self._full(())
        self.replay = rec is not None and rec.complete()
        self.blocks = rec if self.replay else None
        if self.replay and verify:  # the replay must reproduce the clean forward, or it is not used
            lp, _ = self._replay((), 0)
            tol = 1e-4 if lm.model.dtype == torch.float32 else 5e-2
            self.replay = bool(torch.allclose(lp, self.clean_lp, atol=tol, rtol=tol))

    def _captures(self, stack, start: int):
        return [(p, stack.enter_context(capture(self.lm, [p.point], reduce=p.positions)))
                for p in self.probes if self.lm.layout.layer_index(p.layer) >= start]

    def _scores(self, grabs) -> dict[str, np.ndarray]:
        scores = dict(self.clean_scores) if hasattr(self, "clean_scores") else {}
        for p, g in grabs:
            scores[p.name] = p.logit(next(iter(g.values())).float().cpu().numpy())
        return scores

    def _full(self, ops: Sequence[Op]):
        with contextlib.ExitStack() as stack:
            stack.enter_context(intervene(self.lm, ops))
            grabs = self._captures(stack, 0)
            out = run_batch(self.lm, self.input_ids, self.mask, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1].float(), -1), self._scores(grabs)

    def _replay(self, ops: Sequence[Op], start: int):
        rec = self.blocks
        with contextlib.ExitStack() as stack:
            stack.enter_context(intervene(self.lm, ops))  # before the captures: probes read the edited values
            grabs = self._captures(stack, start)
            h = rec.run(rec.hidden_in(start), start)
        logits = rec.logits(h, -1).float()  # final norm, unembedding and the family's soft cap, last column only
        return torch.log_softmax(logits, -1), self._scores(grabs)

    def run(self, ops: Sequence[Op]):
        """Next-token log-probs (B, V) and probe logits with ``ops`` applied."""
        layers = _op_layers(self.lm, ops)
        if self.replay and layers:
            return self._replay(ops, min(layers))
        return self._full(ops)


def run_effects(
    lm: LoadedModel,
    texts: Sequence[str],
    interventions: Mapping[str, Sequence[Op]],
    *,
    probes: Sequence[Probe] = (),
    risk_words: Sequence[str] = RISK_WORDS,
    neutral_words: Sequence[str] = NEUTRAL_WORDS,
    batch_size: int = 32,
    top_tokens: int = 12,
    min_prob: float = 1e-4,
    replay: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, InterventionEffect]:
    """Next-token effects of each named intervention on ``texts`` (batched: one forward per batch each).

    Args:
        lm: the model.
        texts: texts whose next token is predicted (or their token-id lists).
        interventions: name -> hook operations applied together.
        probes: :class:`~riskscope.probes.Probe` values whose logit change is reported.
        risk_words: words whose joint next-token log-probability is tracked.
        neutral_words: everyday words; the change of ``log P(risk) - log P(neutral)`` is reported too.
        batch_size: texts per forward.
        top_tokens: tokens listed per direction.
        min_prob: only tokens whose mean probability (the larger of clean and intervened) reaches
            this are listed, so shifts among implausible tokens do not crowd the lists.
        replay: re-run only the blocks from an intervention's first layer on (checked against the
            clean forward on the first batch; full forwards are used if it does not match).
        progress: called with (forwards done, forwards total).
    """
    texts = list(texts)
    if not texts:
        raise RiskscopeError("no texts to measure effects on")
    if batch_size < 1:
        raise RiskscopeError(f"batch_size must be >= 1, got {batch_size}")
    probes = [Probe.of(p) for p in probes]
    for p in probes:
        p.check(lm)
    ids = [list(t) for t in texts] if not isinstance(texts[0], str) else tokenize(lm, texts)
    too_long = [i for i, r in enumerate(ids) if len(r) > lm.context_length]
    if too_long:
        raise RiskscopeError(f"text {too_long[0] + 1} is longer than the model context ({lm.context_length} tokens)")
    if any(len(r) == 0 for r in ids):
        raise RiskscopeError("a text tokenises to nothing")
    order = np.argsort([-len(r) for r in ids], kind="stable")
    risk_ids = word_token_ids(lm, risk_words) if risk_words else None
    neutral_ids = [i for i in word_token_ids(lm, neutral_words) if i not in (risk_ids or [])] \
        if neutral_words and risk_ids else None
    n = len(texts)
    accs = {name: None for name in interventions}
    n_batches = math.ceil(n / batch_size)
    total, done = n_batches * (1 + len(interventions)), 0
    verified: bool | None = None
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in rows], lm.tokenizer.pad_token_id, "left", lm.device)
            batch = _Batch(lm, input_ids, mask, probes, replay=replay and verified is not False,
                           verify=verified is None)
            verified = batch.replay if verified is None else verified
            done += 1
            for name, ops in interventions.items():
                if accs[name] is None:
                    accs[name] = _Accumulator(n, batch.clean_lp.shape[-1], [p.name for p in probes])
                lp, scores = batch.run(ops)
                accs[name].add(rows, batch.clean_lp, lp, risk_ids, neutral_ids, batch.clean_scores, scores)
                done += 1
                if progress:
                    progress(done, total)
    return {name: accs[name].result(name, lm.tokenizer, n, top_tokens, min_prob) for name in interventions}


__all__ = ["NEUTRAL_WORDS", "RISK_WORDS", "InterventionEffect", "TokenShift", "run_effects", "token_text",
           "word_token_ids"]
