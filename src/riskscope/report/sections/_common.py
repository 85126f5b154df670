"""Small helpers shared by the live-model sections."""

from __future__ import annotations

from pathlib import Path

from ...errors import RiskscopeError


def need(data, path: Path, *keys: str) -> None:
    """Raise a RiskscopeError naming ``path`` and the first of ``keys`` that ``data`` lacks."""
    if not isinstance(data, dict):
        raise RiskscopeError(f"{path}: expected a JSON object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise RiskscopeError(f"{path}: missing field {missing[0]!r}")


__all__ = ["need"]
