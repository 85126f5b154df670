"""The store's manifest and rows: their schema, their integrity checks, and how chunk files are named.

``manifest.json`` is checked on every open, cheaply: its fields have the right types;
``fingerprint`` is the hash of ``inputs``, and the copies of the inputs elsewhere in the
manifest (model weight hash, dataset digest, points, positions, dtype, chunk count) agree
with them; ``manifest_sha256`` is the sha256 of the manifest's canonical JSON without that
field. ``rows.jsonl`` must hash to the manifest's dataset digest. So an edited field (a
forged ``weight_hash``, a flipped label, a smaller ``n_chunks``) is refused with a message,
never copied onward. These are integrity checks against accidents and hand edits, not
signatures: whoever can write the files can recompute the hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .._io import atomic_text, iter_jsonl
from ..errors import RiskscopeError, StoreError
from ..hooks import READOUTS, HookPoint
from ._datasets import Dataset, Row

FORMAT = "riskscope-store/1"
STORE_DTYPES = ("float32", "float16", "bfloat16")
SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
CHUNK_FILE = r"\d{6}\.safetensors"
RECOMPUTE = "re-run `riskscope cache` with the same arguments to recompute it"
REWRITE = "re-run `riskscope cache` with the same arguments to rewrite it"


def chunk_name(i: int) -> str:
    return f"{i:06d}.safetensors"


def fingerprint_of(inputs: dict) -> str:
    """The store's ``fingerprint``: sha256 of its inputs as sorted-key JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def manifest_digest(manifest: dict) -> str:
    """``manifest_sha256``: sha256 of the manifest's canonical JSON (sorted keys, no spaces, ASCII),
    that field left out."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def readout_key(point: str, readout: str) -> str:
    """The tensor name of an extra readout of ``point``, e.g. ``resid_post.21@mean``."""
    return f"{point}@{readout}"


def array_layout(points: list[str], widths: dict, positions, dtype: str, readouts: dict | None = None) -> dict:
    """The tensors of every chunk: name -> dtype and shape, ``n`` the chunk's rows, ``tokens`` its tokens.

    With extra ``readouts`` (``{readout: [points]}``) every array also names its readout: the points'
    own arrays hold ``positions``, ``<point>@<readout>`` the extra readouts (a store without extra
    readouts has the layout it always had)."""
    st = SAFETENSORS_DTYPE[dtype]
    layout: dict = {"row_index": {"dtype": "I64", "shape": ["n"]}}
    for p in points:
        w = widths[p]
        shape = ["tokens", w] if positions == "all" else ["n", w] if isinstance(positions, str) \
            else ["n", len(positions), w]
        layout[p] = {"dtype": st, "shape": shape}
        if readouts:
            layout[p]["readout"] = positions
    for r, pts in (readouts or {}).items():
        for p in pts:
            layout[readout_key(p, r)] = {"dtype": st, "shape": ["n", widths[p]], "readout": r}
    if positions == "all":
        layout["token_offsets"] = {"dtype": "I64", "shape": ["n+1"]}
    return layout


def expected_shape(shape: list, n: int, tokens: int | None) -> tuple:
    sizes = {"n": n, "n+1": n + 1, "tokens": tokens}
    return tuple(sizes.get(d, d) if isinstance(d, str) else d for d in shape)


def write_manifest(root: Path, manifest: dict) -> None:
    """Seal (``manifest_sha256``) and write the manifest atomically, on disk before it replaces the old one."""
    manifest["manifest_sha256"] = manifest_digest(manifest)
    atomic_text(root / "manifest.json", json.dumps(manifest, indent=1), fsync=True)


# --- checks that never raise anything but StoreError, whatever the files hold ------------------------------


def _is_int(x, low: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def _schema_problem(m: dict) -> str | None:
    if m.get("format") != FORMAT:
        return f"unknown store format {str(m.get('format'))[:40]!r} (this riskscope reads {FORMAT})"
    for key, kind in (("fingerprint", str), ("inputs", dict), ("model", dict), ("dataset", dict),
                      ("points", list), ("widths", dict), ("dtype", str), ("complete", bool)):
        if not isinstance(m.get(key), kind):
            return f"field '{key}' is missing or not a {kind.__name__}"
    for key in ("n_rows", "n_chunks"):
        if not _is_int(m.get(key), 1):
            return f"field '{key}' must be a positive integer"
    if not isinstance(m["model"].get("weight_hash"), str) or not isinstance(m["dataset"].get("digest"), str):
        return "fields 'model.weight_hash' and 'dataset.digest' must be strings"
    points = m["points"]
    if not points or not all(isinstance(p, str) for p in points) or len(set(points)) != len(points):
        return "field 'points' must be a non-empty list of distinct hook point names"
    for p in points:
        try:
            HookPoint.parse(p)
        except (RiskscopeError, ValueError) as e:
            return f"field 'points': {p[:40]!r} is not a hook point ({str(e)[:80]})"
    if set(m["widths"]) != set(points) or not all(_is_int(w, 1) for w in m["widths"].values()):
        return "field 'widths' must give a positive width for every point"
    pos = m.get("positions")
    if not (pos in ("last", "mean", "all") or (isinstance(pos, list) and pos and all(_is_int(i, -2 ** 31) for i in pos))):
        return "field 'positions' must be last, mean, all or a list of token indices"
    if m["dtype"] not in STORE_DTYPES:
        return f"field 'dtype' must be one of {', '.join(STORE_DTYPES)}"
    extra = m.get("readouts")
    if extra is not None:
        if not (isinstance(extra, dict) and pos == "last" and all(r in READOUTS and r != "last" for r in extra)
                and all(isinstance(v, list) and set(v) <= set(points) for v in extra.values())):
            return f"field 'readouts' must map readouts ({', '.join(READOUTS[1:])}) to lists of the store's points"
    return _chunks_problem(m)


def _chunks_problem(m: dict) -> str | None:
    chunks = m.get("chunks")
    if "chunks" not in m:
        return None  # written before per-chunk records
    if not isinstance(chunks, list):
        return "field 'chunks' must be a list"
    seen: set[int] = set()
    for rec in chunks:
        if not (isinstance(rec, dict) and isinstance(rec.get("file"), str) and re.fullmatch(CHUNK_FILE, rec["file"])
                and isinstance(rec.get("rows"), list) and len(rec["rows"]) == 2
                and all(_is_int(r) for r in rec["rows"]) and _is_int(rec.get("bytes"), 1)
                and isinstance(rec.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", rec["sha256"])
                and (m.get("positions") != "all" or _is_int(rec.get("tokens")))):
            return "field 'chunks' holds a record that is not {file, rows: [start, stop], bytes, sha256}"
        i = int(rec["file"][:6])
        start, stop = rec["rows"]
        rows_per = m["inputs"].get("chunk_rows")
        if i in seen or i >= m["n_chunks"] or not _is_int(rows_per, 1) \
                or (start, stop) != (i * rows_per, min((i + 1) * rows_per, m["n_rows"])):
            return f"field 'chunks': the record of {rec['file']} does not match the store's chunking"
        seen.add(i)
    if m["complete"] and len(seen) != m["n_chunks"]:
        return f"field 'chunks' records {len(seen)} of the {m['n_chunks']} chunks of a complete store"
    return None


def _integrity_problem(m: dict) -> str | None:
    """Whether the manifest is as riskscope wrote it (see the module docstring)."""
    try:
        if m["fingerprint"] != fingerprint_of(m["inputs"]):
            return "its fingerprint does not match its inputs"
    except (RecursionError, ValueError, TypeError):
        return "it cannot be hashed"
    inputs = m["inputs"]
    copies = [("model.weight_hash", m["model"]["weight_hash"], inputs.get("model_weight_hash")),
              ("dataset.digest", m["dataset"]["digest"], inputs.get("dataset_digest")),
              ("points", m["points"], inputs.get("points")), ("positions", m["positions"], inputs.get("positions")),
              ("dtype", m["dtype"], inputs.get("dtype"))]
    if "rows" in m["dataset"]:
        copies.append(("dataset.rows", m["dataset"]["rows"], m["n_rows"]))
    rows_per = inputs.get("chunk_rows")
    if _is_int(rows_per, 1):
        copies.append(("n_chunks", m["n_chunks"], -(-m["n_rows"] // rows_per)))
    if "readouts" in m or "readouts" in inputs:
        copies.append(("readouts", m.get("readouts"), inputs.get("readouts")))
    if "arrays" in m:
        copies.append(("arrays", m["arrays"], array_layout(m["points"], m["widths"], m["positions"], m["dtype"],
                                                           m.get("readouts"))))
    for name, value, want in copies:
        if value != want:
            return f"its field '{name}' disagrees with the inputs it was made from"
    return None


def read_manifest(root: Path) -> dict:
    """The checked manifest of the store at ``root``; :class:`StoreError` for anything else."""
    path = root / "manifest.json"
    if not path.is_file():
        raise StoreError(f"{root} is not an activation store (no manifest.json); create it with `riskscope cache`")
    try:
        m = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"{path}: not a store manifest ({str(e)[:80]})") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(m, dict):
        raise StoreError(f"{path}: not a store manifest (not a JSON object)")
    try:
        sealed = "manifest_sha256" in m and m["manifest_sha256"] != manifest_digest(m)
    except (RecursionError, ValueError, TypeError):
        sealed = True
    problem = _schema_problem(m) if not sealed else None
    if problem is None:
        edit = "its manifest_sha256 does not match its contents" if sealed else _integrity_problem(m)
        if edit is not None:
            problem = (f"the manifest was edited after riskscope wrote it ({edit}); restore it, or delete {root} "
                       f"and re-run `riskscope cache`")
    if problem is not None:
        raise StoreError(f"{path}: {problem}")
    return m


_ROW_FIELDS = {"id": str, "text": str, "pair_id": (str, type(None)), "category": (str, type(None)),
               "split": (str, type(None))}


def read_rows(root: Path, manifest: dict) -> list[dict]:
    """The checked rows of the store at ``root``: one per text, dataset order, hashing to the manifest's
    dataset digest; :class:`StoreError` naming ``rows.jsonl:line`` otherwise."""
    path = root / "rows.jsonl"
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror}); {REWRITE}") from None
    except UnicodeDecodeError:
        raise StoreError(f"{path}: not UTF-8; {REWRITE}") from None
    rows: list[dict] = []
    for n, rec in iter_jsonl(text, str(path), StoreError):
        at = f"{path}:{n}"
        ok = rec.get("index") == len(rows) and _is_int(rec.get("index")) and _is_int(rec.get("label"), -2 ** 63) \
            and _is_int(rec.get("n_tokens"), 1) and (rec.get("severity") is None or _is_int(rec["severity"], -2 ** 63)) \
            and all(isinstance(rec.get(k), t) for k, t in _ROW_FIELDS.items())
        if not ok:
            raise StoreError(f"{at}: not a row of this store (fields index, id, text, label, pair_id, category, "
                             f"severity, split, n_tokens); {REWRITE}")
        rows.append(rec)
    if len(rows) != manifest["n_rows"]:
        raise StoreError(f"{path}: {len(rows)} rows, the manifest says {manifest['n_rows']}; {REWRITE}")
    try:
        digest = Dataset("rows", tuple(Row(r["id"], r["text"], r["label"], r["pair_id"], r["category"], r["severity"],
                                           r["split"]) for r in rows)).digest()
    except UnicodeEncodeError:
        digest = None
    if digest != manifest["dataset"]["digest"]:
        raise StoreError(f"{path}: the rows do not match the dataset digest in manifest.json (the file was edited); "
                         f"{REWRITE}")
    return rows


__all__ = ["FORMAT", "STORE_DTYPES", "array_layout", "readout_key", "chunk_name", "fingerprint_of", "manifest_digest",
           "read_manifest", "read_rows", "write_manifest"]
