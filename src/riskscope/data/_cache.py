"""The resumable writer of activation stores: every input checked first, then chunk by chunk.

Rows are sorted by token count before chunking, so a chunk's batches waste little
compute on padding; ``row_index`` maps them back. A chunk (a range of that order) is the
unit of work: it is written to a temporary name, fsynced and renamed, then recorded in the
manifest with its size and sha256. After ``kill -9`` the same command resumes: it deletes
the temporary files a killed writer leaves (riskscope's and safetensors' own names, in
``chunks/`` and nothing else), keeps every chunk whose file matches its record, and
recomputes the rest, producing arrays identical to an uninterrupted run (the batches are
a deterministic function of the inputs, which the fingerprint pins).

Nothing is created before every checkable input passed (the store directory, the points,
positions against each text's token count, text lengths against the context). A store
whose first chunk was never finished holds only riskscope's own files and no chunk: a
command with other inputs replaces it rather than being refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from safetensors import safe_open

from .._io import atomic_text, file_sha256, is_temp_name, save_safetensors
from .._version import __version__
from ..errors import RiskscopeError, StoreError
from ..hooks import HookPoint, check_readouts, iter_captures, tokenize
from ..models import LoadedModel
from ._datasets import Dataset
from ._lengths import check_text_lengths
from ._manifest import (CHUNK_FILE, FORMAT, array_layout, chunk_name, fingerprint_of, read_manifest,
                        readout_key, write_manifest)
from ._store import array_keys, check_chunk, check_hash, check_values, remember_hash

StoreDType = Literal["float32", "float16", "bfloat16"]
_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ROOT_FILES = r"manifest\.json|rows\.jsonl"


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
    readouts: tuple[str, ...] = ()
    """Extra readouts stored beside ``positions`` (which must then be ``last``), from the same forward:
    ``mean``, ``max``, ``span`` (see :mod:`riskscope.hooks`)."""
    readout_hooks: tuple[str, ...] | None = None
    """Hooks whose points get the extra readouts (None: every hook)."""

    def __post_init__(self) -> None:
        if not self.points:
            raise StoreError("no hook points to capture")
        if isinstance(self.positions, str) and self.positions not in ("last", "mean", "all"):
            raise StoreError(f"positions must be last, mean, all or token indices, got {self.positions!r}")
        if not isinstance(self.positions, str) and not self.positions:
            raise StoreError("positions must not be an empty list of token indices")
        if self.dtype not in _TORCH:
            raise StoreError(f"store dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise StoreError("batch_size and chunk_rows must be >= 1")
        if self.readouts:
            try:
                extra = check_readouts(self.readouts, "store readouts")
            except RiskscopeError as e:
                raise StoreError(str(e)) from None
            if "last" in extra or self.positions != "last":
                raise StoreError(f"extra readouts {list(extra)} go beside positions 'last' (which is the 'last' "
                                 f"readout); got positions {self.positions!r}")
            object.__setattr__(self, "readouts", extra)
        if self.readout_hooks is not None:
            object.__setattr__(self, "readout_hooks", tuple(self.readout_hooks))

    def extra_readouts(self, points) -> dict[str, list[str]]:
        """``{readout: [point names]}`` of the extra readouts of ``points`` (empty without extra readouts)."""
        pts = [str(p) for p in points if self.readout_hooks is None or p.hook in self.readout_hooks]
        return {r: pts for r in self.readouts} if pts else {}


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


@dataclass(frozen=True)
class _Plan:
    """Every input checked, and the work cut into chunk ranges of the length-sorted rows."""

    points: tuple[HookPoint, ...]
    inputs: dict
    fingerprint: str
    ids: list[list[int]]
    lengths: np.ndarray
    order: np.ndarray
    chunk_rows: int
    twins: list[int | None]

    @property
    def n_chunks(self) -> int:
        return -(-len(self.ids) // self.chunk_rows)

    def span(self, c: int) -> tuple[int, int]:
        return c * self.chunk_rows, min((c + 1) * self.chunk_rows, len(self.ids))


def _inputs(lm: LoadedModel, data: Dataset, cfg: CacheConfig) -> tuple[tuple[HookPoint, ...], dict, str]:
    points = tuple(sorted({p.normalised(lm) for p in cfg.points}))
    fp = {
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
    extra = cfg.extra_readouts(points)
    if extra:  # absent otherwise: a store without extra readouts keeps its fingerprint
        fp["readouts"] = extra
    return points, fp, fingerprint_of(fp)


def _plan(lm: LoadedModel, data: Dataset, cfg: CacheConfig) -> _Plan:
    """Check every input that can be checked without a forward; :class:`StoreError` (or
    :class:`DatasetError`) names the row, its id and the fix. Creates nothing."""
    if len(data) == 0:
        raise StoreError(f"dataset {data.name!r} has no rows")
    points, fp, fp_hash = _inputs(lm, data, cfg)
    limit = lm.context_length
    if not cfg.truncate:
        check_text_lengths(lm.tokenizer, data, limit, f"dataset {data.name}", fix="shorten it or pass --truncate")
    ids = tokenize(lm, data.texts)
    for i, row in enumerate(ids):
        if not row:
            raise StoreError(f"row {i + 1} (id {data.rows[i].id!r}) has no tokens")
        if len(row) > limit:
            if not cfg.truncate:
                raise StoreError(f"row {i + 1} (id {data.rows[i].id!r}) has {len(row)} tokens, more than the model "
                                 f"context of {limit}; shorten it or pass --truncate")
            ids[i] = row[:limit]
    lengths = np.array([len(r) for r in ids])
    if not isinstance(cfg.positions, str):
        i = int(np.argmin(lengths))
        n = int(lengths[i])
        outside = [p for p in cfg.positions if not -n <= p < n]
        if outside:
            raise StoreError(f"positions {outside} fall outside row {i + 1} (id {data.rows[i].id!r}), which has {n} "
                             f"tokens; token indices must lie in {-n}..{n - 1} for every text")
    order = np.argsort(-lengths, kind="stable")  # longest first: a memory problem shows up at once
    return _Plan(points, fp, fp_hash, ids, lengths, order, cfg.chunk_rows, _twins(data))


def _own_temps(root: Path) -> list[Path]:
    """Temporary files a killed riskscope writer can leave in a store: its manifest and rows temps in
    ``root``, chunk temps (riskscope's and safetensors' own) in ``root/chunks``; nothing else."""
    found = [p for p in root.iterdir() if p.is_file() and is_temp_name(p.name, _ROOT_FILES)] if root.is_dir() else []
    chunks = root / "chunks"
    if chunks.is_dir():
        found += [p for p in chunks.iterdir() if p.is_file() and is_temp_name(p.name, CHUNK_FILE, safetensors=True)]
    return found


def _holds_no_chunk(root: Path, allowed: set[str]) -> bool:
    """``root`` holds only ``allowed`` names, riskscope's temporary files and a ``chunks`` folder with
    nothing but such files: no finished chunk, nothing of anyone else's."""
    temps = set(_own_temps(root))
    for p in root.iterdir():
        if p.name == "chunks" and p.is_dir():
            if any(q not in temps for q in p.iterdir()):
                return False
        elif p.name not in allowed and p not in temps:
            return False
    return True


def _existing_manifest(root: Path, fp: dict, fp_hash: str) -> dict | None:
    """The manifest of a store at ``root`` made from the same inputs, ``None`` if there is none yet (or only
    a store of other inputs whose first chunk was never finished, which is replaced); :class:`StoreError`
    if ``root`` holds a store from other inputs or something that is not a store."""
    if (root / "manifest.json").is_file():
        old = read_manifest(root)
        if old["fingerprint"] == fp_hash:
            return old
        if _holds_no_chunk(root, {"manifest.json", "rows.jsonl"}):
            return None
        diff = [k for k in fp if old["inputs"].get(k) != fp[k]]
        raise StoreError(f"{root} holds a store made from other inputs (differs in: {', '.join(diff) or '?'}); "
                         f"use another --out or delete it")
    if root.exists() and (not root.is_dir() or not _holds_no_chunk(root, set())):
        raise StoreError(f"{root} exists and is not an activation store; use an empty or new directory")
    return None


def check_store(lm: LoadedModel, data: Dataset, out: str | Path, cfg: CacheConfig) -> bool:
    """Whether ``out`` already holds a (partial or complete) store of exactly these inputs.

    Raises :class:`StoreError`, without touching anything, when ``out`` holds a store made
    from other inputs or a directory that is not a store, or when an input cannot work
    (explicit positions beyond a text, a text longer than the context): the checks
    :func:`cache_activations` makes first, available on their own so a caller can fail
    before showing any progress.
    """
    _, fp, fp_hash = _inputs(lm, data, cfg)
    found = _existing_manifest(Path(out), fp, fp_hash) is not None
    _plan(lm, data, cfg)
    return found


def _new_manifest(lm: LoadedModel, data: Dataset, cfg: CacheConfig, plan: _Plan) -> dict:
    points = [str(p) for p in plan.points]
    widths = {str(p): p.width(lm) for p in plan.points}
    return {
        "format": FORMAT,
        "fingerprint": plan.fingerprint,
        "inputs": plan.inputs,
        "riskscope_version": __version__,
        "model": lm.describe(),
        "dataset": {"name": data.name, "digest": plan.inputs["dataset_digest"], "rows": len(data),
                    "pairs": data.n_pairs},
        "points": points,
        "widths": widths,
        "positions": plan.inputs["positions"],
        "dtype": cfg.dtype,
        "n_rows": len(data),
        "n_chunks": plan.n_chunks,
        "arrays": array_layout(points, widths, plan.inputs["positions"], cfg.dtype, plan.inputs.get("readouts")),
        **({"readouts": plan.inputs["readouts"]} if "readouts" in plan.inputs else {}),
        "chunks": [],
        "complete": False,
    }


def _prepare(root: Path, lm: LoadedModel, data: Dataset, cfg: CacheConfig, plan: _Plan,
             old: dict | None) -> tuple[dict, bool]:
    """The manifest to resume (a new one written first for a new store), whether it must be rewritten
    (a store written before per-chunk records gains them); rows.jsonl rewritten when missing or edited;
    a killed writer's temporary files deleted."""
    rows = [{"index": i, **asdict(r), "n_tokens": int(plan.lengths[i])} for i, r in enumerate(data.rows)]
    rows_bytes = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    for stale in _own_temps(root):
        stale.unlink(missing_ok=True)
    upgrade = False
    if old is None:
        root.mkdir(parents=True, exist_ok=True)
        manifest = _new_manifest(lm, data, cfg, plan)
        write_manifest(root, manifest)
    else:
        manifest = old
        if "chunks" not in manifest:  # written before per-chunk records: they are added as chunks are checked
            manifest["chunks"] = []
            manifest["arrays"] = array_layout(manifest["points"], manifest["widths"], manifest["positions"],
                                              manifest["dtype"], manifest.get("readouts"))
            upgrade = True
    rows_path = root / "rows.jsonl"
    if not rows_path.is_file() or rows_path.read_bytes() != rows_bytes:
        atomic_text(rows_path, rows_bytes.decode("utf-8"), fsync=True)
    (root / "chunks").mkdir(exist_ok=True)
    return manifest, upgrade


def _reuse(root: Path, manifest: dict, c: int, plan: _Plan) -> dict | None:
    """The record of chunk ``c`` if its file is whole and as recorded, adopting (hashing) a whole file that
    has no record yet (killed before the manifest caught up, or written before per-chunk records);
    ``None`` if it must be recomputed."""
    start, stop = plan.span(c)
    try:
        chunk = check_chunk(root, manifest, c, plan.lengths)
        if not np.array_equal(chunk.row_index, plan.order[start:stop]):
            return None
        if chunk.record is not None:
            check_hash(chunk)
            return chunk.record
        with safe_open(str(chunk.path), framework="pt") as f:
            for key in array_keys(manifest):
                check_values(key, f.get_tensor(key).float().numpy(), chunk.path)
    except StoreError:
        return None
    return _record(chunk.path, start, stop, manifest, int(plan.lengths[plan.order[start:stop]].sum()))


def _record(path: Path, start: int, stop: int, manifest: dict, tokens: int) -> dict:
    digest = file_sha256(path)
    remember_hash(path, digest)
    rec = {"file": path.name, "rows": [start, stop], "bytes": path.stat().st_size, "sha256": digest}
    if manifest["positions"] == "all":
        rec["tokens"] = tokens
    return rec


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


def _twins(data: Dataset) -> list[int | None]:
    """The row index of each row's twin: the other row of its pair (None when the pair is not two rows)."""
    members: dict[str, list[int]] = {}
    for i, r in enumerate(data.rows):
        if r.pair_id is not None:
            members.setdefault(r.pair_id, []).append(i)
    out: list[int | None] = [None] * len(data.rows)
    for rows in members.values():
        if len(rows) == 2:
            out[rows[0]], out[rows[1]] = rows[1], rows[0]
    return out


def _compute(lm: LoadedModel, plan: _Plan, sel: np.ndarray, cfg: CacheConfig, stats: CacheStats,
             progress: Callable[[int, int], None] | None) -> dict[str, torch.Tensor]:
    reduce = cfg.positions
    extra = plan.inputs.get("readouts") or {}
    names = ("last", *extra) if extra else None
    keys = {str(p): (p, reduce if extra else None) for p in plan.points}
    keys.update({readout_key(p, r): (HookPoint.parse(p), r) for r, pts in extra.items() for p in pts})
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    offsets = [0]
    for rows_b, mask, got in iter_captures(lm, plan.ids, sel, plan.points, reduce, cfg.batch_size, readouts=names,
                                           twins=plan.twins):
        stats.tokens += int(mask.sum())
        stats.extra["padded"] = stats.extra.get("padded", 0) + mask.numel()
        for key, (p, r) in keys.items():
            x = got[p] if r is None else got[p][r]
            if reduce == "all":
                x = x[mask.bool()]  # (tokens, W), row-major so rows stay contiguous
            parts[key].append(x.to("cpu", _TORCH[cfg.dtype]))
        if reduce == "all":
            for n in mask.sum(1).tolist():
                offsets.append(offsets[-1] + n)
        if progress:
            progress(len(rows_b), len(plan.ids))
    tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    tensors["row_index"] = torch.as_tensor(sel, dtype=torch.int64)
    if reduce == "all":
        tensors["token_offsets"] = torch.as_tensor(offsets, dtype=torch.int64)
    return tensors


def cache_activations(
    lm: LoadedModel,
    data: Dataset,
    out: str | Path,
    cfg: CacheConfig,
    progress: Callable[[int, int], None] | None = None,
) -> CacheStats:
    """Run ``data`` through ``lm`` and write the requested activations to the store ``out``.

    Re-running on a complete store is a no-op; on a partial or damaged one it recomputes only the
    chunks that are missing or differ from their record; on a store made from other inputs it raises
    :class:`StoreError` (see :func:`check_store`). A failed write (a full disk) raises
    :class:`StoreError` and leaves the finished chunks intact.
    """
    t0 = time.perf_counter()
    root = Path(out)
    _, fp, fp_hash = _inputs(lm, data, cfg)
    old = _existing_manifest(root, fp, fp_hash)
    plan = _plan(lm, data, cfg)
    stats = CacheStats(chunks_total=plan.n_chunks)
    try:
        manifest, dirty = _prepare(root, lm, data, cfg, plan, old)
        records = {r["file"]: r for r in manifest["chunks"]}
        for c in range(plan.n_chunks):
            start, stop = plan.span(c)
            sel = plan.order[start:stop]
            path = root / "chunks" / chunk_name(c)
            rec = _reuse(root, manifest, c, plan) if path.is_file() else None
            if rec is not None:
                stats.chunks_done_before += 1
                dirty |= records.get(path.name) != rec
                records[path.name] = rec
                if progress:
                    progress(len(sel), len(plan.ids))
                continue
            tensors = _compute(lm, plan, sel, cfg, stats, progress)
            save_safetensors(tensors, path, metadata={"format": FORMAT, "chunk": str(c)}, fsync=True)
            del tensors
            _release_free_memory()
            records[path.name] = _record(path, start, stop, manifest, int(plan.lengths[sel].sum()))
            manifest["chunks"] = sorted(records.values(), key=lambda r: r["file"])
            stats.chunks_written += 1
            write_manifest(root, manifest)
        padded = stats.extra.pop("padded", 0)
        stats.padded_fraction = 0.0 if padded == 0 else 1 - stats.tokens / padded
        stats.seconds = time.perf_counter() - t0
        if not manifest["complete"] or stats.chunks_written or dirty:
            manifest["chunks"] = sorted(records.values(), key=lambda r: r["file"])
            manifest["complete"] = True
            manifest.setdefault("stats", {})
            if stats.chunks_written:
                manifest["stats"] = {"tokens": stats.tokens, "padded_fraction": round(stats.padded_fraction, 4),
                                     "seconds_last_run": round(stats.seconds, 2)}
            write_manifest(root, manifest)
    except OSError as e:
        where = e.filename or root
        raise StoreError(f"{where}: cannot write ({e.strerror or e}); fix that (free some space, check "
                         f"permissions), then re-run the same `riskscope cache` command: finished chunks are "
                         f"kept") from None
    return stats


__all__ = ["CacheConfig", "CacheStats", "StoreDType", "cache_activations", "check_store"]
