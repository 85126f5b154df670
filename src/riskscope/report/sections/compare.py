"""The page of a layer comparison folder (``riskscope compare layers --out DIR``), from its ``comparison.json``.

Heatmaps of the layers(A) x layers(B) matrix, of the shuffled-rows null mean and of the
random-init baseline; a table of each layer of A's best match in B against both baselines;
plain sentences saying how many cells beat which null. All numbers come from the file.

>>> from riskscope.report.sections.compare import write_compare_report
>>> write_compare_report("runs/compare")             # doctest: +SKIP
PosixPath('runs/compare/report.html')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...compare import LayerComparison, SimilarityMatrix
from ...errors import RiskscopeError
from .._charts import Chart, new_figure, plain, to_chart
from .._render import Section, fmt, fmt_g, render_template, section, write_html

ALPHA = 0.05
NAMES = {"cka": "debiased linear CKA", "svcca": "SVCCA (mean canonical correlation)", "rsa": "RSA (Spearman of RDMs)"}


def _short(layer: str) -> str:
    return layer.rpartition(".")[2] or layer


def _heatmap(m: np.ndarray, rows: list[str], cols: list[str], title: str, key: str, label_a: str, label_b: str,
             marks: np.ndarray | None = None, vmin: float | None = None, vmax: float | None = None) -> Chart:
    fig, ax = new_figure(5.6, 4.6, grid=False)
    img = ax.imshow(np.where(np.isfinite(m), m, np.nan), origin="lower", aspect="auto", cmap="viridis", vmin=vmin,
                    vmax=vmax, interpolation="nearest")
    fig.colorbar(img, ax=ax, shrink=0.85)
    step_r, step_c = max(1, len(rows) // 10), max(1, len(cols) // 10)
    ax.set_yticks(range(0, len(rows), step_r), [_short(r) for r in rows[::step_r]])
    ax.set_xticks(range(0, len(cols), step_c), [_short(c) for c in cols[::step_c]])
    ax.set_ylabel(plain(f"A: {label_a}"))
    ax.set_xlabel(plain(f"B: {label_b}"))
    ax.set_title(plain(title, 60), fontsize=9)
    if marks is not None and marks.any():
        r, c = np.nonzero(marks)
        ax.scatter(c, r, s=6, c="white", marker="o", linewidths=0)
    return to_chart(fig, f"heatmap: {title}", key)


def _counts(m: SimilarityMatrix, base: SimilarityMatrix | None) -> list[str]:
    """Plain sentences: how many cells beat the shuffled-rows null and the random-init baseline."""
    total = m.values_AB.size
    lines = []
    if m.p_AB is not None:
        sig = int((m.p_AB < ALPHA).sum())
        bonf = ALPHA / total
        floor = 1.0 / (1 + m.n_perm)
        bsig = int((m.p_AB < bonf).sum())
        lines.append(f"{sig} of {total} cells exceed the shuffled-rows null at p < {ALPHA} ({m.n_perm} shuffles; "
                     f"smallest attainable p = {fmt_g(floor)}).")
        lines.append(f"{bsig} of {total} cells pass a Bonferroni threshold of {fmt_g(bonf)}" +
                     (" — unreachable with this many shuffles, so raise --perms to claim more than the raw count."
                      if floor >= bonf else "."))
    if base is not None and base.values_AB.shape == m.values_AB.shape:
        above = int((m.values_AB > base.values_AB).sum())
        lines.append(f"{above} of {total} cells are higher for A than for a randomly initialised copy of A "
                     f"(largest random-init value {fmt(np.nanmax(base.values_AB), 3)}; largest A value "
                     f"{fmt(np.nanmax(m.values_AB), 3)}).")
        if base.p_AB is not None:
            lines.append(f"The random-init copy itself exceeds the shuffled-rows null in "
                         f"{int((base.p_AB < ALPHA).sum())} of {total} cells: structure that a random network of "
                         f"A's shape already shares with B, so beating the shuffled null alone is weak evidence.")
    return lines


def _best_rows(m: SimilarityMatrix, base: SimilarityMatrix | None) -> list[list[str]]:
    rows = []
    for i, la in enumerate(m.layers_a):
        v = m.values_AB[i]
        if not np.isfinite(v).any():
            continue
        j = int(np.nanargmax(v))
        rows.append([la, m.layers_b[j], fmt(v[j], 3),
                     fmt(m.null_mean_AB[i, j], 3) if m.null_mean_AB is not None else "n/a",
                     fmt(m.null_q95_AB[i, j], 3) if m.null_q95_AB is not None else "n/a",
                     fmt_g(m.p_AB[i, j]) if m.p_AB is not None else "n/a",
                     fmt(base.values_AB[i, j], 3) if base is not None and base.values_AB.shape == m.values_AB.shape
                     else "n/a"])
    return rows


def compare_sections(cmp: LayerComparison) -> list[Section]:
    """The sections of a layer-comparison page, in reading order."""
    m, base, cfg, info = cmp.main, cmp.random_init, cmp.config, cmp.info
    lines = _counts(m, base)
    if cfg.readout == "mean":
        keeps = ("the null keeps part of it (shuffles within length-sorted blocks), so compare each cell with the "
                 "null heatmap" if m.metric == "cka" else "this null shuffles all rows and does not keep length")
        lines.append("Mean readout: a large first-token activation diluted by the text's length can dominate the "
                     f"mean and make layers agree through length alone; {keeps} (see docs/compare.md).")
    facts = [("model A", cmp.model_a), ("model B", cmp.model_b), ("metric", NAMES.get(m.metric, m.metric)),
             ("texts" if cfg.readout != "tokens" else "rows (tokens)", str(m.n_rows)), ("dataset", str(info.get("dataset", "n/a"))),
             ("readout", f"{cfg.hook}, every token but each text's first (token-aligned rows)" if cfg.readout == "tokens"
              else f"{cfg.hook}, {cfg.readout} over each text's tokens"),
             ("same tokenizer", str(info.get("same_tokenizer", "n/a"))),
             ("null", f"{m.info.get('null') or 'none'} ({m.n_perm} shuffles)"),
             ("random-init baseline", "a randomly initialised copy of A against B" if base else "not computed")]
    lo = float(np.nanmin([np.nanmin(x.values_AB) for x in (m, base) if x is not None]))
    hi = float(np.nanmax([np.nanmax(x.values_AB) for x in (m, base) if x is not None]))
    sig = m.p_AB < ALPHA if m.p_AB is not None else None
    charts = [_heatmap(m.values_AB, m.layers_a, m.layers_b, f"{m.metric}: A x B (dots: p < {ALPHA})", "main",
                       cmp.model_a, cmp.model_b, sig, lo, hi)]
    if base is not None:
        charts.append(_heatmap(base.values_AB, base.layers_a, base.layers_b, f"{m.metric}: random-init A x B",
                               "random", f"random-init {cmp.model_a}", cmp.model_b,
                               base.p_AB < ALPHA if base.p_AB is not None else None, lo, hi))
    if m.null_mean_AB is not None:
        charts.append(_heatmap(m.null_mean_AB, m.layers_a, m.layers_b, f"{m.metric}: A x B, rows shuffled (null "
                               f"mean)", "null", cmp.model_a, cmp.model_b, None, lo, hi))
    return [
        section("setup", "Setup", "Layer similarity: setup", "compare_setup", facts=facts, lines=lines),
        section("heatmaps", "Heatmaps", "Layers of A x layers of B", "compare_heatmaps", charts=charts),
        section("best", "Best matches", "Best match in B for each layer of A", "compare_best",
                head=["layer of A", "best layer of B", m.metric, "null mean", "null 95%", "p", "random-init A"],
                rows=_best_rows(m, base)),
    ]


def render_compare(cmp: LayerComparison) -> str:
    """The page of a loaded layer comparison as an HTML string."""
    sections = compare_sections(cmp)
    return str(render_template("compare.html.j2", title="Layer comparison", model_a=cmp.model_a,
                               model_b=cmp.model_b, nav=[(s.anchor, s.nav) for s in sections], sections=sections))


def write_compare_report(out_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the page of ``out_dir/comparison.json`` to ``out_path`` (default ``out_dir/report.html``)."""
    src = Path(out_dir) / "comparison.json"
    if not src.is_file():
        raise RiskscopeError(f"{src}: not found; run `riskscope compare layers --out {out_dir}` first")
    cmp = LayerComparison.load(src)
    try:
        html = render_compare(cmp)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise RiskscopeError(f"{src}: unexpected content ({type(exc).__name__}: {exc})") from None
    return write_html(Path(out_path) if out_path is not None else Path(out_dir) / "report.html", html)


__all__ = ["compare_sections", "render_compare", "write_compare_report"]
