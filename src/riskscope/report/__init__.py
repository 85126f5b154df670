"""One self-contained HTML report of a probe run, for people who do not read notebooks.

``write_report(RUN)`` reads ``RUN/manifest.json``, ``RUN/metrics.json`` and
``RUN/predictions.jsonl`` and writes ``RUN/report.html``: a single file with
inline CSS and inline SVG charts, no scripts and no external resources, so it
opens offline in any browser. Only ``metrics.json`` is required; sections whose
inputs are missing are replaced by a note. See ``docs/report.md``.

>>> from riskscope.report import write_report
>>> write_report("runs/default")                     # doctest: +SKIP
PosixPath('runs/default/report.html')
"""

from ._run import Run, load_run
from ._write import render, write_report

__all__ = ["Run", "load_run", "render", "write_report"]
