"""``traces.json``: each traced text twice, every token coloured by the probe's P(risky) after it, then by
gradient x input of the final score.

>>> [t["colour"] for t in token_cells(["a", "b"], [0.5, 1.0], 0.5)]
['rgb(255,255,255)', 'rgb(255,105,95)']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .._render import Section, fmt, number, section
from .._run import read_json
from ._common import need

ANCHOR, NAV, TITLE = "traces", "Traces", "Where in the text the risk is sensed"


def colour(v: float, lim: float) -> str:
    """Blue (negative) - white - red (positive) background for ``v`` in [-lim, lim]."""
    t = 0.0 if lim <= 0 or not math.isfinite(v) else max(-1.0, min(1.0, v / lim))
    if t >= 0:
        r, g, b = 255, int(255 - 150 * t), int(255 - 160 * t)
    else:
        r, g, b = int(255 + 160 * t), int(255 + 110 * t), 255
    return f"rgb({r},{g},{b})"


def token_cells(tokens: Sequence[str], values: Sequence, lim: float | None, centre: float = 0.5,
                skip_first: bool = False) -> list[dict]:
    """One ``{"token", "colour", "value"}`` per token: the background by ``value - centre``, the value for the
    hover title. ``skip_first`` leaves the first token uncoloured: its activations are an attention sink's,
    far outside what a last-token probe was trained on."""
    vals = np.asarray([number(v) for v in values], dtype=float) - centre
    if skip_first and len(vals):
        vals[0] = np.nan
    finite = vals[np.isfinite(vals)]
    lim = float(np.max(np.abs(finite))) if lim is None and finite.size else (lim or 1.0)
    return [{"token": str(t), "colour": colour(float(v), lim) if np.isfinite(v) else "transparent",
             "value": fmt(float(v) + centre, 3)} for t, v in zip(tokens, vals)]


def build(run, path: Path) -> Section:
    """The section from ``path`` (traces.json)."""
    data = read_json(path)
    need(data, path, "traces", "probe")
    attr_all = [abs(a) for t in data["traces"] for a in (t.get("attribution") or []) if math.isfinite(number(a))]
    alim = max(attr_all) if attr_all else 1.0
    rows = []
    for t in data["traces"]:
        prob = [p if math.isfinite(number(p)) else 0.5 for p in t["prob"]]
        attr = t.get("attribution")
        rows.append({"label": {1: "risky", 0: "benign"}.get(t.get("label"), ""),
                     "prob": token_cells(t["tokens"], prob, 0.5, skip_first=len(prob) > 1),
                     "attr": token_cells(t["tokens"], [a if math.isfinite(number(a)) else 0.0 for a in attr], alim,
                                         0.0) if attr is not None else None,
                     "final": fmt(prob[-1] if prob else None, 2)})
    return section(ANCHOR, NAV, TITLE, "traces", probe=str(data["probe"]), rows=rows,
                   with_attr=any(r["attr"] is not None for r in rows))


__all__ = ["ANCHOR", "NAV", "TITLE", "build", "colour", "token_cells"]
