"""The one exception type riskscope raises for problems the user can fix.

The CLI prints its message on one line and exits non-zero; Python callers can
catch it. Messages name the file, line and field where that applies.
"""

from __future__ import annotations


class RiskscopeError(Exception):
    """A user-facing error: bad input, missing files, mismatched stores."""


class DatasetError(RiskscopeError, ValueError):
    """A dataset file that does not validate (message names file, line, field)."""


class StoreError(RiskscopeError):
    """An activation store that is missing, incomplete or made from other inputs."""


class ModelError(RiskscopeError):
    """A model that cannot be loaded or whose architecture is not understood."""
