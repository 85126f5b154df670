"""Text to train SAEs on: a default corpus that exists on every machine, or the user's own files.

``pydocs`` (the default) interleaves, by characters, two halves that come with Python and
with riskscope's own dependencies, so nothing is downloaded:

* English: the Python Language Reference topics (``pydoc_data.topics``) and the docstrings
  (200 characters or more) of the standard library, numpy, scipy, scikit-learn and matplotlib;
* code: the standard library's source files (tests excluded), comments included.

Files are visited in a fixed shuffled order, so the corpus is the same text on machines
with the same package versions (:meth:`Corpus.describe` records them). See docs/sae.md for
why this source, its size and its licences.

Other corpora: a ``.txt`` file (documents separated by blank lines), ``.jsonl`` (one object
per line with a ``text`` field), ``.parquet`` (a ``text`` column; needs pyarrow), or
``hf:NAME[:SPLIT]`` for a Hugging Face dataset already in the local cache.

>>> c = load_corpus("pydocs")
>>> first = next(iter(c.texts()))
>>> isinstance(first, str) and len(first) > 0
True
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import random
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

from .._io import iter_jsonl
from ..errors import RiskscopeError

DEFAULT_CORPUS = "pydocs"
DOC_PACKAGES = ("numpy", "scipy", "sklearn", "matplotlib")
_MIN_DOC = 200


@dataclass(frozen=True)
class Corpus:
    """A named, re-iterable sequence of texts."""

    name: str
    """What the user passed (``pydocs``, a path, ``hf:NAME``)."""
    make: Callable[[], Iterator[str]] = field(repr=False)
    """Returns a fresh iterator over the texts, in a fixed order."""
    info: dict = field(default_factory=dict)
    """Where the text comes from (kind, path or versions)."""

    def texts(self) -> Iterator[str]:
        """The texts, empty ones skipped."""
        for t in self.make():
            if isinstance(t, str) and t.strip():
                yield t

    def check(self) -> None:
        """Raise :class:`RiskscopeError` if the corpus holds no text (reads only up to the first text)."""
        for _ in self.texts():
            return
        raise RiskscopeError(f"corpus {self.name!r} holds no text")

    def describe(self) -> dict:
        return {"name": self.name, **self.info}


# --- the default corpus ------------------------------------------------------------------------


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def _package_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return []
    root = Path(spec.origin).parent
    return sorted(p for p in root.rglob("*.py") if not {"tests", "test", "__pycache__"}.intersection(
        p.relative_to(root).parts))


def _shuffled(paths: list[Path], salt: str) -> list[Path]:
    out = list(paths)
    random.Random(f"riskscope-pydocs-{salt}").shuffle(out)
    return out


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= _MIN_DOC:
                yield doc


def _english() -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        topics = {}
    for key in sorted(topics):
        yield topics[key]
    files = _stdlib_files() + [p for name in DOC_PACKAGES for p in _package_files(name)]
    for path in _shuffled(files, "english"):
        yield from _docstrings(path)


def _code() -> Iterator[str]:
    for path in _shuffled(_stdlib_files(), "code"):
        try:
            yield path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue


def _interleave(*streams: Iterator[str]) -> Iterator[str]:
    """Texts from each stream in turn, the stream with the fewest characters so far going next."""
    live = list(streams)
    chars = [0] * len(live)
    while live:
        i = min(range(len(live)), key=lambda j: chars[j])
        try:
            text = next(live[i])
        except StopIteration:
            del live[i], chars[i]
            continue
        chars[i] += len(text)
        yield text


def _pydocs() -> Corpus:
    versions = {"python": sys.version.split()[0]}
    for name in DOC_PACKAGES:
        dist = {"sklearn": "scikit-learn"}.get(name, name)
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return Corpus(DEFAULT_CORPUS, lambda: _interleave(_english(), _code()),
                  {"kind": "builtin", "sources": "Python Language Reference topics + docstrings of the standard library, "
                   "numpy, scipy, scikit-learn, matplotlib; standard library source code", "versions": versions})


# --- user corpora ------------------------------------------------------------------------------


def _txt(path: Path) -> Iterator[str]:
    block: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block)
                block = []
    if block:
        yield "".join(block)


def _jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            for _, rec in iter_jsonl(line, f"{path}:{n}"):
                value = rec.get(text_field)
                if not isinstance(value, str):
                    raise RiskscopeError(f"{path}:{n}: field {text_field!r} is missing or not a string")
                yield value


def _parquet(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RiskscopeError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(str(path))
    except Exception as e:  # pyarrow raises its own types for a file that is not parquet
        raise RiskscopeError(f"{path}: not a readable parquet file ({type(e).__name__})") from None
    if text_field not in pf.schema_arrow.names:
        raise RiskscopeError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


def _hf(name: str, split: str, text_field: str) -> Iterator[str]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise RiskscopeError("hf: corpora need the `datasets` package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=False)
    except Exception as e:  # not cached, or not a dataset
        raise RiskscopeError(f"hf:{name} split {split!r} is not in the local Hugging Face cache "
                             f"({type(e).__name__}); this machine is offline") from None
    if text_field not in ds.column_names:
        raise RiskscopeError(f"hf:{name} has no column {text_field!r} (columns: {', '.join(ds.column_names)})")
    for row in ds:
        yield row[text_field]


def load_corpus(spec: str = DEFAULT_CORPUS, text_field: str = "text") -> Corpus:
    """The corpus named by ``spec``: ``pydocs``, a ``.txt`` / ``.jsonl`` / ``.parquet`` file, or ``hf:NAME[:SPLIT]``."""
    if spec == DEFAULT_CORPUS:
        return _pydocs()
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        if not name:
            raise RiskscopeError("--corpus hf:NAME[:SPLIT] needs a dataset name")
        split = split or "train"
        _hf_check(name)
        return Corpus(spec, lambda: _hf(name, split, text_field), {"kind": "hf", "dataset": name, "split": split})
    path = Path(spec).expanduser()
    if not path.is_file():
        raise RiskscopeError(f"corpus {spec!r} is not {DEFAULT_CORPUS}, hf:NAME or an existing .txt/.jsonl/.parquet file")
    suffix = path.suffix.lower()
    digest = _file_digest(path)
    if suffix == ".txt":
        return Corpus(spec, lambda: _txt(path), {"kind": "txt", "path": str(path.resolve()), "sha256": digest})
    if suffix == ".jsonl":
        return Corpus(spec, lambda: _jsonl(path, text_field), {"kind": "jsonl", "path": str(path.resolve()),
                                                               "text_field": text_field, "sha256": digest})
    if suffix == ".parquet":
        return Corpus(spec, lambda: _parquet(path, text_field), {"kind": "parquet", "path": str(path.resolve()),
                                                                 "text_field": text_field, "sha256": digest})
    raise RiskscopeError(f"{path}: unknown corpus format {suffix!r}; use .txt, .jsonl or .parquet")


def _hf_check(name: str) -> None:
    if importlib.util.find_spec("datasets") is None:
        raise RiskscopeError("hf: corpora need the `datasets` package (pip install datasets)")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


__all__ = ["Corpus", "DEFAULT_CORPUS", "load_corpus"]
