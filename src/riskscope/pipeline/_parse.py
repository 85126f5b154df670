"""Readers for the short text forms of layers, hooks, positions, module paths and analyses.

One rule for each form, shared by :class:`~riskscope.pipeline.RunConfig` and the CLI. Importing this
module imports neither torch nor numpy (``parse_hooks`` imports the hook list when called).

>>> parse_layers("0, 2-3", 4), parse_layers("all", 3), parse_positions("0,-1")
([0, 2, 3], [0, 1, 2], (0, -1))
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import RiskscopeError

READOUTS = ("last", "mean", "max", "span")
"""Token readouts (see :mod:`riskscope.hooks`): last token, mean and max over content tokens, and the mean
over the tokens where a pair's twins differ (scored as the mean for a single text)."""

DEFAULT_READOUTS = ("last", "mean", "span")
"""What ``riskscope run`` caches and lets compete by default. ``max`` is left out: on the built-in pairs
(version 1) it was the weakest readout at every layer (best cross-validated AUC 0.660 against 0.733 for
``mean``; no outer fold's inner selection chose it), so it only cost time; ``--readouts last,mean,max,span``
brings it back."""


def parse_readouts(value: str | Sequence[str]) -> tuple[str, ...]:
    """``last,mean`` or a sequence -> distinct known readouts, in :data:`READOUTS` order.

    >>> parse_readouts("max, last")
    ('last', 'max')
    """
    names = [x.strip() for x in (value.split(",") if isinstance(value, str) else value) if x.strip()]
    bad = [x for x in names if x not in READOUTS]
    if bad:
        raise RiskscopeError(f"--readouts: unknown readout {bad[0]!r}; choose from {', '.join(READOUTS)}")
    if not names:
        raise RiskscopeError("--readouts: name at least one readout")
    return tuple(r for r in READOUTS if r in names)


ANALYSES = ("neurons", "effects", "ask", "traces", "vectors", "caution")
"""What ``riskscope run`` runs after the probes (``--skip`` removes some): neuron ranking, clamping
effects with random controls, the ask-the-model baseline, per-token traces, the diff-of-means risk
vector (+ control-vector GGUF) and the heightened-caution steering demo."""


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``all``, ``0,5,-1`` or ranges ``10-20`` (inclusive) -> layer indices (``n_layers`` is used by ``all``)."""
    if text.strip() == "all":
        return list(range(n_layers))
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                layers += list(range(int(a), int(b) + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise RiskscopeError(f"--layers: cannot read {part!r}; use all, 0,5,-1 or 10-20") from None
    return layers


def parse_positions(text: str) -> str | tuple[int, ...]:
    """``last``, ``mean``, ``all`` or token indices like ``0,-1`` (negative from the end)."""
    if text in ("last", "mean", "all"):
        return text
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise RiskscopeError(f"--positions must be last, mean, all or token indices like 0,-1; got {text!r}") from None


def parse_hooks(hooks: str | Sequence[str]) -> tuple[str, ...]:
    """A comma list (or sequence) of hook names -> a tuple without repeats; names not in
    :data:`riskscope.hooks.HOOKS` are refused."""
    from ..hooks import HOOKS  # imports torch: called from command bodies and configs, never at import

    names = [h.strip() for h in (hooks.split(",") if isinstance(hooks, str) else hooks) if h.strip()]
    if not names:
        raise RiskscopeError(f"--hooks: no hook named; choose from {', '.join(HOOKS)}")
    bad = [h for h in names if h not in HOOKS]
    if bad:
        raise RiskscopeError(f"--hooks: unknown hook {bad[0]!r}; choose from {', '.join(HOOKS)}")
    return tuple(dict.fromkeys(names))


def parse_module_paths(text: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """``field=path,field=path`` (or a mapping) -> ``{field: path}``; empty -> None."""
    if not text:
        return None
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    pairs = [p.split("=", 1) for p in text.split(",") if p]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise RiskscopeError(f"--module-paths must look like field=path,field=path; got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_skip(skip: str | Sequence[str] | None) -> tuple[str, ...]:
    """The analyses left after removing ``skip`` (comma-separated names, or ``all``)."""
    names = [x.strip() for x in (skip.split(",") if isinstance(skip, str) else (skip or ())) if x.strip()]
    if "all" in names:
        return ()
    bad = [x for x in names if x not in ANALYSES]
    if bad:
        raise RiskscopeError(f"--skip {bad[0]!r}: not an analysis; choose from {', '.join(ANALYSES)} or all")
    return tuple(a for a in ANALYSES if a not in names)


__all__ = ["ANALYSES", "parse_hooks", "parse_layers", "parse_module_paths", "parse_positions",
           "parse_skip"]
