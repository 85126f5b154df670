"""The activation store: reading it, and verifying it.

Layout of a store directory (readable without riskscope: JSON + safetensors; docs/store.md)::

    manifest.json              format, fingerprint + inputs, model, dataset, points, widths, positions,
                               dtype, n_rows, n_chunks, arrays (dtype and shape of every tensor),
                               chunks (file, rows, bytes, sha256 of each), stats, complete, manifest_sha256
    rows.jsonl                 one line per text in dataset order: index, id, label, pair_id,
                               category, severity, split, n_tokens, text
    chunks/000000.safetensors  "row_index" (n,) int64 dataset rows held by this chunk, and one
                               tensor per point "<hook>.<layer>": (n, W) for last/mean,
                               (n, k, W) for explicit positions; for "all" tokens,
                               (tokens, W) plus "token_offsets" (n + 1,) int64

Every open checks, cheaply, the manifest's integrity, the rows, and every chunk's header:
its tensors, their dtypes and shapes, and that the chunks hold every row exactly once.
Every read checks that the values are finite, and the first read of a chunk in a process
checks its sha256 against the manifest. :func:`verify_store` checks all of it, hashes and
values of every chunk included, and lists what it finds instead of raising.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .._io import file_sha256, is_temp_name
from ..errors import StoreError
from ..hooks import HookPoint
from ._manifest import (CHUNK_FILE, FORMAT, RECOMPUTE, array_layout, chunk_name, expected_shape, read_manifest,
                        read_rows, readout_key)

LARGEST_VALUE = 1e15
"""Values beyond +-1e15 are refused as corrupt: no activation is that large (float16 cannot even hold it)."""


@dataclass
class Chunk:
    """What the header check of one chunk file found: the rows it holds, and its tokens for ``all``."""

    path: Path
    row_index: np.ndarray
    offsets: np.ndarray | None
    record: dict | None


def layout_of(m: dict) -> dict:
    return m.get("arrays") or array_layout(m["points"], m["widths"], m["positions"], m["dtype"], m.get("readouts"))


def array_keys(m: dict) -> list[str]:
    """The names of the activation tensors of every chunk: the points, then their extra readouts."""
    return [k for k in layout_of(m) if k not in ("row_index", "token_offsets")]


def check_chunk(root: Path, m: dict, i: int, n_tokens: np.ndarray | None) -> Chunk:
    """Header check of chunk ``i`` (tensors, dtypes, shapes, row indices, token offsets, size); raises
    :class:`StoreError` naming the file and the fix. Reads the header and ``row_index``, not the values."""
    path = root / "chunks" / chunk_name(i)
    rec = next((r for r in m.get("chunks", ()) if r["file"] == path.name), None)

    def bad(problem: str) -> StoreError:
        return StoreError(f"{path}: {problem}; {RECOMPUTE}")

    if rec is not None and path.stat().st_size != rec["bytes"]:
        raise bad(f"has {path.stat().st_size} bytes, the manifest says {rec['bytes']} (cut short or replaced)")
    layout = layout_of(m)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if keys != set(layout):
                raise bad(f"holds tensors {sorted(keys)[:4]}..., not this store's ({len(layout)} expected)")
            heads = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in layout}
            idx = f.get_tensor("row_index").numpy() if heads["row_index"][0] == "I64" else None
            offsets = f.get_tensor("token_offsets").numpy() if "token_offsets" in layout \
                and heads["token_offsets"][0] == "I64" else None
    except StoreError:
        raise
    except Exception as e:  # safetensors reports a torn, foreign or garbage file in several ways
        raise bad(f"is not a readable safetensors file ({str(e)[:80]})") from None
    n = heads["row_index"][1][0] if len(heads["row_index"][1]) == 1 else -1
    if rec is not None and n != rec["rows"][1] - rec["rows"][0]:
        raise bad(f"holds {n} rows, the manifest says {rec['rows'][1] - rec['rows'][0]}")
    tokens = heads[m["points"][0]][1][0] if m["positions"] == "all" and heads[m["points"][0]][1] else None
    if rec is not None and m["positions"] == "all" and tokens != rec["tokens"]:
        raise bad(f"holds {tokens} tokens, the manifest says {rec['tokens']}")
    for key, spec in layout.items():
        want = (spec["dtype"], expected_shape(spec["shape"], n, tokens))
        if heads[key] != want:
            raise bad(f"tensor {key!r} is {heads[key][0]} {list(heads[key][1])}, expected {want[0]} {list(want[1])}")
    if idx is None or n < 1 or idx.min() < 0 or idx.max() >= m["n_rows"] or len(np.unique(idx)) != n:
        raise bad("its row_index does not name distinct rows of this store")
    if offsets is not None:
        counts = np.diff(offsets)
        if offsets[0] != 0 or offsets[-1] != tokens or (counts < 1).any() \
                or (n_tokens is not None and not np.array_equal(counts, n_tokens[idx])):
            raise bad("its token_offsets do not match the rows' token counts")
    return Chunk(path, idx, offsets, rec)


def check_values(key: str, x: np.ndarray, path: Path) -> None:
    """Refuse NaN, infinities and absurd magnitudes (what corrupt bytes decode to)."""
    finite = np.isfinite(x)
    if not finite.all() or (np.abs(x[finite]) > LARGEST_VALUE).any():
        bad = int((~finite).sum()) + int((np.abs(np.where(finite, x, 0)) > LARGEST_VALUE).sum())
        raise StoreError(f"{path}: tensor {key!r} holds {bad} non-finite or absurd value(s) (corrupt data); "
                         f"{RECOMPUTE}")


_HASHED: dict[tuple, str] = {}  # (path, device, inode, size, mtime) -> sha256 already checked in this process
_HASHED_LOCK = threading.Lock()


def _version(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def remember_hash(path: Path, digest: str) -> None:
    """Note that this version of ``path`` has sha256 ``digest`` (just computed by its writer)."""
    with _HASHED_LOCK:
        _HASHED[_version(path)] = digest


def check_hash(chunk: Chunk) -> None:
    """Compare the file's sha256 with the manifest's record, once per file version per process."""
    if chunk.record is None:
        return
    key = _version(chunk.path)
    with _HASHED_LOCK:
        known = _HASHED.get(key)
    if known == chunk.record["sha256"]:
        return
    digest = file_sha256(chunk.path)
    if digest != chunk.record["sha256"]:
        raise StoreError(f"{chunk.path}: sha256 {digest[:12]}... differs from the manifest's "
                         f"{chunk.record['sha256'][:12]}... (the file changed after it was written); {RECOMPUTE}")
    remember_hash(chunk.path, digest)


def coverage_problem(m: dict, chunks: list[Chunk]) -> str | None:
    """Every row held exactly once (only "at most once" for an incomplete store)."""
    held = np.bincount(np.concatenate([c.row_index for c in chunks]), minlength=m["n_rows"]) if chunks \
        else np.zeros(m["n_rows"], np.int64)
    if (held > 1).any():
        row = int(np.flatnonzero(held > 1)[0])
        files = [c.path.name for c in chunks if row in c.row_index]
        return (f"row {row} is held by {int(held[row])} chunks ({', '.join(files)}): a chunk was replaced by "
                f"another; re-run `riskscope cache` with the same arguments to recompute them")
    if len(chunks) == m["n_chunks"] and (held == 0).any():
        return f"{int((held == 0).sum())} row(s) are held by no chunk (e.g. row {int(np.flatnonzero(held == 0)[0])})"
    return None


def _n_tokens(rows: list[dict] | None) -> np.ndarray | None:
    return None if rows is None else np.array([r["n_tokens"] for r in rows], dtype=np.int64)


def _stray_chunks(root: Path, n_chunks: int) -> list[str]:
    folder = root / "chunks"
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(CHUNK_FILE, p.name)
                  and int(p.name[:6]) >= n_chunks) if folder.is_dir() else []


class Store:
    """Read a store: arrays per point in dataset order, one point at a time."""

    def __init__(self, root: str | Path, manifest: dict, rows: list[dict], chunks: list[Chunk] | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.rows = rows
        self._chunks = chunks

    @classmethod
    def open(cls, root: str | Path, require_complete: bool = True) -> "Store":
        """Open and check the store at ``root`` (see the module docstring); :class:`StoreError` names the
        bad file and the fix. ``require_complete=False`` opens a partial store (missing rows read as NaN)."""
        root = Path(root)
        m = read_manifest(root)
        rows = read_rows(root, m)
        present = [i for i in range(m["n_chunks"]) if (root / "chunks" / chunk_name(i)).is_file()]
        if require_complete and (not m["complete"] or len(present) < m["n_chunks"]):
            raise StoreError(f"{root} is incomplete ({len(present)}/{m['n_chunks']} chunks); re-run the same "
                             f"`riskscope cache` command to resume it")
        stray = _stray_chunks(root, m["n_chunks"])
        if stray:
            raise StoreError(f"{root / 'chunks' / stray[0]}: not part of this store, whose manifest lists "
                             f"{m['n_chunks']} chunk(s); move it away")
        n_tokens = _n_tokens(rows)
        chunks = [check_chunk(root, m, i, n_tokens) for i in present]
        problem = coverage_problem(m, chunks)
        if problem is not None:
            raise StoreError(f"{root}: {problem}")
        return cls(root, m, rows, chunks)

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

    def _checked(self) -> list[Chunk]:
        if self._chunks is None:  # built by hand rather than by open(): check now
            self._chunks = Store.open(self.root, require_complete=False)._chunks
        return self._chunks  # type: ignore[return-value]

    def _tensor(self, chunk: Chunk, key: str, dtype) -> np.ndarray:
        check_hash(chunk)
        try:
            with safe_open(str(chunk.path), framework="pt") as f:
                idx = f.get_tensor("row_index").numpy()
                x = f.get_tensor(key).float().numpy().astype(dtype, copy=False)
        except Exception as e:  # the file was replaced after open() checked it
            raise StoreError(f"{chunk.path}: cannot be read ({str(e)[:80]}); {RECOMPUTE}") from None
        if not np.array_equal(idx, chunk.row_index):
            raise StoreError(f"{chunk.path}: changed since the store was opened; open it again")
        check_values(key, x, chunk.path)
        return x

    def _key(self, point: HookPoint | str, readout: str | None = None) -> str:
        key = str(point)
        if key not in self.manifest["points"]:
            raise StoreError(f"{self.root} has no point {key}; it holds {', '.join(self.manifest['points'])}")
        if readout is None or readout == self.manifest["positions"]:
            return key
        if readout not in self.readouts(key):
            raise StoreError(f"{self.root} has no readout {readout!r} of {key}; it holds {self.readouts(key)}")
        return readout_key(key, readout)

    def readouts(self, point: HookPoint | str) -> list[str]:
        """The readouts stored for ``point``: its ``positions`` when that is a readout name (``last`` or
        ``mean``; a store written before readouts holds just that), then its extra readouts."""
        key = str(point)
        own = [self.manifest["positions"]] if self.manifest["positions"] in ("last", "mean") else []
        return own + [r for r, pts in (self.manifest.get("readouts") or {}).items() if key in pts]

    def read(self, point: HookPoint | str, dtype=np.float32, readout: str | None = None) -> np.ndarray:
        """The activations of one point, rows in dataset order: (N, W) or (N, k, W).

        ``readout`` picks an extra readout (``mean``, ``max``, ``span``; see :meth:`readouts`); the default
        is the store's ``positions``. For ``all`` positions use :meth:`read_tokens`.
        """
        key = self._key(point, readout)
        if self.manifest["positions"] == "all":
            raise StoreError("this store holds every token; use read_tokens()")
        spec = layout_of(self.manifest)[key]["shape"][1:]
        out = np.full((self.manifest["n_rows"], *spec), np.nan, dtype=dtype)  # a partial store's missing rows
        for chunk in self._checked():
            out[chunk.row_index] = self._tensor(chunk, key, dtype)
        return out

    def read_rows(self, point: HookPoint | str, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        """The activations of one point for the dataset rows ``rows`` (in that order), decoding only the chunks
        that hold them: memory stays bounded by the rows asked for (streaming readers use this)."""
        key, rows = self._key(point), np.asarray(rows, dtype=np.int64)
        if self.manifest["positions"] == "all":
            raise StoreError("this store holds every token; use read_tokens()")
        where = np.full(self.manifest["n_rows"], -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        out = np.full((len(rows), *layout_of(self.manifest)[key]["shape"][1:]), np.nan, dtype=dtype)
        for chunk in self._checked():
            sel = where[chunk.row_index] >= 0
            if sel.any():
                out[where[chunk.row_index[sel]]] = self._tensor(chunk, key, dtype)[sel]
        return out

    def read_tokens(self, point: HookPoint | str, dtype=np.float32) -> list[np.ndarray]:
        """Per-row (n_tokens, W) arrays of an ``all``-positions store, in dataset order (None for rows a
        partial store does not hold yet)."""
        key = self._key(point)
        if self.manifest["positions"] != "all":
            raise StoreError("this store holds chosen positions, not every token; use read()")
        out: list[np.ndarray | None] = [None] * self.manifest["n_rows"]
        for chunk in self._checked():
            x, off = self._tensor(chunk, key, dtype), chunk.offsets
            for j, row in enumerate(chunk.row_index):
                out[row] = x[off[j]:off[j + 1]]  # type: ignore[index]
        return out  # type: ignore[return-value]


# --- verify_store -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreVerification:
    """What :func:`verify_store` found."""

    path: str
    """The store directory."""
    ok: bool
    """No problems: every chunk present, whole, as written, and the store complete."""
    problems: tuple[str, ...]
    """One line per problem, naming the file and the fix."""
    chunks: int
    """Chunk files checked."""
    rows: int
    """Rows (texts) in the store, 0 when the manifest cannot be read."""
    notes: tuple[str, ...] = ()
    """Things that are not problems (a store written before per-chunk hashes, leftover temporary files)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"], d["notes"] = list(self.problems), list(self.notes)
        return d


def verify_store(path: str | Path, full: bool = True) -> StoreVerification:
    """Check the store at ``path`` and list every problem instead of raising: manifest integrity, rows,
    every chunk's header and the coverage of the rows, and with ``full`` each chunk's sha256 and the
    finiteness of every value. Re-running `riskscope cache` with the same arguments repairs what it names.

    >>> verify_store("/nowhere").ok
    False
    """
    root = Path(path)
    problems: list[str] = []
    notes: list[str] = []
    try:
        m = read_manifest(root)
    except StoreError as e:
        return StoreVerification(str(root), False, (str(e),), 0, 0)
    try:
        rows: list[dict] | None = read_rows(root, m)
    except StoreError as e:
        problems.append(str(e))
        rows = None
    if "chunks" not in m:
        notes.append("written before per-chunk hashes: chunks are checked for structure and finite values only; "
                     "re-running `riskscope cache` with the same arguments adds the hashes")
    present = [i for i in range(m["n_chunks"]) if (root / "chunks" / chunk_name(i)).is_file()]
    if not m["complete"] or len(present) < m["n_chunks"]:
        problems.append(f"{root} is incomplete ({len(present)}/{m['n_chunks']} chunks); re-run the same "
                        f"`riskscope cache` command to resume it")
    problems += [f"{root / 'chunks' / s}: not part of this store; move it away" for s in _stray_chunks(root, m["n_chunks"])]
    folder = root / "chunks"
    leftovers = sorted(p.name for p in folder.iterdir() if is_temp_name(p.name, CHUNK_FILE, safetensors=True)) \
        if folder.is_dir() else []
    if leftovers:
        notes.append(f"{len(leftovers)} temporary file(s) left by an interrupted writer in {folder} (e.g. "
                     f"{leftovers[0]}); the next `riskscope cache` run deletes them")
    chunks: list[Chunk] = []
    for i in present:
        try:
            chunk = check_chunk(root, m, i, _n_tokens(rows))
            if full:
                check_hash(chunk)
                with safe_open(str(chunk.path), framework="pt") as f:
                    for key in array_keys(m):
                        check_values(key, f.get_tensor(key).float().numpy(), chunk.path)
            chunks.append(chunk)
        except StoreError as e:
            problems.append(str(e))
        except Exception as e:  # the file changed between the header check and the read
            problems.append(f"{root / 'chunks' / chunk_name(i)}: cannot be read ({str(e)[:80]}); {RECOMPUTE}")
    if len(chunks) == len(present):
        problem = coverage_problem(m, chunks)
        if problem is not None:
            problems.append(f"{root}: {problem}")
    return StoreVerification(str(root), not problems, tuple(problems), len(present),
                             len(rows) if rows is not None else m["n_rows"], tuple(notes))


__all__ = ["FORMAT", "Store", "StoreVerification", "verify_store"]
