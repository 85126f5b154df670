"""File helpers: atomic writes (text, JSON, safetensors), JSONL reading with line-numbered errors, and the
one rule for floats in JSON (non-finite -> null, rounded to 6 decimals unless asked otherwise).

``safetensors`` writes through a private temporary file, so what it leaves is mode
0600 whatever the umask: a run folder shared with a team would be unreadable to
them. :func:`save_safetensors` writes to a temporary name next to the target,
gives it the mode an ordinary file would get (``0666 & ~umask``) and renames it
into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import RiskscopeError


def iter_jsonl(text: str, where: str, error: type[RiskscopeError] = RiskscopeError,
               objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of JSONL ``text``; ``where`` names the file in errors.

    >>> list(iter_jsonl('{"a": 1}\\n\\n{"b": 2}', "f.jsonl"))
    [(1, {'a': 1}), (3, {'b': 2})]
    """
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}:{n}: invalid JSON ({e.msg})") from None
        if objects and not isinstance(rec, dict):
            raise error(f"{where}:{n}: each line must be a JSON object")
        yield n, rec


def file_mode() -> int:
    """The permission bits a newly created ordinary file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                     fsync: bool = False) -> Path:
    """Write torch tensors or numpy arrays (not mixed) to ``path`` atomically, readable as the umask allows;
    with ``fsync``, the data is on disk before the rename (crash-safe stores)."""
    path = Path(path)
    first = next(iter(tensors.values()), None)
    if first is not None and type(first).__module__.startswith("numpy"):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=metadata)
        os.chmod(tmp, file_mode())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_float(x, digits: int | None = 6) -> float | None:
    """A float as riskscope writes it to JSON: None for NaN and infinities, else rounded to ``digits``
    decimals (``None`` keeps full precision, as metrics.json does).

    >>> json_float(0.12345678), json_float(float("nan")), json_float(2.5, None)
    (0.123457, None, 2.5)
    """
    x = float(x)
    if not math.isfinite(x):
        return None
    return x if digits is None else round(x, digits)


def atomic_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename: a reader sees the old
    file or the new one, never half of one; with ``fsync`` the data is on disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON (UTF-8, non-ASCII kept) atomically; see :func:`atomic_text`."""
    return atomic_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str))
