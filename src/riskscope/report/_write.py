"""Assemble a probe run's sections into one self-contained HTML file."""

from __future__ import annotations

import os
from pathlib import Path

from ._render import render_template, write_html
from ._run import Run, load_run
from .sections import live_sections
from .sections.probes import header, probe_sections


def render(run: Run) -> str:
    """The report of a loaded run as an HTML string (live-model sections between the mistakes and the metrics)."""
    model = run.manifest.get("model") if isinstance(run.manifest, dict) else None
    name = run.metrics.get("model") or (model.get("model") if isinstance(model, dict) else None) or run.path.name
    title = f"riskscope report: {name}"
    before, after = probe_sections(run)
    sections = before + live_sections(run) + after
    return str(render_template("report.html.j2", title=title, nav=[("verdict", "Verdict")] +
                               [(s.anchor, s.nav) for s in sections], sections=sections, **header(run)))


def write_report(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out_path`` (default ``run_dir/report.html``); return its path."""
    run = load_run(run_dir)
    out = Path(out_path) if out_path is not None else run.path / "report.html"
    return write_html(out, render(run))


__all__ = ["render", "write_report"]
