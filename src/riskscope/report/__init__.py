"""Self-contained HTML pages of riskscope runs, for people who do not read notebooks.

``write_report(RUN)`` reads ``RUN/manifest.json``, ``RUN/metrics.json``,
``RUN/predictions.jsonl`` and the live-model analysis files, and writes
``RUN/report.html``; ``write_melbo_report(OUT)`` does the same for a MELBO run folder.
Each page is one file with inline CSS and inline SVG charts, no scripts and no external
resources, so it opens offline in any browser.

One stack renders both: jinja2 templates with autoescaping (``report/templates``, package
data), one module per section (:mod:`riskscope.report.sections`), one chart helper
(:mod:`riskscope.report._charts`). The report computes no metric itself: it reads
metrics.json and, for subsets of the texts, calls :mod:`riskscope.probes`. See ``docs/report.md``.

>>> from riskscope.report import write_report
>>> write_report("runs/default")                     # doctest: +SKIP
PosixPath('runs/default/report.html')
"""

from ._run import Run, load_run
from ._write import render, write_report
from .sections.compare import render_compare, write_compare_report
from .sections.compare_features import render_features, write_features_report
from .sections.evaluate import evaluation_html
from .sections.comparison import comparison_rows, render_comparison, write_comparison
from .sections.melbo import load_melbo_run, melbo_report_html, render_melbo, write_melbo_report
from .sections.organisms import organisms_report_html, read_scorecard, write_organisms_report
from .sections.sae import sae_page_html, sae_risk_section, write_sae_page

__all__ = ["Run", "comparison_rows", "evaluation_html", "load_melbo_run", "load_run", "melbo_report_html",
           "organisms_report_html", "read_scorecard", "render", "render_compare", "render_comparison", "render_features", "render_melbo",
           "sae_page_html", "sae_risk_section", "write_compare_report", "write_comparison", "write_features_report", "write_melbo_report",
           "write_organisms_report", "write_report", "write_sae_page"]
