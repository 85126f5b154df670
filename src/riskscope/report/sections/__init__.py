"""One module per report section; each builds its context and renders ``templates/sections/<name>.html.j2``.

==================  ==========================================================================
:mod:`.probes`      header and verdict, dataset, per-layer charts, ROC, categories, severity,
                    confusion matrix, mistakes, all metrics, configuration (metrics.json,
                    predictions.jsonl, manifest.json)
:mod:`.ask`         ``ask.json``: ask-the-model baselines beside the probe on the same texts
:mod:`.neurons`     ``neurons.json``: heatmap, ranking, clamping effects with random controls
:mod:`.traces`      ``traces.json``: per-token probe scores and gradient x input
:mod:`.steering`    ``caution.json``: the heightened-caution demo against a random vector
:mod:`.melbo`       a MELBO run folder's page (:func:`riskscope.report.write_melbo_report`)
:mod:`.sae`         ``sae_risk.json``: risk features of an SAE; also an SAE folder's own page (``sae browse``)
==================  ==========================================================================

A live-model section appears when its file exists; a file that exists but is broken is an
error naming the file (and the JSON line or the missing field).
"""

from __future__ import annotations

from .._render import Section
from .._run import Run
from ...errors import RiskscopeError
from . import ask, neurons, sae, steering, traces

LIVE = ((ask, "ask.json"), (neurons, "neurons.json"), (traces, "traces.json"), (steering, "caution.json"),
        (sae, "sae_risk.json"))
"""The live-model sections in reading order, with the file each reads."""


def live_sections(run: Run) -> list[Section]:
    """A section for every analysis file present in the run folder, in reading order."""
    out = []
    for module, name in LIVE:
        path = run.path / name
        if not path.is_file():
            continue
        try:
            out.append(module.build(run, path))
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise RiskscopeError(f"{path}: unexpected content ({type(exc).__name__}: {exc})") from None
    return out


__all__ = ["LIVE", "live_sections"]
