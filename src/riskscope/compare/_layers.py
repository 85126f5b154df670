"""Layer similarity of two models on the same texts: stores cached per model, the matrix, its baselines.

``compare_layers(lm_a, lm_b, data, out_dir, cfg)`` caches one store per model (one row per
text: the last token's or the mean activation, so it works across tokenizers) under
``out_dir/stores/``, plus one of a randomly initialised copy of A, then computes the
layers(A) x layers(B) matrix with its shuffled-rows null, and the same matrix with A
replaced by its random-init copy. ``compare_sources`` does the computing part for any two
sources (stores or arrays). Results are :class:`LayerComparison` values, saved as JSON.

>>> import numpy as np
>>> from riskscope.compare import ArraySource
>>> X = np.random.default_rng(0).normal(size=(30, 4))
>>> m = compare_sources(ArraySource({"x": X}), ArraySource({"y": 2 * X}), LayerCompareConfig(n_perm=9))
>>> round(float(m.values_AB[0, 0]), 6), float(m.p_AB[0, 0])
(1.0, 0.1)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..data import CacheConfig, Dataset, cache_activations, check_store
from ..errors import RiskscopeError
from ..hooks import HOOKS, HookPoint
from ..models import LoadedModel
from ..sae import random_init_copy
from ._cka import MIN_ROWS_DEBIASED, cka_matrix
from ._result import SimilarityMatrix
from ._rsa import MIN_ROWS_RSA, rsa_matrix
from ._feature_run import same_tokenizer
from ._sources import Source, StoreSource, TokenSource
from ._svcca import MIN_ROWS_SVCCA, svcca_matrix

Metric = Literal["cka", "svcca", "rsa"]
MIN_ROWS = {"cka": MIN_ROWS_DEBIASED, "svcca": MIN_ROWS_SVCCA, "rsa": MIN_ROWS_RSA}
FORMAT = "riskscope-compare-layers/1"
RANDOM_INIT = "random-init"
"""Model B given as this name: a randomly initialised copy of A (another seed than the baseline's)."""


@dataclass(frozen=True)
class LayerCompareConfig:
    """How to compare two models layer by layer."""

    metric: Metric = "cka"
    """cka (debiased linear CKA), svcca (99 % variance, mean canonical correlation) or rsa (Spearman of RDMs)."""
    hook: str = "resid_post"
    """Hook compared at every layer."""
    readout: Literal["last", "mean", "tokens"] = "mean"
    """Rows: one per text (the last token's activation or the mean over the text's tokens), or ``tokens``: every
    token of every text but its first (one tokenizer only)."""
    n_perm: int = 100
    """Shuffles of B's rows behind each cell's null and p-value (0: none)."""
    block: int = 256
    """Rows per block of the streamed CKA (sets its memory)."""
    keep: float = 0.99
    """Variance SVCCA keeps."""
    debiased: bool = True
    """Debiased (unbiased-HSIC) CKA; False for the classic biased estimator."""
    seed: int = 0
    """Seed of the shuffles and of the random-init copy."""
    random_init: bool = True
    """Also compare a randomly initialised copy of A with B (the random-network baseline)."""
    batch_size: int = 16
    """Texts per forward pass when caching."""

    def __post_init__(self) -> None:
        if self.metric not in MIN_ROWS:
            raise RiskscopeError(f"--metric must be cka, svcca or rsa, got {self.metric!r}")
        if self.hook not in HOOKS:
            raise RiskscopeError(f"--hook must be one of {', '.join(HOOKS)}, got {self.hook!r}")
        if self.readout not in ("last", "mean", "tokens"):
            raise RiskscopeError(f"--readout must be last, mean or tokens, got {self.readout!r}")
        if self.n_perm < 0 or self.block < 2 or self.batch_size < 1:
            raise RiskscopeError("--perms must be >= 0, --block >= 2 and --batch-size >= 1")
        if not 0 < self.keep <= 1:
            raise RiskscopeError(f"--keep must be in (0, 1], got {self.keep}")

    def check_rows(self, n: int, where: str = "the dataset") -> None:
        """Refuse fewer texts than the metric needs."""
        need = MIN_ROWS[self.metric]
        if n < need:
            raise RiskscopeError(f"{where} has {n} texts; {self.metric} needs at least {need}")


@dataclass(frozen=True)
class LayerComparison:
    """A layer comparison: model names, the main matrix and the random-init baseline."""

    config: LayerCompareConfig
    model_a: str
    model_b: str
    main: SimilarityMatrix
    """Layers of A x layers of B, with the shuffled-rows null per cell."""
    random_init: SimilarityMatrix | None = None
    """Layers of a random-init copy of A x layers of B (same null), or None."""
    info: dict = field(default_factory=dict)
    """Dataset, tokenizers, stores, seconds."""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "config": asdict(self.config), "model_a": self.model_a, "model_b": self.model_b,
                "main": self.main.to_dict(), "random_init": self.random_init.to_dict() if self.random_init else None,
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict, where: str = "comparison.json") -> "LayerComparison":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RiskscopeError(f"{where}: not a riskscope layer comparison (format {FORMAT!r})")
        try:
            known = LayerCompareConfig.__dataclass_fields__
            cfg = LayerCompareConfig(**{k: v for k, v in (d.get("config") or {}).items() if k in known})
            return cls(cfg, str(d["model_a"]), str(d["model_b"]), SimilarityMatrix.from_dict(d["main"]),
                       SimilarityMatrix.from_dict(d["random_init"]) if d.get("random_init") else None,
                       dict(d.get("info") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise RiskscopeError(f"{where}: field {e} missing or malformed") from None

    def save(self, path: str | Path) -> Path:
        from .._io import atomic_json

        return atomic_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "LayerComparison":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")), str(p))
        except json.JSONDecodeError as e:
            raise RiskscopeError(f"{p}: not valid JSON ({e})") from None


def compare_sources(a: Source, b: Source, cfg: LayerCompareConfig,
                    progress: Callable[[int, int], None] | None = None) -> SimilarityMatrix:
    """The ``cfg.metric`` matrix of two sources on the same rows, with ``cfg.n_perm`` shuffles."""
    cfg.check_rows(min(a.n_rows, b.n_rows), f"{a.name}")
    if cfg.metric == "cka":
        return cka_matrix(a, b, cfg.debiased, cfg.block, cfg.n_perm, cfg.seed, progress)
    if cfg.metric == "svcca":
        return svcca_matrix(a, b, cfg.keep, cfg.n_perm, cfg.seed, progress)
    return rsa_matrix(a, b, cfg.n_perm, cfg.seed, progress)


def check_layers(lm: LoadedModel, layers: list[int] | None, name: str) -> list[int]:
    """Every layer of ``lm`` (or ``layers``, negative from the end), refusing one the model does not have."""
    n = lm.n_layers
    if layers is None:
        return list(range(n))
    bad = [x for x in layers if not -n <= x < n]
    if bad:
        raise RiskscopeError(f"--layers: model {name} has {n} layers (0..{n - 1}); it has no layer {bad[0]}")
    return sorted({x % n for x in layers})


def _cache(lm: LoadedModel, data: Dataset, out: Path, layers: list[int], cfg: LayerCompareConfig,
           progress: Callable[[str, int, int], None] | None, label: str) -> StoreSource:
    ccfg = CacheConfig(points=tuple(HookPoint(cfg.hook, i) for i in layers),
                       positions="all" if cfg.readout == "tokens" else cfg.readout, batch_size=cfg.batch_size)
    check_store(lm, data, out, ccfg)
    done = [0]

    def step(k: int, total: int) -> None:
        done[0] += k
        if progress is not None:
            progress(f"caching {label}", done[0], total)

    cache_activations(lm, data, out, ccfg, progress=step)
    keys = [str(HookPoint(cfg.hook, i)) for i in layers]
    return TokenSource(out, keys, name=label) if cfg.readout == "tokens" else StoreSource(out, keys, name=label)


def compare_layers(lm_a: LoadedModel, lm_b: LoadedModel | str, data: Dataset, out_dir: str | Path,
                   cfg: LayerCompareConfig, layers_a: list[int] | None = None, layers_b: list[int] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> LayerComparison:
    """Cache both models (and A's random-init copy) on ``data`` under ``out_dir/stores`` and compare them.

    ``lm_b`` may be :data:`RANDOM_INIT` for a random-init copy of A (seed ``cfg.seed + 1``). Every check
    (layers, row count) runs before the first forward pass. ``progress(stage, done, total)``.
    """
    cfg.check_rows(len(data.rows), f"dataset {data.name}")
    if isinstance(lm_b, str):
        if lm_b != RANDOM_INIT:
            raise RiskscopeError(f"model B must be a loaded model or {RANDOM_INIT!r}, got {lm_b!r}")
        lm_b = random_init_copy(lm_a, cfg.seed + 1)
    la, lb = check_layers(lm_a, layers_a, lm_a.model_id), check_layers(lm_b, layers_b, lm_b.model_id)
    same_tok = same_tokenizer(lm_a, lm_b)
    if cfg.readout == "tokens" and not same_tok:
        raise RiskscopeError(f"--readout tokens needs one tokenizer, but {lm_a.model_id} and {lm_b.model_id} "
                             f"tokenise differently; use --readout mean or last")
    out = Path(out_dir)
    t0 = time.perf_counter()
    src_a = _cache(lm_a, data, out / "stores" / "a", la, cfg, progress, "A")
    src_b = _cache(lm_b, data, out / "stores" / "b", lb, cfg, progress, "B")
    rand = None
    if cfg.random_init:
        rand_lm = random_init_copy(lm_a, cfg.seed)
        rand = _cache(rand_lm, data, out / "stores" / "a_random_init", la, cfg, progress, "random-init A")
    t1 = time.perf_counter()

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda d, t: progress(name, d, t))

    main = compare_sources(src_a, src_b, cfg, stage(f"{cfg.metric} A x B"))
    base = compare_sources(rand, src_b, cfg, stage(f"{cfg.metric} random-init A x B")) if rand else None
    info = {"dataset": data.name, "dataset_digest": data.digest(), "n_texts": len(data.rows),
            "same_tokenizer": same_tok, "stores": {"a": "stores/a", "b": "stores/b",
                                                   "random_init": "stores/a_random_init" if rand else None},
            "seconds_cache": round(t1 - t0, 2), "seconds_compare": round(time.perf_counter() - t1, 2),
            "random_init_seed": cfg.seed if rand else None}
    return LayerComparison(cfg, lm_a.model_id, lm_b.model_id, main, base, info)


__all__ = ["FORMAT", "LayerCompareConfig", "LayerComparison", "MIN_ROWS", "Metric", "RANDOM_INIT", "check_layers",
           "compare_layers", "compare_sources"]
