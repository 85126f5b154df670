"""Where training activations come from: an activation store on disk, or the live model over a corpus.

Both hand the trainer *blocks*: (n, D) float32 activations of one store chunk, or of one
group of corpus windows run through the model, never more than one block in memory. Block
``g`` is a fixed function of the inputs (wrapping around when the data runs out), so a
resumed run reads exactly the blocks an uninterrupted one would.

Excluded from training: padding (never stored or captured), and the special tokens a
tokenizer adds itself (BOS) or that riskscope prepends (``prepend_bos``, as SAELens does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from ..data import Store
from ..errors import RiskscopeError, StoreError
from ..hooks import HookPoint, iter_captures, tokenize
from ..models import LoadedModel
from ._corpus import Corpus

MIN_WINDOW = 4  # windows shorter than this (doc tails) are dropped


def special_tokens_added(lm: LoadedModel) -> tuple[int, int]:
    """How many tokens the tokenizer adds itself before and after a text (BOS / EOS), from a probe."""
    tok = lm.tokenizer
    probe = "The quick brown fox"
    with_sp = list(tok([probe], add_special_tokens=True)["input_ids"][0])
    without = list(tok([probe], add_special_tokens=False)["input_ids"][0])
    for lead in range(len(with_sp) - len(without) + 1):
        if with_sp[lead:lead + len(without)] == without:
            return lead, len(with_sp) - lead - len(without)
    return 0, 0


def bos_id(lm: LoadedModel) -> int | None:
    value = getattr(lm.tokenizer, "bos_token_id", None)
    return int(value) if isinstance(value, int) else None


@dataclass(frozen=True)
class Window:
    """One training sequence: token ids, of which the first ``skip`` are special (never trained on)."""

    ids: tuple[int, ...]
    skip: int


def corpus_windows(lm: LoadedModel, corpus: Corpus, context: int, prepend_bos: bool = True,
                   group: int = 64) -> Iterator[Window]:
    """Cut each text into windows of at most ``context`` tokens, special tokens first."""
    lead, trail = special_tokens_added(lm)
    bos = bos_id(lm)
    texts = corpus.texts()
    while True:
        batch = list(itertools.islice(texts, group))
        if not batch:
            return
        for ids in tokenize(lm, batch):
            head = ids[:lead]
            body = ids[lead:len(ids) - trail]
            if not head and prepend_bos and bos is not None:
                head = [bos]
            room = context - len(head)
            if room < MIN_WINDOW:
                raise RiskscopeError(f"context {context} leaves no room for text after {len(head)} special token(s)")
            for a in range(0, len(body), room):
                piece = body[a:a + room]
                if len(piece) >= MIN_WINDOW:
                    yield Window(tuple(head) + tuple(piece), len(head))


def capture_windows(lm: LoadedModel, point: HookPoint, windows: Sequence[Window], batch_size: int) -> Tensor:
    """(n, D) float32 activations at ``point`` of every trained-on token of ``windows``, in window order."""
    if not windows:
        return torch.empty(0, point.width(lm))
    ids = [list(w.ids) for w in windows]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    parts: dict[int, Tensor] = {}
    for rows_b, mask, got in iter_captures(lm, ids, order, [point], "all", batch_size):
        x = got[point.normalised(lm)]
        keep = mask.bool().clone()
        for j, r in enumerate(rows_b):
            keep[j, :windows[r].skip] = False
        for j, r in enumerate(rows_b):
            parts[int(r)] = x[j][keep[j]].to("cpu", torch.float32)
    return torch.cat([parts[i] for i in range(len(windows))])


class LiveSource:
    """Blocks of activations captured from ``lm`` over a corpus; the first ``holdout`` windows are kept
    out of training for evaluation."""

    def __init__(self, lm: LoadedModel, point: HookPoint, corpus: Corpus, context: int = 128,
                 batch_size: int = 16, block_tokens: int = 65_536, holdout: int = 32, prepend_bos: bool = True):
        self.lm, self.point, self.corpus = lm, point.normalised(lm), corpus
        self.context, self.batch_size, self.holdout, self.prepend_bos = context, batch_size, holdout, prepend_bos
        self.per_block = max(1, block_tokens // context)
        self.d_in = point.width(lm)

    def _windows(self) -> Iterator[Window]:
        return corpus_windows(self.lm, self.corpus, self.context, self.prepend_bos)

    def eval_windows(self) -> list[Window]:
        return list(itertools.islice(self._windows(), self.holdout))

    def check(self) -> None:
        """Fail before any work when the corpus yields no training window."""
        self.corpus.check()
        if next(itertools.islice(self._windows(), self.holdout, None), None) is None:
            raise RiskscopeError(f"corpus {self.corpus.name!r} yields no training text after the {self.holdout} "
                                 f"held-out windows; give a larger corpus")

    def blocks(self, start: int = 0) -> Iterator[tuple[int, Tensor]]:
        """``(block index, activations)`` from block ``start`` on, forever (the corpus wraps around); blocks
        before ``start`` are skipped without running the model."""
        g = 0
        while True:
            it = itertools.islice(self._windows(), self.holdout, None)
            n_pass = 0
            while chunk := list(itertools.islice(it, self.per_block)):
                n_pass += 1
                if g >= start:
                    yield g, capture_windows(self.lm, self.point, chunk, self.batch_size)
                g += 1
            if n_pass == 0:
                raise RiskscopeError(f"corpus {self.corpus.name!r} yields no training text")

    def describe(self) -> dict:
        return {"kind": "live", "corpus": self.corpus.describe(), "context": self.context,
                "prepend_bos": self.prepend_bos, "holdout_windows": self.holdout,
                "capture_dtype": str(self.lm.model.dtype).replace("torch.", "")}  # part of the resume key


class StoreSource:
    """Blocks of activations read from an activation store written with ``positions="all"``, one chunk at a
    time; rows whose index is a multiple of ``holdout_every`` are kept out of training for evaluation."""

    def __init__(self, store: Store, point: HookPoint | str, lead: int = 0, trail: int = 0,
                 holdout_every: int = 20):
        key = str(point)
        if store.manifest.get("positions") != "all":
            raise StoreError(f"{store.root} holds {store.manifest.get('positions')!r} positions; an SAE needs every "
                             f"token: re-cache with --positions all")
        if key not in store.manifest["points"]:
            raise StoreError(f"{store.root} has no point {key}; it holds {', '.join(store.manifest['points'])}")
        self.store, self.key, self.lead, self.trail = store, key, lead, trail
        self.holdout_every = holdout_every
        self.d_in = int(store.manifest["widths"][key])
        self.n_chunks = int(store.manifest["n_chunks"])

    def check(self) -> None:
        if not any(i % self.holdout_every for i in range(int(self.store.manifest["n_rows"]))):
            raise StoreError(f"{self.store.root} has too few rows to hold some out for evaluation")

    def eval_texts(self) -> list[str]:
        return [r["text"] for r in self.store.rows if r["index"] % self.holdout_every == 0]

    def train_texts(self) -> list[str]:
        return [r["text"] for r in self.store.rows if r["index"] % self.holdout_every != 0]

    def read_block(self, c: int) -> Tensor:
        path = self.store.root / "chunks" / f"{c:06d}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as f:
                idx = f.get_tensor("row_index")
                off = f.get_tensor("token_offsets")
                x = f.get_tensor(self.key)
        except Exception as e:  # a torn or foreign chunk
            raise StoreError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
        keep = torch.zeros(x.shape[0], dtype=torch.bool)
        for j, row in enumerate(idx.tolist()):
            if row % self.holdout_every:
                a, b = int(off[j]) + self.lead, int(off[j + 1]) - self.trail
                if b > a:
                    keep[a:b] = True
        return x[keep].float()

    def blocks(self, start: int = 0) -> Iterator[tuple[int, Tensor]]:
        g = start
        while True:
            yield g, self.read_block(g % self.n_chunks)
            g += 1

    def describe(self) -> dict:
        return {"kind": "store", "store": str(self.store.root), "point": self.key,
                "fingerprint": self.store.manifest.get("fingerprint"), "holdout_every": self.holdout_every,
                "special_tokens_dropped": [self.lead, self.trail]}


__all__ = ["LiveSource", "StoreSource", "Window", "bos_id", "capture_windows", "corpus_windows",
           "special_tokens_added"]
