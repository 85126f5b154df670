"""File helpers: atomic writes (text, JSON, safetensors), JSONL reading with line-numbered errors, file
hashes, the one rule for floats in JSON (non-finite -> null, rounded to 6 decimals unless asked otherwise),
and output folders: :func:`check_output_dir` before any work, :class:`OutputFiles` with a manifest of what
was written.

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
from typing import Any, Iterable, Iterator, Mapping

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


# --- output folders: checked before any work, and a manifest of what riskscope wrote ---------------------

MANIFEST = "files.json"
"""Name of the manifest riskscope writes into an output folder: the files it wrote there."""
_MANIFEST_FORMAT = "riskscope-files/1"
_TMP = re.compile(r"^\..+\.\d+\.tmp$")  # a temporary file of an atomic write (left only by a hard kill)


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output folder riskscope could not write, before any work; creates nothing.

    Refused: a path that exists and is not a folder; a folder that is not writable; a path whose
    nearest existing parent is a file or is not writable. ``flag`` names the option in messages.

    >>> check_output_dir("/tmp/riskscope-doctest/not/yet/there").name
    'there'
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RiskscopeError(f"{flag} {path} is an existing file, not a folder; choose a folder (new or riskscope's)")
    base = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not base.is_dir():
        raise RiskscopeError(f"{flag} {path}: cannot create it, {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RiskscopeError(f"{flag} {path}: {base} is not writable; choose a folder you can write to")
    return path


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temp file of a live writer is never removed)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, finals: Iterable[str]) -> list[str]:
    """Delete the temporary files a killed riskscope writer left in ``folder`` for the files ``finals``
    (exact names): ``.NAME.PID.tmp`` whose process is gone. Nothing else is touched; returns the names
    removed.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / ".metrics.json.999999999.tmp").write_text("{")
    >>> remove_stale_temps(d, ["metrics.json"])
    ['.metrics.json.999999999.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for final in finals:
        pattern = re.compile(rf"\.{re.escape(final)}\.(\d+)\.tmp")
        for entry in folder.iterdir():
            m = pattern.fullmatch(entry.name)
            if m and entry.is_file() and not entry.is_symlink() and not _pid_alive(int(m.group(1))):
                entry.unlink()
                removed.append(entry.name)
    return sorted(removed)


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output file riskscope could not write, before any work; creates nothing.

    Refused: an existing folder; a parent that is a file or is not writable. An existing file is
    replaced atomically when the output is written (the user named it).

    >>> check_output_file("/tmp/riskscope-doctest/out.jsonl").name
    'out.jsonl'
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise RiskscopeError(f"{flag} {path} is a folder; give a file name")
    base = next(p for p in path.parents if p.exists() or p == p.parent)
    if not base.is_dir():
        raise RiskscopeError(f"{flag} {path}: cannot create it, {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RiskscopeError(f"{flag} {path}: {base} is not writable; choose a folder you can write to")
    return path


def read_manifest(folder: str | os.PathLike, name: str = MANIFEST) -> set[str] | None:
    """The files (paths relative to ``folder``) that riskscope's manifest there lists; None without one."""
    file = Path(folder) / name
    if not file.is_file():
        return None
    what = "riskscope cannot tell which files it wrote there: move them away or choose another folder"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RiskscopeError(f"{file}: not a valid manifest ({e}); {what}") from None
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        raise RiskscopeError(f"{file}: not a riskscope manifest (format {_MANIFEST_FORMAT!r}); {what}")
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and _safe_relative(f) for f in files):
        raise RiskscopeError(f"{file}: field 'files' must list relative paths inside the folder; {what}")
    return set(files)


def _safe_relative(rel: str) -> bool:
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and rel == p.as_posix()


def check_foreign_files(folder: str | os.PathLike, names: Iterable[str], subfolders: Iterable[str] = (),
                        manifest: str = MANIFEST) -> None:
    """Refuse, before any work, a folder where riskscope would overwrite or sit beside files it did not write.

    A file is riskscope's when the folder's manifest lists it. Refused: any of ``names`` (paths relative
    to ``folder``) that exists and is not riskscope's; any file inside ``subfolders`` (riskscope's own
    folders, e.g. ``vectors``) that is not riskscope's. Other files in ``folder`` are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    ours = read_manifest(folder, manifest) or set()
    hint = "move it away or choose another output folder"
    for rel in names:
        p = folder / rel
        if (p.exists() or p.is_symlink()) and rel not in ours:
            raise RiskscopeError(f"{p} exists and riskscope did not write it (it is not in {folder / manifest}); "
                                 f"{hint}")
    for sub in subfolders:
        d = folder / sub
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise RiskscopeError(f"{d} is not a folder riskscope made; {hint}")
        for p in sorted(d.rglob("*")) if d.is_dir() else ():
            rel = p.relative_to(folder).as_posix()
            if (p.is_file() or p.is_symlink()) and rel not in ours and not _TMP.match(p.name):
                raise RiskscopeError(f"{p}: riskscope did not write this file (it is not in {folder / manifest}) "
                                     f"but it sits in riskscope's {sub}/ folder; {hint}")


class OutputFiles:
    """Write a folder's files, each atomically, and list them in a manifest, so that a re-run into the
    same folder replaces only riskscope's own previous files and never deletes anything else.

    ``planned`` are the files (relative paths) the caller is about to write; ``subfolders`` are folders
    that only riskscope writes into. Construction checks the folder (:func:`check_output_dir`,
    :func:`check_foreign_files`) and records ``previous | planned`` as a pending manifest, so a crash
    never leaves a file of ours that no manifest lists. Write each file to :meth:`path`; :meth:`finish`
    writes the final manifest (the files written this time), then removes the previous run's files that
    were not written again.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> files = OutputFiles(out, ["a.txt"])
    >>> _ = atomic_text(files.path("a.txt"), "hi")
    >>> sorted(files.finish())
    ['a.txt']
    """

    def __init__(self, folder: str | os.PathLike, planned: Iterable[str], subfolders: Iterable[str] = (),
                 manifest: str = MANIFEST, flag: str = "--out"):
        self.folder = check_output_dir(folder, flag)
        self.manifest = manifest
        self.planned = set(planned)
        bad = [r for r in self.planned if not _safe_relative(r) or r == manifest]
        if bad:
            raise RiskscopeError(f"cannot write {bad[0]!r} into {self.folder}: not a plain relative path")
        self.subfolders = tuple(subfolders)
        if (self.folder / manifest).is_file():  # a folder of ours: tidy what a killed earlier run left
            for rel in sorted(self.planned | {manifest}):
                remove_stale_temps((self.folder / rel).parent, [Path(rel).name])
            for sub in self.subfolders:
                d = self.folder / sub
                for f in (d.iterdir() if d.is_dir() and not d.is_symlink() else ()):
                    if f.is_file() and _SAFETENSORS_TEMP.fullmatch(f.name):
                        f.unlink()
        check_foreign_files(self.folder, sorted(self.planned), self.subfolders, manifest)
        self.previous = read_manifest(self.folder, manifest) or set()
        self.written: set[str] = set()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_manifest(self.previous | self.planned, complete=False)

    def _write_manifest(self, files: set[str], complete: bool) -> None:
        atomic_json(self.folder / self.manifest, {"format": _MANIFEST_FORMAT, "complete": complete,
                                                  "files": sorted(files)})

    def path(self, rel: str) -> Path:
        """Where to write the planned file ``rel`` (its folder is created); it counts as written."""
        if rel not in self.planned:
            raise RiskscopeError(f"{rel!r} was not planned for {self.folder}")
        p = self.folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        self.written.add(rel)
        return p

    def finish(self) -> set[str]:
        """Write the manifest (last), then delete the previous run's files not written again; returns the
        files written."""
        written = {r for r in self.written if (self.folder / r).is_file()}
        self._write_manifest(written, complete=True)
        for rel in sorted(self.previous - written):
            p = self.folder / rel
            if p.is_file() and not p.is_symlink():
                p.unlink()
        for sub in self.subfolders:  # a folder of ours that the new run left empty
            d = self.folder / sub
            if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
                d.rmdir()
        return written
