"""Labelled text datasets: JSONL/CSV files and built-ins, validated with file:line:field errors.

Two layouts are accepted and detected from the first record's fields:

* **row per text**: ``{"text", "label", "pair_id"?, "category"?, "severity"?, "id"?, "split"?}``
* **pair per row**: ``{"pair_id", "risky", "benign", "category"?, "severity"?, "split"?}``;
  each row becomes two texts with ids ``<pair_id>:risky`` (label 1) and
  ``<pair_id>:benign`` (label 0, severity 0).

Labels may be 1/0, true/false, risky/benign or high/low. Numbers may be written as
integral floats (``1.0``, ``"3.0"``); ``2.7`` or ``true`` as a severity is an error.
A text may hold at most :data:`MAX_TEXT_CHARS` characters.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import threading
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from .._io import iter_jsonl
from ..errors import DatasetError

_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0, "risky": 1, "benign": 0, "high": 1, "low": 0}
BUILTINS = {
    "cyber_risk_pairs": ("cyber_risk_pairs.jsonl",
                         "768 matched pairs of tacit cyber-risk scenarios, 12 categories "
                         "(docs/datasets/cyber_risk_pairs.md)"),
    "cyber_risk_heldout": ("cyber_risk_heldout.jsonl",
                           "external held-out set: 132 new matched pairs, same rules, for `riskscope evaluate` "
                           "(docs/datasets/cyber_risk_heldout.md)"),
}
BUILTIN_VERSIONS: dict[str, tuple[str, str]] = {
    "cyber_risk_pairs": ("2", "4d3d0aa184768e5e7d54f1075491cb3bfcd8506b171db5da7676195d43f8a444"),
    "cyber_risk_heldout": ("1", "98a553bd81b593159951f582c0f601fd55ac41ad24e910f7dc64b0fc2c916286"),
}
"""Version and sha256 of each built-in file. Any edit of a file bumps its version and records the new hash
(tests/test_dataset_quality.py checks that the hash matches the file); runs record the version."""
DEFAULT_DATASET = "cyber_risk_pairs"
MAX_TEXT_CHARS = 1_000_000
"""The most characters a text may hold (a longer one is refused when the file is read)."""
_CSV_LIMIT = threading.Lock()  # csv.field_size_limit is process-wide: one CSV parse at a time changes it


@dataclass(frozen=True)
class Row:
    """One text with its labels."""

    id: str
    text: str
    label: int
    pair_id: str | None = None
    category: str | None = None
    severity: int | None = None
    split: str | None = None


@dataclass(frozen=True)
class Dataset:
    """An ordered, validated collection of :class:`Row` (pairs stay adjacent)."""

    name: str
    rows: tuple[Row, ...]
    version: str | None = None
    """The built-in dataset's version (:data:`BUILTIN_VERSIONS`); None for a file."""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rows]

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    @property
    def pair_ids(self) -> list[str | None]:
        return [r.pair_id for r in self.rows]

    @property
    def n_pairs(self) -> int:
        return len({r.pair_id for r in self.rows if r.pair_id is not None})

    def limit(self, n: int | None) -> "Dataset":
        """The first ``n`` pairs (or first ``n`` rows for a dataset without pairs)."""
        if n is None:
            return self
        if n < 1:
            raise DatasetError(f"--limit must be >= 1, got {n}")
        if all(r.pair_id is None for r in self.rows):
            return replace(self, rows=self.rows[:n])
        keep: list[str] = []
        for r in self.rows:
            if r.pair_id not in keep:
                keep.append(r.pair_id)
        chosen = set(keep[:n])
        return replace(self, rows=tuple(r for r in self.rows if r.pair_id in chosen))

    def digest(self) -> str:
        """sha256 of the rows (ids, texts, labels, groups): identifies the data, not the file."""
        blob = json.dumps([r.__dict__ for r in self.rows], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def summary(self) -> dict:
        cats: dict[str, int] = {}
        for r in self.rows:
            cats[r.category or "-"] = cats.get(r.category or "-", 0) + 1
        out = {"name": self.name, "rows": len(self), "pairs": self.n_pairs,
               "risky": int(self.labels.sum()), "benign": int((self.labels == 0).sum()), "categories": cats}
        if self.version is not None:
            out["version"] = self.version
        return out


def list_builtins() -> dict[str, str]:
    """Built-in dataset names and one-line descriptions."""
    return {k: v[1] for k, v in BUILTINS.items()}


def load_dataset(spec: str = DEFAULT_DATASET) -> Dataset:
    """A built-in by name, or a ``.jsonl``/``.csv`` file path; raises :class:`DatasetError`."""
    if spec in BUILTINS:
        ref = resources.files(__package__).joinpath("builtin", BUILTINS[spec][0])
        data = _parse(ref.read_bytes(), f"<builtin {spec}>", ".jsonl", spec)
        return replace(data, version=BUILTIN_VERSIONS[spec][0]) if spec in BUILTIN_VERSIONS else data
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DatasetError(f"{spec}: no such dataset file or built-in (built-ins: {', '.join(BUILTINS)})")
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise DatasetError(f"{path}: dataset files must be .jsonl or .csv")
    return _parse(path.read_bytes(), str(path), path.suffix.lower(), path.stem)


def _records(data: bytes, where: str, suffix: str) -> Iterator[tuple[int, dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # e.start counts after a BOM
        line = body[:e.start].count(b"\n") + 1
        raise DatasetError(f"{where}:{line}: not UTF-8 (byte {e.start})") from None
    if suffix == ".csv":
        yield from _csv_records(text, where)
        return
    yield from iter_jsonl(text, where, DatasetError)


def _csv_records(text: str, where: str) -> list[tuple[int, dict]]:
    """All records of a CSV text; a field may be as long as the longest text allowed."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out: list[tuple[int, dict]] = []
    with _CSV_LIMIT:
        before = csv.field_size_limit(MAX_TEXT_CHARS + 1)
        try:
            for rec in reader:
                out.append((reader.line_num, {k: v for k, v in rec.items()
                                              if isinstance(k, str) and isinstance(v, str) and v != ""}))
        except csv.Error as e:
            line = max(reader.reader.line_num, 1)  # DictReader's own count lags behind on errors
            if "field larger than field limit" in str(e):
                raise DatasetError(f"{where}:{line}: a field holds more than {MAX_TEXT_CHARS:,} characters, the "
                                   f"most a text may hold") from None
            raise DatasetError(f"{where}:{line}: invalid CSV ({e})") from None
        finally:
            csv.field_size_limit(before)
    return out


def _show(value) -> str:
    """A field value for an error message: short, one line, safe for any JSON value."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _utf8(value: str, key: str, at: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DatasetError(f"{at}: field '{key}' holds an unpaired surrogate (\\u{ord(value[e.start]):04x}) that "
                           f"is not a character") from None
    return value


def _text(rec: dict, key: str, at: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str):
        raise DatasetError(f"{at}: field '{key}' is missing or not a string")
    if not value.strip():
        raise DatasetError(f"{at}: field '{key}' is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise DatasetError(f"{at}: field '{key}' has {len(value):,} characters, more than the {MAX_TEXT_CHARS:,} "
                           f"a text may hold")
    return _utf8(value, key, at)


def _opt_str(rec: dict, key: str, at: str) -> str | None:
    """An optional name (id, pair_id, category, split): a string or a number; null means absent."""
    value = rec.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return _utf8(value, key, at)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else str(value)
    raise DatasetError(f"{at}: field '{key}' must be a string or a number, got {_show(value)}")


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}(?:\.0*)?")


def _integer(value) -> int | None:
    """An int64 from JSON or CSV: ints, integral floats (``3.0``) and their spellings (``"3"``, ``"3.0"``);
    None for anything else (bools, ``2.7``, ``"x"``, non-finite or out-of-range numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        value = int(text.split(".")[0]) if _INT_TEXT.fullmatch(text) else None
    if not isinstance(value, int) or not -2 ** 63 <= value < 2 ** 63:
        return None
    return value


def _severity(rec: dict, at: str) -> int | None:
    value = rec.get("severity")
    if value is None:
        return None
    number = _integer(value)
    if number is None:
        raise DatasetError(f"{at}: field 'severity' must be an integer, got {_show(value)}")
    return number


def _label(rec: dict, at: str) -> int:
    raw = rec.get("label")
    label = None
    if isinstance(raw, bool):
        label = int(raw)
    elif isinstance(raw, (str, int, float)):
        label = _LABELS.get(raw.strip().lower()) if isinstance(raw, str) else None
        label = label if label is not None else _integer(raw)
    if label not in (0, 1):
        raise DatasetError(f"{at}: field 'label' must be one of 1/0, true/false, risky/benign, high/low; "
                           f"got {_show(raw)}")
    return label


def _parse(data: bytes, where: str, suffix: str, name: str) -> Dataset:
    rows: list[Row] = []
    lines: list[int] = []
    layout = None
    for n, rec in _records(data, where, suffix):
        at = f"{where}:{n}"
        this = "pair" if "risky" in rec or "benign" in rec else "row"
        layout = layout or this
        if this != layout:
            raise DatasetError(f"{at}: mixes the pair-per-row and row-per-text layouts")
        common = dict(category=_opt_str(rec, "category", at), split=_opt_str(rec, "split", at))
        if layout == "pair":
            pid = _opt_str(rec, "pair_id", at)
            if pid is None or not pid.strip():
                raise DatasetError(f"{at}: field 'pair_id' is missing or empty")
            sev = _severity(rec, at)
            rows.append(Row(f"{pid}:risky", _text(rec, "risky", at), 1, pid, severity=sev, **common))
            rows.append(Row(f"{pid}:benign", _text(rec, "benign", at), 0, pid,
                            severity=0 if sev is not None else None, **common))
            lines += [n, n]
        else:
            label = _label(rec, at)
            rows.append(Row(_opt_str(rec, "id", at) or str(len(rows)), _text(rec, "text", at), label,
                            _opt_str(rec, "pair_id", at), severity=_severity(rec, at), **common))
            lines.append(n)
    if not rows:
        raise DatasetError(f"{where}: the dataset is empty")
    _check(rows, lines, where)
    return Dataset(name=name, rows=tuple(rows))


def _check(rows: list[Row], lines: list[int], where: str) -> None:
    seen_id: dict[str, int] = {}
    seen_text: dict[str, int] = {}
    pairs: dict[str, list[int]] = {}
    for i, (r, n) in enumerate(zip(rows, lines)):
        if r.id in seen_id:
            raise DatasetError(f"{where}:{n}: field 'id' duplicates {r.id!r} from line {seen_id[r.id]}")
        seen_id[r.id] = n
        key = " ".join(r.text.split()).lower()
        if key in seen_text:
            raise DatasetError(f"{where}:{n}: field 'text' duplicates the text on line {seen_text[key]}")
        seen_text[key] = n
        if r.pair_id is not None:
            pairs.setdefault(r.pair_id, []).append(i)
    for pid, members in pairs.items():
        n = lines[members[-1]]
        if len(members) != 2:
            raise DatasetError(f"{where}:{n}: field 'pair_id' {pid!r} has {len(members)} members; pairs need 2")
        if rows[members[0]].label == rows[members[1]].label:
            raise DatasetError(f"{where}:{n}: field 'label': both members of pair {pid!r} have label "
                               f"{rows[members[0]].label}; a pair needs one risky and one benign text")


__all__ = ["BUILTINS", "BUILTIN_VERSIONS", "DEFAULT_DATASET", "MAX_TEXT_CHARS", "Dataset", "Row", "list_builtins",
           "load_dataset"]
