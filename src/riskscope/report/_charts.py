"""The one chart helper of every riskscope page: bare matplotlib figures (no pyplot state) to inline SVG.

A section draws on :func:`new_figure` and hands the figure to :func:`to_chart`, which
returns a :class:`Chart`: the SVG as safe markup (no XML prolog, no metadata, no URLs,
ids prefixed by the chart's key so several charts share one document) and a text label
for screen readers. Text from the data goes through :func:`plain` first, so a ``$`` in
a hook name or a prompt is drawn as a dollar sign, not parsed as math.

>>> fig, ax = new_figure(2, 1.5)
>>> _ = ax.plot([0, 1], [0, 1], label=plain("cost $5"))
>>> chart = to_chart(fig, "a line", "demo")
>>> chart.svg.startswith("<svg") and "<?xml" not in chart.svg and 'id="demo-' in chart.svg
True
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, VERMILION, GREY, PURPLE, SKY = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7f7f7f", "#CC79A7", "#56B4E9")


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart."""

    svg: Markup
    """The ``<svg>`` element (safe: drawn by matplotlib, which escapes every text it writes)."""
    label: str
    """What the chart shows, for ``aria-label`` (plain text; the template escapes it)."""


def plain(text, limit: int = 48) -> str:
    """``text`` for a matplotlib label: shortened to ``limit`` characters (a long name would squeeze the
    axes away) and ``$`` escaped so it is not read as mathtext."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def new_figure(w: float, h: float, grid: bool = True) -> tuple[Figure, object]:
    """A ``w`` x ``h`` inch figure with one axes in the house style (light grid, no top/right spines)."""
    fig = Figure(figsize=(w, h), layout="constrained")
    ax = fig.add_subplot()
    if grid:
        ax.grid(True, color="#e3e3e3", linewidth=0.8)
        ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def to_chart(fig: Figure, label: str, key: str) -> Chart:
    """Render ``fig`` as SVG markup fit for inlining; every id is prefixed by ``key`` (unique per page)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    head, rest = svg[:svg.index(">")], svg[svg.index(">"):]
    svg = re.sub(r'\s(xmlns(:\w+)?|version)="[^"]*"', "", head) + rest  # HTML needs no namespaces: no URLs left
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", key) + "-"
    ids = {name: f"{prefix}{k}" for k, name in enumerate(dict.fromkeys(re.findall(r'\bid="([^"]+)"', svg)))}
    svg = re.sub(r'(\bid="|#)([^"\)\s;]+)(?=["\)])', lambda m: m.group(1) + ids.get(m.group(2), m.group(2)), svg)
    return Chart(Markup(svg), label)


__all__ = ["BLUE", "Chart", "GREEN", "GREY", "ORANGE", "PURPLE", "SKY", "VERMILION", "new_figure", "plain",
           "to_chart"]
