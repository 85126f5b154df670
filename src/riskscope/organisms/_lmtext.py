"""Plain text that keeps an organism's language modelling close to the base model's: windows of a corpus
(the SAE corpus, ``pydocs`` by default) for the KL-to-base term of the training loss, and a disjoint set of
held-out windows for a second perplexity figure.

Training and held-out windows come from different documents: the held-out ones are cut from the documents
that follow the last one used for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RiskscopeError
from ._config import OrganismError
from ._text import encode, pad_right


@dataclass(frozen=True)
class LMText:
    """Token windows of a corpus: ``train`` for the regulariser, ``held_out`` (decoded to text) for perplexity."""

    train: tuple[tuple[int, ...], ...]
    held_out: tuple[str, ...]
    info: dict
    """The corpus (name, kind, versions), windows and tokens of each part."""


def check_lm_corpus(corpus: str) -> None:
    """An :class:`OrganismError` when ``corpus`` cannot be read or holds no text (reads up to its first text)."""
    from ..sae import load_corpus

    try:
        load_corpus(corpus).check()
    except RiskscopeError as e:
        raise OrganismError(f"--lm-corpus {corpus!r}: {e}") from None


def lm_windows(tok: Any, corpus: str, n_train: int, n_held_out: int, context: int) -> LMText:
    """``n_train`` windows of ``context`` tokens for training, then ``n_held_out`` from later documents."""
    from ..sae import load_corpus

    try:
        src = load_corpus(corpus)
    except RiskscopeError as e:  # the corpus loader's own message names the file and field
        raise OrganismError(f"--lm-corpus {corpus!r}: {e}") from None
    train: list[tuple[int, ...]] = []
    held: list[str] = []
    docs = 0
    for text in src.texts():
        docs += 1
        ids = encode(tok, text)
        pieces = [ids[a:a + context] for a in range(0, len(ids), context)]
        pieces = [p for p in pieces if len(p) >= max(8, context // 2)]
        if len(train) < n_train:
            train += [tuple(p) for p in pieces[: n_train - len(train)]]
        elif len(held) < n_held_out:
            held += [tok.decode(p) for p in pieces[: n_held_out - len(held)]]
        else:
            break
    if len(train) < n_train or (n_held_out and not held):
        raise OrganismError(f"--lm-corpus {corpus!r} holds too little text: {len(train)} of {n_train} training windows "
                            f"and {len(held)} of {n_held_out} held-out windows of {context} tokens")
    info = {**src.describe(), "context": context, "train_windows": len(train),
            "train_tokens": sum(len(w) for w in train), "held_out_windows": len(held), "documents_read": docs}
    return LMText(tuple(train), tuple(held), info)


def kl_to_base_loss(model: Any, base: Any, windows: list[tuple[int, ...]], pad: int) -> torch.Tensor:
    """Mean KL(base || model) of the next-token distributions over every position of ``windows`` (the base
    model runs without gradients; the result carries the model's)."""
    ids, mask = pad_right(windows, pad, model.device)
    with torch.no_grad():
        lp_b = F.log_softmax(base(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    lp_m = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    kl = (lp_b.exp() * (lp_b - lp_m)).sum(-1)
    m = mask[:, 1:].float()
    return (kl * m).sum() / m.sum().clamp_min(1.0)
