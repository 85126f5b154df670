"""SAE latents of whole texts: every token encoded the way the SAE was trained (special tokens first, never read).

:func:`text_windows` tokenises texts like the training windows (the tokenizer's own BOS, or the model's
BOS prepended when it adds none, then skipped); :func:`iter_text_latents` yields each text's
(trained-on tokens, latents) in batches, so a dataset of any size never holds (tokens x latents) at once;
:func:`pooled_latents` reduces them to one row per text (``mean``, ``max`` or ``last``) for statistics and
probes, with the raw activations pooled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..hooks import HookPoint, iter_captures, tokenize
from ..models import LoadedModel
from ._model import SparseAutoencoder
from ._source import Window, bos_id, special_tokens_added

POOLS = ("mean", "max", "last")


def text_windows(lm: LoadedModel, texts: Sequence[str], prepend_bos: bool = True) -> list[Window]:
    """One :class:`Window` per text (cut to the model's context), its special tokens marked as skipped."""
    lead, trail = special_tokens_added(lm)
    bos = bos_id(lm)
    out = []
    for i, ids in enumerate(tokenize(lm, list(texts))):
        head, body = list(ids[:lead]), list(ids[lead:len(ids) - trail])
        if not head and prepend_bos and bos is not None:
            head = [bos]
        body = body[:max(lm.context_length - len(head), 0)]
        if not body:
            raise RiskscopeError(f"text {i + 1} has no tokens to read")
        out.append(Window(tuple(head) + tuple(body), len(head)))
    return out


@dataclass(frozen=True, eq=False)
class TextLatents:
    """One text's trained-on tokens: ids, raw activations and SAE latents."""

    index: int
    """Position of the text in the input."""
    ids: tuple[int, ...]
    """Token ids read (special tokens dropped)."""
    x_TD: Tensor
    """(T, D) raw activations at the hook point."""
    z_TF: Tensor
    """(T, F) SAE latents."""


@torch.no_grad()
def iter_text_latents(lm: LoadedModel, sae: SparseAutoencoder, point: HookPoint, windows: Sequence[Window],
                      batch_size: int = 16) -> Iterator[TextLatents]:
    """Every window's trained-on tokens and their latents, longest windows first (batched forwards)."""
    point = point.normalised(lm)
    ids = [list(w.ids) for w in windows]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    for rows_b, mask, got in iter_captures(lm, ids, order, [point], "all", batch_size):
        x = got[point].to("cpu", torch.float32)
        for j, r in enumerate(rows_b):
            w = windows[int(r)]
            n = int(mask[j].sum())
            x_TD = x[j, w.skip:n]
            yield TextLatents(int(r), w.ids[w.skip:n], x_TD, sae.encode(x_TD))


@dataclass(frozen=True, eq=False)
class PooledLatents:
    """One row per text: raw activations and SAE latents pooled over its tokens, plus token firing counts."""

    pool: str
    """How tokens were pooled: ``mean``, ``max`` or ``last``."""
    x_ND: np.ndarray
    """(N, D) raw activations pooled (``max`` pools the raw activations by their mean)."""
    z_NF: np.ndarray
    """(N, F) latents pooled."""
    fires_F: np.ndarray
    """(F,) tokens on which each latent fired."""
    sum_F: np.ndarray
    """(F,) sum of each latent's activations over all tokens (``sum_F / fires_F``: its mean when it fires)."""
    n_tokens: int
    """Tokens read in all."""


def pooled_latents(lm: LoadedModel, sae: SparseAutoencoder, point: HookPoint, texts: Sequence[str],
                   pool: str = "mean", batch_size: int = 16, prepend_bos: bool = True) -> PooledLatents:
    """Pool every text's latents (and raw activations) over its trained-on tokens."""
    if pool not in POOLS:
        raise RiskscopeError(f"unknown pooling {pool!r}; use one of {', '.join(POOLS)}")
    windows = text_windows(lm, texts, prepend_bos)
    N = len(windows)
    x_ND = np.zeros((N, sae.d_in), np.float32)
    z_NF = np.zeros((N, sae.d_sae), np.float32)
    fires = torch.zeros(sae.d_sae, dtype=torch.int64)
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    n_tok = 0
    for t in iter_text_latents(lm, sae, point, windows, batch_size):
        fires += (t.z_TF > 0).sum(0)
        total += t.z_TF.sum(0, dtype=torch.float64)
        n_tok += len(t.ids)
        if pool == "last":
            x_ND[t.index], z_NF[t.index] = t.x_TD[-1].numpy(), t.z_TF[-1].numpy()
        else:
            x_ND[t.index] = t.x_TD.mean(0).numpy()
            z_NF[t.index] = (t.z_TF.mean(0) if pool == "mean" else t.z_TF.amax(0)).numpy()
    return PooledLatents(pool, x_ND, z_NF, fires.numpy(), total.numpy(), n_tok)


__all__ = ["POOLS", "PooledLatents", "TextLatents", "iter_text_latents", "pooled_latents", "text_windows"]
