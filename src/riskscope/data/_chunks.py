"""One store written by several processes: a driver prepares and merges, workers write whole chunks.

The same store as :func:`~riskscope.data.cache_activations` writes, byte for byte: the
work is cut into the same chunk ranges of the length-sorted rows, each chunk is computed
by the same code and written by the same atomic writer (temp name, fsync, rename), and the
driver alone writes ``manifest.json``. So several processes (on one machine or, with a
shared filesystem, several) can fill one store without ever writing the same file:

* the driver calls :meth:`ChunkedStore.prepare` (every input checked first, the skeleton
  written, intact chunks of an earlier run kept), hands ``pending`` chunk numbers out,
  passes each :class:`ChunkWritten` to :meth:`ChunkedStore.add` and ends with
  :meth:`ChunkedStore.finish`;
* each worker builds one :class:`ChunkWriter` (it tokenises the dataset once) and calls
  :meth:`ChunkWriter.write` per chunk; it never touches the manifest.

A worker killed mid-chunk leaves at most a temporary file; the driver deletes those of
its own naming at :meth:`~ChunkedStore.finish`, when no worker is writing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .._io import save_safetensors
from ..errors import StoreError
from ..models import LoadedModel
from ._cache import (CacheConfig, CacheStats, _existing_manifest, _inputs, _own_temps, _plan, _prepare,
                     _record, _release_free_memory, _reuse, _compute)
from ._datasets import Dataset
from ._manifest import FORMAT, chunk_name, read_manifest, write_manifest


def store_fingerprint(lm: LoadedModel, data: Dataset, cfg: CacheConfig) -> str:
    """The ``fingerprint`` a store of these inputs has (model weight hash, dataset, points, dtypes, chunking):
    two processes that agree on it write identical chunks."""
    return _inputs(lm, data, cfg)[2]


@dataclass(frozen=True)
class ChunkWritten:
    """One chunk a worker wrote: its number, its manifest record and the tokens it ran."""

    chunk: int
    """Chunk number (its file is ``chunks/{chunk:06d}.safetensors``)."""
    record: dict
    """The manifest record: file, rows, bytes, sha256 (and tokens for ``all`` positions)."""
    tokens: int
    """Real (non-pad) tokens run."""
    padded: int
    """Tokens run including padding."""


class ChunkWriter:
    """Writes chunks of one prepared store from one process (the dataset is tokenised once, here).

    ``fingerprint`` is the driver's (:func:`store_fingerprint`): a worker whose model weights or
    inputs differ is refused before it writes anything, and so is one that cannot see the
    store the driver prepared (no shared filesystem).
    """

    def __init__(self, lm: LoadedModel, data: Dataset, out: str | Path, cfg: CacheConfig, fingerprint: str):
        self.lm, self.cfg, self.root = lm, cfg, Path(out)
        self._plan = _plan(lm, data, cfg)
        if self._plan.fingerprint != fingerprint:
            raise StoreError(f"this worker's inputs differ from the driver's (model weight hash "
                             f"{lm.weight_hash[:16]}..., store fingerprint {self._plan.fingerprint[:16]}... against "
                             f"{fingerprint[:16]}...); give every worker the same model files")
        if not (self.root / "manifest.json").is_file():
            raise StoreError(f"{self.root}/manifest.json is not visible to this worker; workers on other hosts "
                             f"need the store on a filesystem they share with the driver")
        self._manifest = read_manifest(self.root)
        if self._manifest["fingerprint"] != fingerprint:
            raise StoreError(f"{self.root}/manifest.json is from other inputs than the driver's; workers must see "
                             f"the driver's store (a shared filesystem)")

    @property
    def n_chunks(self) -> int:
        return self._plan.n_chunks

    def write(self, c: int, progress: Callable[[int, int], None] | None = None) -> ChunkWritten:
        """Compute chunk ``c`` and write it atomically under its final name; ``progress(rows, total)`` per batch."""
        if not 0 <= c < self._plan.n_chunks:
            raise StoreError(f"chunk {c} does not exist (the store has {self._plan.n_chunks})")
        start, stop = self._plan.span(c)
        sel = self._plan.order[start:stop]
        stats = CacheStats()
        path = self.root / "chunks" / chunk_name(c)
        tensors = _compute(self.lm, self._plan, sel, self.cfg, stats, progress)
        try:
            save_safetensors(tensors, path, metadata={"format": FORMAT, "chunk": str(c)}, fsync=True)
        except OSError as e:
            raise StoreError(f"{e.filename or path}: cannot write ({e.strerror or e}); fix that, then re-run the "
                             f"same command: finished chunks are kept") from None
        del tensors
        _release_free_memory()
        record = _record(path, start, stop, self._manifest, int(self._plan.lengths[sel].sum()))
        return ChunkWritten(c, record, stats.tokens, int(stats.extra.get("padded", 0)))


class ChunkedStore:
    """The driver's side of a store written by several processes: prepare, add each chunk, finish."""

    def __init__(self, root: Path, manifest: dict, records: dict, pending: tuple[int, ...], reused: int,
                 dirty: bool, rows: list[int]):
        self.root = root
        self._manifest = manifest
        self._records = records
        self.pending = pending
        """Chunk numbers still to compute (the others are kept from an earlier run)."""
        self.reused = reused
        self._dirty = dirty
        self._rows = rows
        self._stats = CacheStats(chunks_total=manifest["n_chunks"], chunks_done_before=reused)
        self._padded = 0
        self._t0 = time.perf_counter()

    @classmethod
    def prepare(cls, lm: LoadedModel, data: Dataset, out: str | Path, cfg: CacheConfig) -> "ChunkedStore":
        """Check every input (as :func:`~riskscope.data.cache_activations` does, before creating anything), write
        the store's skeleton (manifest with ``complete: false``, rows.jsonl), keep every chunk of an earlier run
        that matches its record, and list the chunks still to compute."""
        root = Path(out)
        _, fp, fp_hash = _inputs(lm, data, cfg)
        old = _existing_manifest(root, fp, fp_hash)
        plan = _plan(lm, data, cfg)
        try:
            manifest, dirty = _prepare(root, lm, data, cfg, plan, old)
            records = {r["file"]: r for r in manifest["chunks"]}
            pending = []
            for c in range(plan.n_chunks):
                path = root / "chunks" / chunk_name(c)
                rec = _reuse(root, manifest, c, plan) if path.is_file() else None
                if rec is None:
                    records.pop(path.name, None)
                    pending.append(c)
                else:
                    dirty |= records.get(path.name) != rec
                    records[path.name] = rec
            if dirty:
                manifest["chunks"] = sorted(records.values(), key=lambda r: r["file"])
                write_manifest(root, manifest)
        except OSError as e:
            raise StoreError(f"{e.filename or root}: cannot write ({e.strerror or e}); fix that, then re-run the "
                             f"same command: finished chunks are kept") from None
        rows = [plan.span(c)[1] - plan.span(c)[0] for c in range(plan.n_chunks)]
        return cls(root, manifest, records, tuple(pending), plan.n_chunks - len(pending), dirty, rows)

    @property
    def fingerprint(self) -> str:
        return self._manifest["fingerprint"]

    @property
    def n_chunks(self) -> int:
        return self._manifest["n_chunks"]

    def rows_in(self, c: int) -> int:
        """How many texts chunk ``c`` holds."""
        return self._rows[c]

    def add(self, written: ChunkWritten) -> None:
        """Record a chunk a worker wrote (its file checked against the record's size) in the manifest."""
        path = self.root / "chunks" / chunk_name(written.chunk)
        if written.record.get("file") != path.name or not path.is_file() \
                or path.stat().st_size != written.record.get("bytes"):
            raise StoreError(f"{path}: the file a worker reported is not here as reported; workers on other hosts "
                             f"need the store on a filesystem they share with the driver")
        self._records[path.name] = written.record
        self._stats.chunks_written += 1
        self._stats.tokens += written.tokens
        self._padded += written.padded
        self._manifest["chunks"] = sorted(self._records.values(), key=lambda r: r["file"])
        write_manifest(self.root, self._manifest)

    def finish(self) -> CacheStats:
        """Mark the store complete once every chunk is recorded (deleting temporary files that killed workers
        left); :class:`StoreError` naming the missing chunks otherwise, the store left resumable."""
        missing = [c for c in range(self.n_chunks) if chunk_name(c) not in self._records]
        if missing:
            raise StoreError(f"{self.root}: chunks {missing[:10]} were not written; re-run the same command to "
                             f"compute them (finished chunks are kept)")
        for stale in _own_temps(self.root):
            stale.unlink(missing_ok=True)
        stats = self._stats
        stats.padded_fraction = 0.0 if self._padded == 0 else 1 - stats.tokens / self._padded
        stats.seconds = time.perf_counter() - self._t0
        m = self._manifest
        if not m["complete"] or stats.chunks_written or self._dirty:
            m["chunks"] = sorted(self._records.values(), key=lambda r: r["file"])
            m["complete"] = True
            m.setdefault("stats", {})
            if stats.chunks_written:
                m["stats"] = {"tokens": stats.tokens, "padded_fraction": round(stats.padded_fraction, 4),
                              "seconds_last_run": round(stats.seconds, 2)}
            write_manifest(self.root, m)
        return stats


__all__ = ["ChunkWriter", "ChunkWritten", "ChunkedStore", "store_fingerprint"]
