"""The activation store: activations on disk, chunked, crash-safe, resumable.

Layout of a store directory (readable without riskscope: JSON + safetensors)::

    manifest.json              format, fingerprint, model, dataset, points, positions,
                               dtype, chunking, stats, "complete"
    rows.jsonl                 one line per text in dataset order: index, id, label, pair_id,
                               category, severity, split, n_tokens, text
    chunks/000000.safetensors  "row_index" (n,) int64 dataset rows held by this chunk, and one
                               tensor per point "<hook>.<layer>": (n, W) for last/mean,
                               (n, k, W) for explicit positions; for "all" tokens,
                               (tokens, W) plus "token_offsets" (n + 1,) int64

Rows are sorted by token count before chunking, so a chunk's batches waste
little compute on padding; ``row_index`` maps them back. Every chunk is
written to a temporary name and renamed when complete, so a chunk file under
its final name is always whole. After ``kill -9`` the same command resumes
from the first missing chunk and produces identical arrays (the batches are a
deterministic function of the inputs, which the fingerprint pins).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from safetensors import safe_open

from .._version import __version__
from .._io import atomic_text, save_safetensors
from ._datasets import Dataset
from ..errors import StoreError
from ..hooks import iter_captures
from ..hooks import HookPoint, tokenize
from ..models import LoadedModel

FORMAT = "riskscope-store/1"
StoreDType = Literal["float32", "float16", "bfloat16"]
_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class CacheConfig:
    """What to capture and how to write it."""

    points: tuple[HookPoint, ...]
    """Hook points to capture (layers may be negative; normalised against the model)."""
    positions: str | tuple[int, ...] = "last"
    """``last``, ``mean``, ``all``, or explicit token indices (negative from the end)."""
    dtype: StoreDType = "float32"
    """Storage dtype of the arrays."""
    batch_size: int = 32
    """Texts per forward pass."""
    chunk_rows: int = 256
    """Texts per chunk file (the unit of resumption)."""
    truncate: bool = False
    """Cut texts longer than the model context instead of refusing them."""

    def __post_init__(self) -> None:
        if not self.points:
            raise StoreError("no hook points to capture")
        if isinstance(self.positions, str) and self.positions not in ("last", "mean", "all"):
            raise StoreError(f"positions must be last, mean, all or token indices, got {self.positions!r}")
        if self.dtype not in _TORCH:
            raise StoreError(f"store dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise StoreError("batch_size and chunk_rows must be >= 1")


@dataclass
class CacheStats:
    """What a :func:`cache_activations` call did."""

    chunks_total: int = 0
    chunks_done_before: int = 0
    chunks_written: int = 0
    tokens: int = 0
    padded_fraction: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)




def _fingerprint(lm: LoadedModel, data: Dataset, cfg: CacheConfig, points: Sequence[HookPoint]) -> dict:
    return {
        "model_weight_hash": lm.weight_hash,
        "dataset_digest": data.digest(),
        "points": [str(p) for p in points],
        "positions": cfg.positions if isinstance(cfg.positions, str) else list(cfg.positions),
        "dtype": cfg.dtype,
        "batch_size": cfg.batch_size,
        "chunk_rows": cfg.chunk_rows,
        "truncate": cfg.truncate,
        "model_dtype": str(lm.model.dtype),
    }


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each chunk frees a few hundred MB of activations and serialisation buffers. glibc keeps
    freed blocks in its heap, and once it has raised its mmap threshold the next chunk's
    blocks do not fit the holes, so without a trim the peak RSS drifted up by ~1 GB after the
    first chunk on the default model (then stayed there)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def _chunk_path(root: Path, i: int) -> Path:
    return root / "chunks" / f"{i:06d}.safetensors"


def _chunk_ok(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return "row_index" in f.keys()
    except Exception:  # a torn or foreign file: recompute it
        return False


def _existing_manifest(root: Path, fp: dict, fp_hash: str) -> dict | None:
    """The manifest of a store at ``root`` made from the same inputs, ``None`` if there is none yet;
    :class:`StoreError` if ``root`` holds a store from other inputs or something that is not a store."""
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") != fp_hash:
            diff = [k for k in fp if old.get("inputs", {}).get(k) != fp[k]]
            raise StoreError(f"{root} holds a store made from other inputs (differs in: {', '.join(diff) or '?'}); "
                             f"use another --out or delete it")
        return old
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StoreError(f"{root} exists and is not an activation store; use an empty or new directory")
    return None


def _inputs(lm: LoadedModel, data: Dataset, cfg: CacheConfig) -> tuple[tuple[HookPoint, ...], dict, str]:
    points = tuple(sorted({p.normalised(lm) for p in cfg.points}))
    fp = _fingerprint(lm, data, cfg, points)
    return points, fp, hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def check_store(lm: LoadedModel, data: Dataset, out: str | Path, cfg: CacheConfig) -> bool:
    """Whether ``out`` already holds a (partial or complete) store of exactly these inputs.

    Raises :class:`StoreError`, without touching anything, when ``out`` holds a store made
    from other inputs or a directory that is not a store: the check
    :func:`cache_activations` makes first, available on its own so a caller can fail
    before showing any progress.
    """
    _, fp, fp_hash = _inputs(lm, data, cfg)
    return _existing_manifest(Path(out), fp, fp_hash) is not None


def cache_activations(
    lm: LoadedModel,
    data: Dataset,
    out: str | Path,
    cfg: CacheConfig,
    progress: Callable[[int, int], None] | None = None,
) -> CacheStats:
    """Run ``data`` through ``lm`` and write the requested activations to the store ``out``.

    Re-running on a complete store is a no-op; on a partial one it resumes; on a
    store made from other inputs it raises :class:`StoreError` (see :func:`check_store`).
    """
    import time

    t0 = time.perf_counter()
    root = Path(out)
    points, fp, fp_hash = _inputs(lm, data, cfg)
    manifest_path = root / "manifest.json"
    old = _existing_manifest(root, fp, fp_hash)

    ids = tokenize(lm, data.texts)
    limit = lm.context_length
    for i, row in enumerate(ids):
        if len(row) > limit:
            if not cfg.truncate:
                raise StoreError(f"row {i + 1} (id {data.rows[i].id!r}) has {len(row)} tokens, more than the model "
                                 f"context of {limit}; shorten it or pass --truncate")
            ids[i] = row[:limit]
    lengths = np.array([len(r) for r in ids])
    order = np.argsort(-lengths, kind="stable")  # longest first: a memory problem shows up at once
    n_chunks = (len(ids) + cfg.chunk_rows - 1) // cfg.chunk_rows
    stats = CacheStats(chunks_total=n_chunks)

    if old is None:
        (root / "chunks").mkdir(parents=True, exist_ok=True)
        rows = [{"index": i, **asdict(r), "n_tokens": int(lengths[i])} for i, r in enumerate(data.rows)]
        atomic_text(root / "rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    fsync=True)
        manifest = {
            "format": FORMAT,
            "fingerprint": fp_hash,
            "inputs": fp,
            "riskscope_version": __version__,
            "model": lm.describe(),
            "dataset": {"name": data.name, "digest": data.digest(), "rows": len(data), "pairs": data.n_pairs},
            "points": [str(p) for p in points],
            "widths": {str(p): p.width(lm) for p in points},
            "positions": fp["positions"],
            "dtype": cfg.dtype,
            "n_rows": len(data),
            "n_chunks": n_chunks,
            "complete": False,
        }
        atomic_text(manifest_path, json.dumps(manifest, indent=1), fsync=True)
    else:
        manifest = old
    for stale in (root / "chunks").glob(".*.tmp"):
        stale.unlink(missing_ok=True)

    reduce = cfg.positions
    real = padded = 0
    for c in range(n_chunks):
        path = _chunk_path(root, c)
        sel = order[c * cfg.chunk_rows:(c + 1) * cfg.chunk_rows]
        if path.is_file() and _chunk_ok(path):
            stats.chunks_done_before += 1
            if progress:
                progress(len(sel), len(ids))
            continue
        parts: dict[HookPoint, list[torch.Tensor]] = {p: [] for p in points}
        offsets = [0]
        for rows_b, mask, got in iter_captures(lm, ids, sel, points, reduce, cfg.batch_size):
            real += int(mask.sum())
            padded += mask.numel()
            for p in points:
                x = got[p]
                if reduce == "all":
                    x = x[mask.bool()]  # (tokens, W), row-major so rows stay contiguous
                parts[p].append(x.to("cpu", _TORCH[cfg.dtype]))
            if reduce == "all":
                for n in mask.sum(1).tolist():
                    offsets.append(offsets[-1] + n)
            if progress:
                progress(len(rows_b), len(ids))
        tensors = {str(p): torch.cat(parts[p]).contiguous() for p in points}
        tensors["row_index"] = torch.as_tensor(sel, dtype=torch.int64)
        if reduce == "all":
            tensors["token_offsets"] = torch.as_tensor(offsets, dtype=torch.int64)
        save_safetensors(tensors, path, metadata={"format": FORMAT, "chunk": str(c)}, fsync=True)
        stats.chunks_written += 1
        del tensors, parts
        _release_free_memory()
    stats.tokens = real
    stats.padded_fraction = 0.0 if padded == 0 else 1 - real / padded
    stats.seconds = time.perf_counter() - t0
    if not manifest.get("complete") or stats.chunks_written:
        manifest["complete"] = True
        manifest.setdefault("stats", {})
        if stats.chunks_written:
            manifest["stats"] = {"tokens": real, "padded_fraction": round(stats.padded_fraction, 4),
                                 "seconds_last_run": round(stats.seconds, 2)}
        atomic_text(manifest_path, json.dumps(manifest, indent=1), fsync=True)
    return stats


class Store:
    """Read a store: arrays per point in dataset order, one point at a time."""

    def __init__(self, root: str | Path, manifest: dict, rows: list[dict]):
        self.root = Path(root)
        self.manifest = manifest
        self.rows = rows

    @classmethod
    def open(cls, root: str | Path, require_complete: bool = True) -> "Store":
        root = Path(root)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise StoreError(f"{root} is not an activation store (no manifest.json); create it with `riskscope cache`")
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{mpath}: unknown store format {manifest.get('format')!r}")
        done = sum(1 for c in range(manifest["n_chunks"]) if _chunk_path(root, c).is_file())
        if require_complete and (not manifest.get("complete") or done < manifest["n_chunks"]):
            raise StoreError(f"{root} is incomplete ({done}/{manifest['n_chunks']} chunks); re-run the same "
                             f"`riskscope cache` command to resume it")
        rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines() if line]
        return cls(root, manifest, rows)

    @property
    def points(self) -> list[HookPoint]:
        return [HookPoint.parse(p) for p in self.manifest["points"]]

    @property
    def labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.rows], dtype=np.int64)

    @property
    def pair_ids(self) -> list[str | None]:
        return [r["pair_id"] for r in self.rows]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.rows]

    def _chunks(self):
        for c in range(self.manifest["n_chunks"]):
            yield _chunk_path(self.root, c)

    def read(self, point: HookPoint | str, dtype=np.float32) -> np.ndarray:
        """The activations of one point, rows in dataset order: (N, W) or (N, k, W).

        For ``all`` positions use :meth:`read_tokens`.
        """
        key = str(point)
        if key not in self.manifest["points"]:
            raise StoreError(f"{self.root} has no point {key}; it holds {', '.join(self.manifest['points'])}")
        if self.manifest["positions"] == "all":
            raise StoreError("this store holds every token; use read_tokens()")
        out = None
        for path in self._chunks():
            with safe_open(str(path), framework="pt") as f:
                idx = f.get_tensor("row_index").numpy()
                x = f.get_tensor(key).float().numpy().astype(dtype, copy=False)
            if out is None:
                out = np.empty((self.manifest["n_rows"], *x.shape[1:]), dtype=dtype)
            out[idx] = x
        return out

    def read_tokens(self, point: HookPoint | str, dtype=np.float32) -> list[np.ndarray]:
        """Per-row (n_tokens, W) arrays of an ``all``-positions store, in dataset order."""
        key = str(point)
        out: list[np.ndarray | None] = [None] * self.manifest["n_rows"]
        for path in self._chunks():
            with safe_open(str(path), framework="pt") as f:
                idx = f.get_tensor("row_index").numpy()
                off = f.get_tensor("token_offsets").numpy()
                x = f.get_tensor(key).float().numpy().astype(dtype, copy=False)
            for j, row in enumerate(idx):
                out[row] = x[off[j]:off[j + 1]]
        return out  # type: ignore[return-value]


__all__ = ["CacheConfig", "CacheStats", "FORMAT", "Store", "cache_activations", "check_store"]
