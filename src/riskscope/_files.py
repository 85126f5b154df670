"""Atomic, shareable safetensors writes.

``safetensors`` writes through a private temporary file, so what it leaves is mode
0600 whatever the umask: a run folder shared with a team would be unreadable to
them. :func:`save_safetensors` writes to a temporary name next to the target,
gives it the mode an ordinary file would get (``0666 & ~umask``) and renames it
into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def file_mode() -> int:
    """The permission bits a newly created ordinary file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write torch tensors or numpy arrays (not mixed) to ``path`` atomically, readable as the umask allows."""
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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
