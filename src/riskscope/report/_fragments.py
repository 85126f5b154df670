"""HTML fragments for the report's live-model sections: neurons, ask-the-model, per-token traces, steering.

Every function returns a self-contained fragment (a ``str``): tables use the
report's classes (``scroll``, ``num``, ``note``), charts are inline SVG drawn
on bare :class:`matplotlib.figure.Figure` objects (no pyplot state), token
colours are inline styles, and all text is escaped with :func:`html.escape`.

>>> token_spans(["a<", "b"], [0.1, 0.9], None).count("<span")
2
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable, Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ._charts import _to_svg as svg


def e(x) -> str:
    return escape(str(x), quote=True)


def _num(x, digits: int = 3, signed: bool = False) -> str:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(x)):
        return "n/a"
    return f"{float(x):+.{digits}f}" if signed else f"{float(x):.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], num_cols: Iterable[int] = (), raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    nums = set(num_cols)
    head = "".join(f'<th{" class=num" if i in nums else ""} scope="col">{e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in nums else ""}>{c if raw else e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _tokens(shifts: Sequence[dict], k: int = 8, counts: bool = True) -> str:
    parts = [repr(t["token"].strip() or t["token"]) + (f" ({t['n_texts']})" if counts else "") for t in shifts[:k]]
    return ", ".join(parts)


# --- neurons --------------------------------------------------------------------------------------


def _ranking(ranking) -> dict:
    return ranking.to_dict() if hasattr(ranking, "to_dict") else ranking


def neuron_heatmap(ranking, key: str = "neuron-heatmap") -> str:
    """Layers x each layer's top neurons by |d|: risky-minus-benign mean difference (the seed's narrow view).

    ``ranking`` is a :class:`~riskscope.neurons.NeuronRanking` or its ``to_dict()`` (``neurons.json``).
    """
    heat = _ranking(ranking)["heatmap"]
    vals = np.asarray([[np.nan if x is None else x for x in row] for row in heat["mean_diff"]], dtype=float)
    cells = heat["neurons"]
    layers = heat["layers"]
    L, K = vals.shape if vals.ndim == 2 else (0, 0)
    if L == 0 or K == 0:
        return '<p class="note">No neurons ranked.</p>'
    fig = Figure(figsize=(min(11.0, 1.6 + 0.42 * K), min(9.0, 1.3 + 0.26 * L)), layout="constrained")
    ax = fig.add_subplot()
    finite = np.abs(vals[np.isfinite(vals)])
    lim = float(np.percentile(finite, 98)) if finite.size and finite.max() > 0 else 1.0  # a few cells saturate
    lim = lim if lim > 0 else float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = ax.imshow(vals, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
    ax.set_yticks(range(L), [str(x) for x in layers], fontsize=7)
    ax.set_xticks(range(K), [str(i + 1) for i in range(K)], fontsize=7)
    ax.set_xlabel("rank within layer (by |Cohen's d|)")
    ax.set_ylabel("layer")
    if L * K <= 400:
        for i in range(L):
            for j in range(K):
                ax.text(j, i, str(int(cells[i][j])), ha="center", va="center", fontsize=5, color="black")
    fig.colorbar(im, ax=ax, label="risky mean − benign mean (activation)", shrink=0.8, extend="both")
    return svg(fig, "Heatmap of risky-minus-benign mean neuron activations, layers by top neurons", key)


def neuron_section(ranking, effects=None) -> str:
    """The neuron table (ranking, DLA, clamping effects next to random controls) and the heatmap."""
    eff = effects.to_dict() if effects is not None and hasattr(effects, "to_dict") else effects
    parts = ['<figure>' + neuron_heatmap(ranking) + '<figcaption>Each row is a layer; its cells are that layer\'s '
             'neurons with the largest |Cohen\'s d| (numbers are neuron indices), coloured by the mean activation on '
             'risky minus benign texts (last token).</figcaption></figure>']
    if not eff:
        rank = _ranking(ranking)
        rows = [[s["label"], _num(s["weight"], signed=True), _num(s["effect_size"], 2, True),
                 _num(s["mean_diff"], 4, True)] for layer in rank["layers"] for s in rank["top"][str(layer)][:5]]
        parts.append(table(["neuron", "probe weight", "Cohen's d", "risky − benign"], rows, (1, 2, 3)))
        return "".join(parts)
    cfg = eff["config"]
    parts.append(f'<p class="intro">Clamping on {e(eff["n_texts"])} validation texts (mode {e(cfg["mode"])}, '
                 f'k = {e(cfg["k"])}, positions {e(cfg["positions"])}); every clamp is repeated on random neurons of '
                 f'the same layer with the same rule (the control). Token lists give the mean change of the next-token '
                 f'log-probability, with the number of texts where it holds in brackets.</p>')
    summ = eff.get("summary", {})
    srows = []
    for kind, s in summ.items():
        srows.append([kind, str(s["n"]), _num(s["kl"], 4), _num(s["kl_control"], 4), _num(s["risk_dlogp"], 3, True),
                      _num(s["risk_dlogp_control"], 3, True), _num(s["own_probe_delta"], 2, True),
                      _num(s["own_probe_delta_control"], 2, True)])
    if srows:
        parts.append(table(["clamps", "n", "KL", "KL random", "Δ log P(risk words)", "Δ random",
                            "Δ own probe logit", "Δ random"], srows, range(1, 8)))
    rows = []
    for r in (*eff["singles"], *eff["groups"]):
        ef, c = r["effect"], r["control"]
        st = eff["stats"].get(r["label"])
        dla = eff["dla"].get(r["label"])
        rows.append([e(r["label"]), _num(st["weight"], signed=True) if st else "group",
                     _num(st["effect_size"], 2, True) if st else "",
                     e(_tokens(ef["boosts"])), e(_tokens(ef["suppresses"], 5)),
                     e(", ".join(repr(t) for t, _ in dla["boosts"][:8])) if dla else "",
                     f'{_num(ef["kl"], 4)} / {_num(c["kl"], 4)}',
                     f'{_num(ef["risk_dlogp"], 3, True)} / {_num(c["risk_dlogp"], 3, True)}'])
    parts.append(table(["clamp", "weight", "d", "boosts (texts)", "suppresses", "direct logit attribution",
                        "KL top / random", "Δ log P(risk) top / random"], rows, (1, 2, 6, 7), raw=True))
    return "".join(parts)


# --- ask the model --------------------------------------------------------------------------------


def ask_table(ask_eval, probe_rows: Sequence[dict] = ()) -> str:
    """Ask-the-model baselines in the probes' table shape; ``probe_rows`` (dicts with name/hook+layer,
    auc, auc_ci, f1, accuracy, pair_accuracy) are listed first for comparison."""
    res = ask_eval.to_dict() if hasattr(ask_eval, "to_dict") else ask_eval
    rows = []
    for r in probe_rows:
        name = r.get("name") or f"probe {r.get('hook')}.{r.get('layer')}"
        ci = r.get("auc_ci") or [None, None]
        rows.append([name, _num(r.get("auc")), f"{_num(ci[0], 2)}–{_num(ci[1], 2)}", _num(r.get("pair_accuracy")),
                     _num(r.get("f1")), _num(r.get("accuracy")), "—"])
    for r in res["results"]:
        ci = r["auc_ci"]
        rows.append([f"ask: {r['template']['name']} ({'/'.join(r['answer_tokens']['positive'])} vs "
                     f"{'/'.join(r['answer_tokens']['negative'])})", _num(r["auc"]),
                     f"{_num(ci[0], 2)}–{_num(ci[1], 2)}", _num(r["pair_accuracy"]), _num(r["f1"]),
                     _num(r["accuracy"]), _num(r["zero_shot_accuracy"])])
    return table(["scorer", "AUC", "95% CI", "pair accuracy", "F1", "accuracy", "zero-shot accuracy"], rows,
                 range(1, 7))


# --- per-token traces -------------------------------------------------------------------------------


def _colour(v: float, lim: float) -> str:
    """Blue (negative) - white - red (positive) background for ``v`` in [-lim, lim]."""
    t = 0.0 if lim <= 0 or not math.isfinite(v) else max(-1.0, min(1.0, v / lim))
    if t >= 0:
        r, g, b = 255, int(255 - 150 * t), int(255 - 160 * t)
    else:
        r, g, b = int(255 + 160 * t), int(255 + 110 * t), 255
    return f"rgb({r},{g},{b})"


def token_spans(tokens: Sequence[str], values: Sequence[float], lim: float | None, centre: float = 0.5,
                skip_first: bool = False) -> str:
    """Tokens as ``<span>`` with a background by ``value - centre`` and the value in the title.

    ``skip_first`` leaves the first token uncoloured: its activations are an attention sink's,
    far outside what a last-token probe was trained on.
    """
    vals = np.asarray(values, dtype=float) - centre
    if skip_first and len(vals):
        vals[0] = np.nan
    finite = vals[np.isfinite(vals)]
    lim = float(np.max(np.abs(finite))) if lim is None and finite.size else (lim or 1.0)
    return "".join(f'<span style="background:{_colour(v, lim) if np.isfinite(v) else "transparent"};'
                   f'white-space:pre-wrap" title="{f"{float(v) + centre:.3f}" if np.isfinite(v) else "n/a"}">'
                   f'{e(t)}</span>' for t, v in zip(tokens, vals))


def traces_html(traces) -> str:
    """Each text twice: background = probe P(risky) after each token; then gradient x input."""
    data = traces.to_dict() if hasattr(traces, "to_dict") else traces
    rows = []
    attr_all = [abs(a) for t in data["traces"] for a in (t["attribution"] or []) if a is not None]
    alim = max(attr_all) if attr_all else 1.0
    for t in data["traces"]:
        label = {1: "risky", 0: "benign"}.get(t["label"], "")
        prob = [p if p is not None else 0.5 for p in t["prob"]]
        cells = [e(label), '<span style="font-family:ui-monospace,monospace">'
                 f'{token_spans(t["tokens"], prob, 0.5, skip_first=len(prob) > 1)}</span>', _num(prob[-1], 2)]
        if t["attribution"] is not None:
            attr = [a if a is not None else 0.0 for a in t["attribution"]]
            cells.insert(2, '<span style="font-family:ui-monospace,monospace">'
                            f'{token_spans(t["tokens"], attr, alim, 0.0)}</span>')
        rows.append(cells)
    headers = ["text", f"probe {data['probe']}: P(risky) after each token", "final P"]
    if rows and len(rows[0]) == 4:
        headers.insert(2, "gradient × input of the final score")
    legend = ('<p class="intro">Red = towards risky, blue = towards benign; hover a token for its value. The probe '
              'was trained on last-token activations and is applied here at every position (the first token, an '
              'attention sink with off-distribution activations, is left uncoloured).</p>')
    return legend + table(headers, rows, (len(headers) - 1,), raw=True)


# --- steering -------------------------------------------------------------------------------------


def steering_html(demo, samples: Sequence = ()) -> str:
    """The caution demo's measured effect (risk vector vs same-norm random vector) and example completions."""
    d = demo.to_dict() if hasattr(demo, "to_dict") else demo
    rows = []
    for name, m in (("risk vector", d["steered"]), ("random vector, same norm", d["random"]),
                    ("no vector", {**d["baseline"], "risk_dlogp": 0.0, "kl": 0.0, "probe_delta": 0.0})):
        rows.append([name, _num(m.get("probe_delta"), 2, True), _num(m.get("risk_dlogp"), 3, True),
                     _num(m.get("kl"), 4), _num(m.get("mention_rate"), 2), _num(m.get("mentions_per_completion"), 2)])
    intro = (f'<p class="intro">Vector at {e(d["hook"])} layers {e(d["layers"])} x {e(d["scale"])} on '
             f'{e(d["n_prompts"])} neutral prompts; the risk vector beat the random one on log P(risk word) for '
             f'{_num(d["wins"] * 100 if d["wins"] is not None else None, 0)}% of prompts.</p>')
    out = intro + table(["condition", f"Δ probe logit ({d['probe'] or 'no probe'})", "Δ log P(risk word next)",
                         "KL", "completions mentioning risk", "risk words per completion"], rows, range(1, 6))
    ex = [[s["prompt"], s["unsteered"], s["steered"], s["random"]] for s in d.get("samples", [])[:4]]
    ex += [[s.prompt, s.unsteered, s.steered, ""] if hasattr(s, "prompt") else
           [s["prompt"], s["unsteered"], s["steered"], ""] for s in samples]
    if ex:
        out += table(["prompt", "unsteered", "steered", "random vector"], ex)
    return out


__all__ = ["ask_table", "neuron_heatmap", "neuron_section", "steering_html", "svg", "table", "token_spans",
           "traces_html"]
