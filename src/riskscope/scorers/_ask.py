"""Ask the model: zero-shot next-token baselines scored like the probes.

A template turns a scenario into a prompt whose next token answers the
question, e.g. ``"<scenario> The risk seems"`` followed by `` high`` or
`` low``. The score of a text is the log-odds
``logsumexp(log p(positive tokens)) - logsumexp(log p(negative tokens))``.
AUC and pair accuracy use these raw scores (no training at all); F1 and
accuracy use a threshold fitted on the training folds of the same grouped
folds the probes use (a one-feature logistic fit per outer fold), and the
zero-shot accuracy uses threshold 0 ("high" more likely than "low").

>>> AskTemplate("t", "{text} The risk seems").positive
(' high',)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .._io import atomic_json, json_float
from ..errors import RiskscopeError
from ..hooks import pad_batch, run_batch
from ..models import LoadedModel


@dataclass(frozen=True)
class AskTemplate:
    """A question to the model whose next token is the answer."""

    name: str
    """Short name shown in tables."""
    prompt: str
    """Prompt text with a ``{text}`` placeholder for the scenario."""
    positive: tuple[str, ...] = (" high",)
    """Answers meaning risky (their first tokens are used)."""
    negative: tuple[str, ...] = (" low",)
    """Answers meaning benign."""
    chat: bool = False
    """Wrap the prompt as a user message in the tokenizer's chat template (assistant turn opened)."""

    def __post_init__(self) -> None:
        if "{text}" not in self.prompt:
            raise RiskscopeError(f"template {self.name!r}: the prompt needs a {{text}} placeholder")
        object.__setattr__(self, "positive", tuple(self.positive))
        object.__setattr__(self, "negative", tuple(self.negative))
        if not self.positive or not self.negative:
            raise RiskscopeError(f"template {self.name!r}: give at least one positive and one negative answer")

    def render(self, lm: LoadedModel, text: str) -> list[int]:
        """Token ids of the prompt for ``text``."""
        body = self.prompt.replace("{text}", text)
        tok = lm.tokenizer
        if self.chat:
            if not getattr(tok, "chat_template", None):
                raise RiskscopeError(f"template {self.name!r} asks for a chat template, but the tokenizer of "
                                     f"{lm.model_id} has none; use a completion template")
            body = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                           add_generation_prompt=True)
            return list(tok([body], add_special_tokens=False)["input_ids"][0])
        return list(tok([body], add_special_tokens=True)["input_ids"][0])

    def answer_ids(self, lm: LoadedModel) -> tuple[list[int], list[int]]:
        """First-token ids of the positive and negative answers (must not overlap)."""
        def first(words):
            return sorted({int(lm.tokenizer([w], add_special_tokens=False)["input_ids"][0][0]) for w in words})
        pos, neg = first(self.positive), first(self.negative)
        if set(pos) & set(neg):
            raise RiskscopeError(f"template {self.name!r}: positive and negative answers share a first token")
        return pos, neg

    @classmethod
    def from_dict(cls, d: dict) -> "AskTemplate":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("positive", "negative"):
            if isinstance(known.get(k), str):
                known[k] = (known[k],)
        try:
            return cls(**known)
        except TypeError as e:
            raise RiskscopeError(f"bad template {d!r}: {e}") from None


DEFAULT_TEMPLATES: tuple[AskTemplate, ...] = (
    AskTemplate("risk_seems", "{text} The risk seems", (" high",), (" low",)),
    AskTemplate("chat_yes_no", "Scenario: {text}\nDoes this scenario involve a cybersecurity risk? "
                "Answer yes or no.", ("Yes", "yes"), ("No", "no"), chat=True),
)
"""The Mistral-7B probing study's completion probe (`` high`` vs `` low``) and a chat-template yes/no question."""


def ask_templates(lm: LoadedModel, templates: Sequence[AskTemplate]) -> tuple[AskTemplate, ...]:
    """The templates asked of ``lm``: with the built-in defaults, a chat template is left out when the
    tokenizer has none (base models); templates the user chose are kept (a chat one fails in one line)."""
    templates = tuple(templates)
    if templates != DEFAULT_TEMPLATES or getattr(lm.tokenizer, "chat_template", None):
        return templates
    return tuple(t for t in templates if not t.chat)


def load_templates(path: str | Path) -> tuple[AskTemplate, ...]:
    """Templates from a JSON file: a list of objects with name, prompt, positive, negative, chat."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RiskscopeError(f"{path}: no such template file") from None
    except json.JSONDecodeError as e:
        raise RiskscopeError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, list) or not data:
        raise RiskscopeError(f"{path}: expected a non-empty JSON list of templates")
    return tuple(AskTemplate.from_dict(d) for d in data)


def ask_scores(lm: LoadedModel, texts: Sequence[str], template: AskTemplate, *, batch_size: int = 16,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N,) log-odds of the positive over the negative answers as the next token."""
    pos, neg = template.answer_ids(lm)
    ids = [template.render(lm, t) for t in texts]
    if any(len(r) > lm.context_length for r in ids):
        raise RiskscopeError(f"a prompt of template {template.name!r} is longer than the model context")
    order = np.argsort([-len(r) for r in ids], kind="stable")
    out = np.zeros(len(texts))
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            rows = order[s:s + batch_size]
            x, mask = pad_batch([ids[i] for i in rows], lm.tokenizer.pad_token_id, "left", lm.device)
            lp = torch.log_softmax(run_batch(lm, x, mask, logits_to_keep=1).logits[:, -1].float(), -1)
            out[rows] = (torch.logsumexp(lp[:, pos], -1) - torch.logsumexp(lp[:, neg], -1)).double().cpu().numpy()
            if progress:
                progress(len(rows))
    return out




@dataclass(frozen=True, eq=False)
class AskResult:
    """One template's baseline, in the shape of a probe layer result (``hook`` is ``ask``)."""

    template: AskTemplate
    auc: float
    """ROC-AUC of the raw zero-shot scores."""
    auc_ci: tuple[float, float]
    """Bootstrap interval of the AUC, resampling pairs."""
    f1: float
    """F1 with the threshold fitted on each outer fold's training rows."""
    accuracy: float
    """Accuracy with that threshold."""
    pair_accuracy: float
    """Share of pairs whose risky text gets the higher score."""
    zero_shot_accuracy: float
    """Accuracy at log-odds 0 (positive answer more likely than negative), no fitting at all."""
    zero_shot_f1: float
    shuffled_auc: float
    """AUC against pair-shuffled labels (chance control)."""
    fold_auc: tuple[float, ...]
    answer_tokens: dict
    scores: np.ndarray = field(repr=False)
    """(N,) raw log-odds."""
    oof_scores: np.ndarray = field(repr=False)
    """(N,) fold-calibrated logits (what F1 and accuracy threshold at 0)."""

    @property
    def name(self) -> str:
        return f"ask:{self.template.name}"

    def to_dict(self, arrays: bool = False) -> dict:
        d = {"hook": "ask", "layer": None, "name": self.name, "n_texts": int(len(self.scores)),
             "template": asdict(self.template),
             "answer_tokens": self.answer_tokens, "auc": json_float(self.auc), "auc_ci": [json_float(x) for x in self.auc_ci],
             "f1": json_float(self.f1), "accuracy": json_float(self.accuracy), "pair_accuracy": json_float(self.pair_accuracy),
             "zero_shot_accuracy": json_float(self.zero_shot_accuracy), "zero_shot_f1": json_float(self.zero_shot_f1),
             "shuffled_auc": json_float(self.shuffled_auc), "fold_auc": [json_float(x) for x in self.fold_auc]}
        if arrays:
            d["scores"] = [json_float(x) for x in self.scores]
            d["oof_scores"] = [json_float(x) for x in self.oof_scores]
        return d


@dataclass(frozen=True, eq=False)
class AskEvaluation:
    """Every template's :class:`AskResult` on one dataset."""

    results: tuple[AskResult, ...]
    folds: np.ndarray = field(repr=False)
    model: str = ""
    seconds: float = 0.0

    def to_dict(self, arrays: bool = False) -> dict:
        return {"model": self.model, "seconds": round(self.seconds, 2),
                "results": [r.to_dict(arrays) for r in self.results]}

    def save(self, path: str | Path, arrays: bool = True) -> Path:
        return atomic_json(path, self.to_dict(arrays))


def _evaluate(template: AskTemplate, answer_tokens: dict, s: np.ndarray, y: np.ndarray, groups: np.ndarray,
              fold: np.ndarray, n_bootstrap: int, ci_level: float, seed: int) -> AskResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from ..probes import pair_accuracy, shuffle_labels
    from ..probes import auc_ci

    oof = np.zeros(len(s))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        if len(np.unique(y[train])) < 2:
            oof[test] = s[test]
            continue
        lr = LogisticRegression().fit(s[train, None], y[train])
        oof[test] = lr.decision_function(s[test, None])
    fold_auc = tuple(float(roc_auc_score(y[fold == f], s[fold == f])) if len(np.unique(y[fold == f])) == 2
                     else float("nan") for f in np.unique(fold))
    ys = shuffle_labels(y, groups, np.random.default_rng(seed + 7919))
    return AskResult(
        template=template, auc=float(roc_auc_score(y, s)), auc_ci=auc_ci(y, s, groups, n_bootstrap, ci_level, seed),
        f1=float(f1_score(y, oof > 0, zero_division=0.0)), accuracy=float(accuracy_score(y, oof > 0)),
        pair_accuracy=pair_accuracy(y, s, groups), zero_shot_accuracy=float(accuracy_score(y, s > 0)),
        zero_shot_f1=float(f1_score(y, s > 0, zero_division=0.0)), shuffled_auc=float(roc_auc_score(ys, s)),
        fold_auc=fold_auc, answer_tokens=answer_tokens, scores=s, oof_scores=oof)


def ask_baseline(
    lm: LoadedModel,
    texts: Sequence[str],
    labels: Sequence[int],
    groups: Sequence,
    templates: Sequence[AskTemplate] = DEFAULT_TEMPLATES,
    *,
    folds: int | np.ndarray = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> AskEvaluation:
    """Zero-shot baselines of every template, scored with the probes' folds and metrics.

    Args:
        lm: the model.
        texts, labels, groups: the dataset (labels 0/1, groups = pair ids).
        templates: questions to ask (default :data:`DEFAULT_TEMPLATES`).
        folds: fold id per row (e.g. the probes' ``ProbeEvaluation.folds``) or a number of grouped
            folds made as the probes make their outer folds (``group_folds(groups, folds, seed)``).
        seed, n_bootstrap, ci_level: as in :class:`~riskscope.probes.ProbeConfig`.
        batch_size: prompts per forward.
        progress: called with the number of prompts just scored.
    """
    from ..probes import group_folds

    t0 = time.perf_counter()
    y = np.asarray(labels).astype(int)
    groups = np.asarray([g if g is not None else f"row{i}" for i, g in enumerate(groups)])
    if not (len(texts) == len(y) == len(groups)):
        raise RiskscopeError(f"texts ({len(texts)}), labels ({len(y)}) and groups ({len(groups)}) differ in length")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise RiskscopeError("ask needs 0/1 labels with both classes present")
    if np.isscalar(folds) and int(folds) < 2:
        raise RiskscopeError(f"folds must be >= 2, got {folds}")
    fold = group_folds(groups, int(folds), seed) if np.isscalar(folds) else np.asarray(folds)
    if len(fold) != len(y):
        raise RiskscopeError(f"folds have {len(fold)} rows but the dataset has {len(y)}")
    results = []
    for t in templates:
        pos, neg = t.answer_ids(lm)
        tokens = {"positive": [lm.tokenizer.decode([i]) if hasattr(lm.tokenizer, "decode") else str(i) for i in pos],
                  "negative": [lm.tokenizer.decode([i]) if hasattr(lm.tokenizer, "decode") else str(i) for i in neg]}
        s = ask_scores(lm, texts, t, batch_size=batch_size, progress=progress)
        results.append(_evaluate(t, tokens, s, y, groups, fold, n_bootstrap, ci_level, seed))
    return AskEvaluation(results=tuple(results), folds=fold, model=lm.model_id, seconds=time.perf_counter() - t0)


__all__ = ["DEFAULT_TEMPLATES", "AskEvaluation", "AskResult", "AskTemplate", "ask_baseline", "ask_scores",
           "load_templates"]
