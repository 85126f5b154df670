"""Checks on texts before any forward: every text has words, and fits the model's context.

One place for these checks, below every scorer, so that each caller of :func:`capture_texts`,
:func:`iter_captures` or :func:`run_texts` gets them: an empty or whitespace-only text is an
error naming its index; a text longer than the model's context is an error naming its index
and token count, or, when the caller passes ``truncate=True``, is cut to its first
``context_length`` tokens and reported in :attr:`CheckedTexts.truncated`.

>>> class Tok:
...     def __call__(self, texts, add_special_tokens=True):
...         return {"input_ids": [[ord(c) for c in t] for t in texts]}
>>> class LM:
...     tokenizer, context_length = Tok(), 4
>>> check_texts(LM(), ["abc", "abcdef"], truncate=True).truncated
(1,)
>>> check_texts(LM(), ["abc", "  "])
Traceback (most recent call last):
...
riskscope.errors.RiskscopeError: text at index 1 is empty or only whitespace; remove it or give it some words
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import RiskscopeError
from ._batch import tokenize


@dataclass(frozen=True)
class CheckedTexts:
    """Token ids of texts that passed :func:`check_texts`, and what was cut to fit."""

    ids: list[list[int]]
    """Token ids of each text, in input order (cut to the context where ``truncated`` says)."""
    n_tokens: tuple[int, ...]
    """Token count of each text before any cut."""
    truncated: tuple[int, ...] = ()
    """Indices of the texts cut to the model's first ``context_length`` tokens."""


def check_token_ids(lm, ids: Sequence[Sequence[int]], truncate: bool = False, what: str = "text",
                    index: Sequence[int] | None = None) -> CheckedTexts:
    """Check token-id rows against ``lm.context_length``: none empty, none longer (or cut, with ``truncate``).

    ``what`` names a row in errors (``text``, ``row``); ``index`` gives the index to name for each row
    (default: its position in ``ids``).
    """
    limit = int(lm.context_length)
    out: list[list[int]] = []
    cut: list[int] = []
    for k, row in enumerate(ids):
        i = k if index is None else int(index[k])
        row = list(row)
        if not row:
            raise RiskscopeError(f"{what} at index {i} has no tokens; remove it or give it some words")
        if len(row) > limit:
            if not truncate:
                raise RiskscopeError(f"{what} at index {i} has {len(row)} tokens, more than the model's context of "
                                     f"{limit}; shorten it (from Python, truncate=True keeps its first {limit} "
                                     f"tokens)")
            row = row[:limit]
            cut.append(i)
        out.append(row)
    return CheckedTexts(ids=out, n_tokens=tuple(len(r) for r in ids), truncated=tuple(cut))


def check_texts(lm, texts: Sequence[str], truncate: bool = False) -> CheckedTexts:
    """Tokenise ``texts`` after checking each is a string with words; then :func:`check_token_ids`.

    Raises :class:`~riskscope.errors.RiskscopeError` naming the first bad text's index.
    """
    if isinstance(texts, (str, bytes)):
        raise RiskscopeError("texts must be a list of strings, got a single string; wrap it in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RiskscopeError(f"text at index {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise RiskscopeError(f"text at index {i} is empty or only whitespace; remove it or give it some words")
    if not texts:
        return CheckedTexts(ids=[], n_tokens=())
    return check_token_ids(lm, tokenize(lm, texts), truncate)


__all__ = ["CheckedTexts", "check_texts", "check_token_ids"]
