"""Organisms: the scorecard "would these detectors have caught this backdoor?" (detector x organism kind ->
hit rate with its CI, against the random control, at the stated compute budget), plus each organism's
own figures. Reads ``scorecard.json`` files written by ``riskscope organism test``; scorecards of one recipe
planted with several seeds are also shown pooled over the seeds (``riskscope.organisms.pool_scorecards``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import RiskscopeError
from ...organisms import SCORECARD, pool_scorecards
from .._render import Section, fmt, fmt_ci, pct, render_template, section, write_html

ANCHOR, NAV, TITLE = "organisms", "Organisms", "Planted backdoors: would the detectors have caught them?"


def read_scorecard(path: str | os.PathLike) -> dict:
    """A scorecard (``scorecard.json``, or a folder holding one), checked for the fields the section reads."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORECARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RiskscopeError(f"{path}: cannot read the scorecard ({e.strerror}); run `riskscope organism test`") from None
    except ValueError as e:
        raise RiskscopeError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(card, dict) or not isinstance(card.get("rows"), list) or "kind" not in card:
        raise RiskscopeError(f"{path}: field 'rows' or 'kind' is missing; not a scorecard riskscope wrote")
    return card


def _budget(b: dict) -> str:
    return ", ".join(f"{k} {fmt(v, 3) if isinstance(v, float) else v}" for k, v in b.items())


def build(cards: list[dict]) -> Section:
    """The section for one or more scorecards (one per organism)."""
    rows, probes, organisms = [], [], []
    for card in cards:
        for r in card["rows"]:
            if r.get("detector") == "probe":
                probes.append([card["kind"], r.get("layer"), fmt(r.get("auc_organism_vs_clean"), 3),
                               fmt(r.get("auc_base_vs_clean"), 3), fmt(r.get("auc_shuffled_vs_clean"), 3),
                               fmt(r.get("auc_organism_vs_near_miss"), 3), fmt(r.get("auc_base_vs_near_miss"), 3),
                               fmt(r.get("seconds"), 1)])
                continue
            h, c = r["hits"], r["control"]
            rows.append([r["detector"], card["kind"], f"{h['hits']}/{h['n']}", pct(h["rate"]), fmt_ci(h["ci"]),
                         "—" if h.get("trained_before_first_hit") is None else h["trained_before_first_hit"],
                         f"{c['hits']}/{c['n']}", pct(c["rate"]), fmt_ci(c["ci"]), _budget(r.get("budget", {})),
                         fmt(r.get("seconds"), 1)])
        m = card.get("organism", {}).get("metrics", {})
        organisms.append([card["kind"], card.get("trigger", ""), pct(m.get("asr")), pct(m.get("false_trigger_clean")),
                          pct(m.get("false_trigger_near_miss")), fmt(m.get("perplexity_ratio"), 3),
                          fmt(m.get("kl_to_base"), 4), "yes" if m.get("meets_goals") else "no",
                          fmt(card.get("total_seconds"), 1)])
    seeded, seeded_organisms = [], []
    for g in pool_scorecards(cards):
        k = len(g["seeds"])
        for r in g["rows"]:
            if r["detector"] == "probe":
                continue
            h, c = r["hits"], r["control"]
            seeded.append([r["detector"], g["kind"], k, _over_seeds(h), _pooled(h), _over_seeds(c), _pooled(c),
                           _budget(r.get("budget", {}))])
        m = g["metrics"]
        seeded_organisms.append([g["kind"], g["trigger"], ", ".join(map(str, g["seeds"])),
                                 _mean(m["asr"], True), _mean(m["false_trigger_clean"], True),
                                 _mean(m["false_trigger_near_miss"], True), _mean(m["perplexity_ratio"]),
                                 _mean(m["kl_to_base"]), f"{g['meets_goals']} of {k}"])
    return section(ANCHOR, NAV, TITLE, "organisms", rows=rows, probes=probes, organisms=organisms, seeded=seeded,
                   seeded_organisms=seeded_organisms)


def _mean(s: dict, as_pct: bool = False) -> str:
    f = pct if as_pct else (lambda x: fmt(x, 3))
    ci = s.get("ci")
    return f(s.get("mean")) if ci is None else f"{f(s.get('mean'))} ({f(ci[0])}–{f(ci[1])})"


def _over_seeds(h: dict) -> str:
    return _mean(h["over_seeds"], True)


def _pooled(h: dict) -> str:
    p = h["pooled"]
    return f"{p['hits']}/{p['n']} ({pct(p['ci'][0])}–{pct(p['ci'][1])})"


def organisms_report_html(paths: list[str | os.PathLike]) -> str:
    """A page with the organisms section for the given scorecards."""
    sec = build([read_scorecard(p) for p in paths])
    return str(render_template("organisms.html.j2", title="riskscope organisms", nav=[(sec.anchor, sec.nav)],
                               sections=[sec]))


def write_organisms_report(paths: list[str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Write the organisms page for ``paths`` (scorecard files or folders) to ``out_path``."""
    if not paths:
        raise RiskscopeError("no scorecards given: pass the folders `riskscope organism test` wrote")
    return write_html(out_path, organisms_report_html(list(paths)))


__all__ = ["build", "organisms_report_html", "read_scorecard", "write_organisms_report"]
