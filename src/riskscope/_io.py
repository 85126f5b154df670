"""File helpers: atomic writes (text, JSON, safetensors), JSONL reading with line-numbered errors, file
hashes, and the one rule for floats in JSON (non-finite -> null, rounded to 6 decimals unless asked otherwise).

``safetensors`` writes through a private temporary file, so what it leaves is mode
0600 whatever the umask: a run folder shared with a team would be unreadable to
them. :func:`save_safetensors` writes to a temporary name next to the target,
gives it the mode an ordinary file would get (``0666 & ~umask``) and renames it
into place, so a reader never sees a half-written file.

Temporary names (what a killed writer can leave behind): riskscope's writers use
``.NAME.PID.tmp`` next to the target (:func:`temp_path`); safetensors itself writes
through ``.tmpXXXXXX`` (six letters or digits, Rust's ``tempfile``) in the same folder.
:func:`is_temp_name` recognises both, so an owner of a folder can clean up after a crash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import RiskscopeError


def iter_jsonl(text: str, where: str, error: type[RiskscopeError] = RiskscopeError,
               objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of JSONL ``text``; ``where`` names the file in errors.

    Lines end at ``\\n`` only (JSON strings may hold U+2028 and other characters that
    :meth:`str.splitlines` would split at); any problem, nesting too deep included, is
    ``error`` naming ``where:line``.

    >>> list(iter_jsonl('{"a": 1}\\n\\n{"b": 2}', "f.jsonl"))
    [(1, {'a': 1}), (3, {'b': 2})]
    """
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}:{n}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise error(f"{where}:{n}: JSON nested too deeply") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise error(f"{where}:{n}: invalid JSON ({str(e)[:80]})") from None
        if objects and not isinstance(rec, dict):
            raise error(f"{where}:{n}: each line must be a JSON object")
        yield n, rec


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name riskscope's atomic writers use for ``path``: ``.NAME.PID.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")


def is_temp_name(name: str, final: str, safetensors: bool = False) -> bool:
    """Whether file ``name`` is a temporary file that a killed writer of a file whose name matches the
    regular expression ``final`` can leave: riskscope's ``.FINAL.PID.tmp``, and with ``safetensors``
    also safetensors' own ``.tmpXXXXXX``.

    >>> is_temp_name(".000003.safetensors.4242.tmp", r"\\d{6}\\.safetensors")
    True
    >>> is_temp_name(".tmpAb3dE9", r"\\d{6}\\.safetensors", safetensors=True), is_temp_name("notes.tmp", r"notes")
    (True, False)
    """
    if re.fullmatch(rf"\.(?:{final})\.\d+\.tmp", name):
        return True
    return safetensors and _SAFETENSORS_TEMP.fullmatch(name) is not None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_mode() -> int:
    """The permission bits a newly created ordinary file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                     fsync: bool = False) -> Path:
    """Write torch tensors or numpy arrays (not mixed) to ``path`` atomically, readable as the umask allows;
    with ``fsync``, the data is on disk before the rename (crash-safe stores).

    A failed write (a full disk, a file-size limit) raises :class:`OSError` with its errno, whether the
    operating system reported it to Python or to safetensors' own writer; nothing is left behind."""
    from safetensors import SafetensorError

    path = Path(path)
    first = next(iter(tensors.values()), None)
    if first is not None and type(first).__module__.startswith("numpy"):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    tmp = temp_path(path)
    try:
        try:
            save_file(dict(tensors), str(tmp), metadata=metadata)
        except SafetensorError as e:
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from e
        os.chmod(tmp, file_mode())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _naming(e, path) from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _naming(e: OSError, path: Path) -> OSError:
    """``e``, or the same error naming the file being written when the system did not say."""
    return e if e.filename else OSError(e.errno, e.strerror or str(e), str(path))


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
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _naming(e, path) from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON (UTF-8, non-ASCII kept) atomically; see :func:`atomic_text`."""
    return atomic_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str))
