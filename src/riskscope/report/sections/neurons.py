"""``neurons.json``: the neuron heatmap, the ranking and the clamping effects next to their random controls.

The clamping table keeps one line per clamp with its numbers (weight, d, KL and the change
in log P(risk words), each next to the random control) and puts the token lists (boosts,
suppresses, direct logit attribution) on a second, full-width line under it, so the table
fits its card at any width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from .._charts import Chart, new_figure, plain, to_chart
from .._render import Section, fmt, section
from .._run import read_json
from ._common import need

ANCHOR, NAV, TITLE = "neurons", "Neurons", "Neurons that carry the risk signal"


def heatmap(heat: dict, key: str = "neuron-heatmap") -> Chart | None:
    """Layers x each layer's top neurons by |d|, coloured by the risky-minus-benign mean difference."""
    vals = np.asarray([[np.nan if not isinstance(x, (int, float)) else x for x in row] for row in heat["mean_diff"]],
                      dtype=float)
    cells, layers = heat["neurons"], heat["layers"]
    L, K = vals.shape if vals.ndim == 2 else (0, 0)
    if L == 0 or K == 0:
        return None
    fig, ax = new_figure(min(11.0, 1.6 + 0.42 * K), min(9.0, max(2.6, 1.3 + 0.26 * L)), grid=False)
    finite = np.abs(vals[np.isfinite(vals)])
    lim = float(np.percentile(finite, 98)) if finite.size and finite.max() > 0 else 1.0  # a few cells saturate
    lim = lim if lim > 0 else float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = ax.imshow(vals, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
    ax.set_yticks(range(L), [plain(x) for x in layers], fontsize=7)
    ax.set_xticks(range(K), [str(i + 1) for i in range(K)], fontsize=7)
    ax.set_xlabel("rank within layer (by |Cohen's d|)")
    ax.set_ylabel("layer")
    if L * K <= 400:
        for i in range(L):
            for j in range(K):
                ax.text(j, i, plain(cells[i][j]), ha="center", va="center", fontsize=5, color="black")
    fig.colorbar(im, ax=ax, label="risky − benign mean", shrink=0.8, extend="both")
    return to_chart(fig, "Heatmap of risky-minus-benign mean neuron activations, layers by top neurons", key)


def _tokens(shifts, k: int = 8, counts: bool = True) -> str:
    parts = [repr(str(t["token"]).strip() or str(t["token"])) + (f" ({t['n_texts']})" if counts else "")
             for t in (shifts or [])[:k]]
    return ", ".join(parts)


def _effects(eff: dict) -> dict:
    """The clamping part: the summary rows, one row (+ token line) per clamp."""
    summary = [[kind, s.get("n"), fmt(s.get("kl"), 4), fmt(s.get("kl_control"), 4),
                fmt(s.get("risk_dlogp"), 3, True), fmt(s.get("risk_dlogp_control"), 3, True),
                fmt(s.get("own_probe_delta"), 2, True), fmt(s.get("own_probe_delta_control"), 2, True)]
               for kind, s in (eff.get("summary") or {}).items()]
    clamps = []
    stats, dla_all = eff.get("stats") or {}, eff.get("dla") or {}
    for r in (*eff["singles"], *eff["groups"]):
        ef, c = r["effect"], r["control"]
        st, dla = stats.get(r["label"]), dla_all.get(r["label"])
        clamps.append({
            "label": r["label"], "weight": fmt(st.get("weight"), 3, True) if st else "group",
            "d": fmt(st.get("effect_size"), 2, True) if st else "",
            "kl": f"{fmt(ef.get('kl'), 4)} / {fmt(c.get('kl'), 4)}",
            "dlogp": f"{fmt(ef.get('risk_dlogp'), 3, True)} / {fmt(c.get('risk_dlogp'), 3, True)}",
            "boosts": _tokens(ef.get("boosts")), "suppresses": _tokens(ef.get("suppresses"), 5),
            "dla": ", ".join(repr(t) for t, _ in dla["boosts"][:8]) if dla else ""})
    cfg = eff.get("config") or {}
    return {"n_texts": eff.get("n_texts"), "mode": cfg.get("mode"), "k": cfg.get("k"),
            "positions": cfg.get("positions"), "summary": summary, "clamps": clamps}


def build(run, path: Path) -> Section:
    """The section from ``path`` (neurons.json)."""
    data = read_json(path)
    need(data, path, "ranking")
    rank = data["ranking"]
    need(rank, path, "heatmap", "top", "layers")
    eff = data.get("effects")
    top = [] if eff else [[s["label"], fmt(s.get("weight"), 3, True), fmt(s.get("effect_size"), 2, True),
                           fmt(s.get("mean_diff"), 4, True)]
                          for layer in rank["layers"] for s in rank["top"][str(layer)][:5]]
    return section(ANCHOR, NAV, TITLE, "neurons", chart=heatmap(rank["heatmap"]), top=top,
                   effects=_effects(eff) if eff else None)


__all__ = ["ANCHOR", "NAV", "TITLE", "build", "heatmap"]
