"""``caution.json`` (+ ``vectors/``): the heightened-caution steering demo against a same-norm random vector."""

from __future__ import annotations

from pathlib import Path

from .._render import Section, fmt, number, section
from .._run import Run, read_json
from ._common import need

ANCHOR, NAV, TITLE = "steering", "Steering", "Steering: heightened caution"
VECTOR_FILES = ("vectors/risk_diff_of_means.safetensors", "vectors/risk_diff_of_means.gguf")


def build(run: Run, path: Path) -> Section:
    """The section from ``path`` (caution.json)."""
    d = read_json(path)
    need(d, path, "steered", "random", "baseline", "layers", "hook", "scale", "n_prompts")
    rows = []
    for name, m in (("risk vector", d["steered"]), ("random vector, same norm", d["random"]),
                    ("no vector", {**d["baseline"], "risk_dlogp": 0.0, "kl": 0.0, "probe_delta": 0.0})):
        rows.append([name, fmt(m.get("probe_delta"), 2, True), fmt(m.get("risk_dlogp"), 3, True), fmt(m.get("kl"), 4),
                     fmt(m.get("mention_rate"), 2), fmt(m.get("mentions_per_completion"), 2)])
    samples = [[s.get("prompt", ""), s.get("unsteered", ""), s.get("steered", ""), s.get("random", "")]
               for s in (d.get("samples") or [])[:4]]
    wins = number(d.get("wins"))
    layers = d["layers"]
    return section(ANCHOR, NAV, TITLE, "steering", hook=d["hook"],
                   layers=", ".join(map(str, layers)) if isinstance(layers, list) else str(layers),
                   scale=d["scale"], n_prompts=d["n_prompts"], wins=fmt(100 * wins, 0), probe=d.get("probe"),
                   rows=rows, samples=samples, vectors=[f for f in VECTOR_FILES if (run.path / f).is_file()])


__all__ = ["ANCHOR", "NAV", "TITLE", "VECTOR_FILES", "build"]
