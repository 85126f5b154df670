"""A cheap check that texts can fit a model's context, made before any text is tokenised or run.

No token of a tokenizer spans more characters than its longest vocabulary string, so a
text of ``c`` characters has at least ``c / max_token_chars`` tokens. A text whose bound
already exceeds the context is refused without tokenising it (a 1,000,000-character text
costs the tokenizer about a second, and a forward far more); the exact count is left to
the caller's tokenisation. The bound holds for tokenizers that keep every character of
the (normalised) text, as byte-level BPE and SentencePiece tokenizers do.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import DatasetError
from ._datasets import Dataset


def max_token_chars(tokenizer) -> int | None:
    """The most characters one token of ``tokenizer`` can stand for (its longest vocabulary string),
    or ``None`` when the tokenizer does not list its vocabulary."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if not callable(get_vocab):
        return None
    try:
        vocab = get_vocab()
    except NotImplementedError:
        return None
    longest = max((len(t) for t in vocab if isinstance(t, str)), default=0)
    return longest or None


def _normalised_length(tokenizer, text: str) -> int:
    """Length of ``text`` after the tokenizer's normaliser (NFC and the like may shorten it); cheap, linear."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    return len(text) if normalizer is None else len(normalizer.normalize_str(text))


def check_text_lengths(tokenizer, texts: Sequence[str] | Dataset, context_length: int, where: str,
                       ids: Sequence[str] | None = None, fix: str = "shorten it") -> None:
    """Refuse, with :class:`DatasetError` naming ``where``, the row and its id, a text that cannot fit
    ``context_length`` tokens, without tokenising it; texts that might fit pass (their exact count is the
    caller's tokenisation). ``texts`` may be a :class:`Dataset` (its ids are used) or strings with ``ids``.

    Tokenizers that do not list their vocabulary cannot be bounded: every text passes.
    """
    if isinstance(texts, Dataset):
        ids, texts = texts.ids, texts.texts
    longest = max_token_chars(tokenizer)
    if longest is None:
        return
    for i, text in enumerate(texts):
        if len(text) <= context_length * longest:  # might fit: no need to look closer
            continue
        least = -(-_normalised_length(tokenizer, text) // longest)
        if least > context_length:
            name = f" (id {ids[i]!r})" if ids is not None else ""
            raise DatasetError(f"{where}: row {i + 1}{name} has {len(text):,} characters, so at least {least:,} "
                               f"tokens (no token spans more than {longest} characters), more than the model "
                               f"context of {context_length:,}; {fix}")


__all__ = ["check_text_lengths", "max_token_chars"]
