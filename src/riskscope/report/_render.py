"""The one way riskscope writes HTML: jinja2 templates (package data) with autoescaping, and number filters.

Every value a template prints is escaped unless it is :class:`markupsafe.Markup`; the only
``Markup`` in a report is rendered templates and the SVG of :mod:`._charts`. Numbers are
formatted by the filters below, so a missing, NaN or non-numeric value reads ``n/a``
everywhere.

>>> fmt(0.8712), fmt(float("nan")), fmt("0.9"), fmt(None), fmt(True)
('0.87', 'n/a', 'n/a', 'n/a', 'n/a')
>>> fmt_ci([0.81, 0.9]), fmt_ci([0.8, None]), fmt_ci("oops")
('0.81–0.90', 'n/a', 'n/a')
>>> render_string("<p>{{ x }} {{ y|num(1) }}</p>", x="<b>", y=2)
Markup('<p>&lt;b&gt; 2.0</p>')
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .._io import atomic_text

NA = "n/a"


def number(x) -> float:
    """A finite float, or NaN for None, booleans, strings, non-finite values and anything else."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return math.nan
    v = float(x)
    return v if math.isfinite(v) else math.nan


def fmt(x, digits: int = 2, signed: bool = False) -> str:
    """``0.8712 -> "0.87"``; ``"n/a"`` for anything that is not a finite number."""
    v = number(x)
    if math.isnan(v):
        return NA
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_g(x, digits: int = 3) -> str:
    """Compact general format (``1.23e+04``, ``0.0012``) for values of any scale; ``"n/a"`` if not a number."""
    v = number(x)
    if math.isnan(v):
        return NA
    return f"{v:.{digits}g}" if v and (abs(v) >= 1e4 or abs(v) < 1e-3) else f"{v:.{digits}f}"


def fmt_ci(ci, digits: int = 2) -> str:
    """``(0.81, 0.9) -> "0.81–0.90"``; ``"n/a"`` unless ``ci`` is a pair of finite numbers."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return NA
    lo, hi = fmt(ci[0], digits), fmt(ci[1], digits)
    return NA if NA in (lo, hi) else f"{lo}–{hi}"


def show(x) -> str:
    """Any value as page text: ``"n/a"`` for a missing one (None)."""
    return NA if x is None else x if isinstance(x, str) else str(x)


def pct(x) -> str:
    """``0.42 -> "42%"``; ``"n/a"`` if not a number."""
    v = number(x)
    return NA if math.isnan(v) else f"{100 * v:.0f}%"


def to_json(obj) -> str:
    """Pretty JSON for the configuration blocks (escaped by the template like any text)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The jinja2 environment of every riskscope HTML page: templates from ``riskscope/report/templates``,
    autoescaping on for every template, undefined names are errors."""
    env = Environment(loader=PackageLoader("riskscope.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=fmt, g=fmt_g, ci=fmt_ci, pct=pct, show=show, json=to_json)
    return env


def render_template(name: str, **context) -> Markup:
    """Render ``templates/<name>`` to safe markup."""
    return Markup(environment().get_template(name).render(**context))


def render_string(source: str, **context) -> Markup:
    """Render a template given as a string (tests and doctests)."""
    return Markup(environment().from_string(source).render(**context))


@dataclass(frozen=True)
class Section:
    """One ``<section>`` of a page: its anchor, its name in the navigation bar and its rendered markup."""

    anchor: str
    """The ``id`` of the section (``#anchor`` links to it)."""
    nav: str
    """Short name in the navigation bar."""
    html: Markup
    """The rendered section."""


def section(anchor: str, nav: str, title: str, template: str, **context) -> Section:
    """Render ``templates/sections/<template>.html.j2`` inside the common section frame."""
    return Section(anchor, nav, render_template(f"sections/{template}.html.j2", anchor=anchor, title=title,
                                                **context))


def write_html(path: str | os.PathLike, html: str) -> Path:
    """Write a page atomically (a reader never sees half a report)."""
    return atomic_text(path, html)


__all__ = ["NA", "Section", "environment", "fmt", "fmt_ci", "fmt_g", "number", "pct", "render_string",
           "render_template", "section", "show", "write_html"]
