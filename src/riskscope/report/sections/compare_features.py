"""The page of a feature comparison folder (``riskscope compare features --out DIR``), from its ``features.json``.

Setup and plain sentences (what agrees, against which null), a histogram of each kept latent's best
correlation, and the best-matched pairs with their top contexts side by side. All numbers come from the file.

>>> from riskscope.report.sections.compare_features import write_features_report
>>> write_features_report("runs/features")             # doctest: +SKIP
PosixPath('runs/features/report.html')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...compare import FeatureComparison, NullTest
from ...errors import RiskscopeError
from .._charts import Chart, new_figure, plain, to_chart
from .._render import Section, fmt, fmt_g, render_template, section, write_html


def _test_line(name: str, t: NullTest | None) -> str:
    if t is None:
        return f"{name}: not computed (fewer kept pairs than needed)."
    if t.p is None:
        return f"{name} of the paired decoder rows: {fmt(t.value, 3)} (no null drawn)."
    beats = "above" if t.value > (t.null_q95 or np.inf) else "not above"
    return (f"{name} of the paired decoder rows: {fmt(t.value, 3)}; shuffled pairings give {fmt(t.null_mean, 3)} "
            f"on average (95th percentile {fmt(t.null_q95, 3)}), so the matched value is {beats} the null "
            f"(p = {fmt_g(t.p)}, {t.n_shuffles} shuffles; smallest attainable p {fmt_g(1 / (1 + t.n_shuffles))}).")


def _lines(cmp: FeatureComparison) -> list[str]:
    s = cmp.summary()
    pr = cmp.pairing
    lines = [f"{s['kept_a']} of {s['latents_a']} latents of A and {s['kept_b']} of {s['latents_b']} of B pass the "
             f"junk filter; each kept latent of A is paired with its best-correlated kept latent of B "
             f"({s['distinct_b_matched']} distinct latents of B used, {s['mutual']} pairs mutual)."]
    if s["mean_corr"] is not None:
        lines.append(f"Best correlation: mean {fmt(s['mean_corr'], 3)}, median {fmt(s['median_corr'], 3)}; "
                     f"{fmt(100 * s['share_corr_above_0.5'], 1)} % of kept latents of A have a partner above 0.5 "
                     f"and {fmt(100 * s['share_corr_above_0.9'], 1)} % above 0.9.")
    lines += [_test_line("SVCCA", pr.svcca), _test_line("RSA", pr.rsa)]
    lines.append("The shuffled-pairing null keeps both decoders and breaks only the pairing: a value above it says the "
                 "activation-matched latents also point in corresponding directions, not that the SAEs are "
                 "equivalent. Compare with a pair of SAEs that should not agree (e.g. one trained on a "
                 "randomly initialised model) before reading a value as high.")
    if cmp.mode == "per_text":
        lines.append("Per-text mode: latents were correlated by their mean over each text, which mixes every "
                     "token of the text; matches are coarser than token-aligned ones.")
    return lines


def _hist(cmp: FeatureComparison) -> Chart | None:
    c = cmp.pairing.corr[cmp.pairing.kept_a]
    c = c[np.isfinite(c)]
    if not len(c):
        return None
    fig, ax = new_figure(5.6, 3.2)
    ax.hist(c, bins=40, range=(min(0.0, float(c.min())), 1.0), color="#4c72b0")
    ax.set_xlabel(plain("best correlation with a latent of B"))
    ax.set_ylabel(plain("latents of A"))
    ax.set_title(plain("each kept latent of A: its best match in B", 60), fontsize=9)
    return to_chart(fig, "histogram of best-match correlations", "corr")


def features_sections(cmp: FeatureComparison) -> list[Section]:
    """The sections of a feature-comparison page, in reading order."""
    a, b, cfg, info = cmp.sae_a, cmp.sae_b, cmp.config, cmp.info
    s = cmp.summary()
    rows_read = (f"{info.get('tokens', s['n_rows'])} tokens in {info.get('windows', 'n/a')} windows"
                 if cmp.mode == "tokens" else f"{info.get('texts', s['n_rows'])} texts (mean over each text's tokens)")
    junk = ", ".join(f"{k} {s['junk_a'][k]}/{s['junk_b'].get(k, 0)}" for k in s["junk_a"])
    facts = [("SAE A", f"{a['path']} ({a.get('model')}, {a['point']}, {a['d_sae']} latents)"),
             ("SAE B", f"{b['path']} ({b.get('model')}, {b['point']}, {b['d_sae']} latents)"),
             ("rows", f"{rows_read}, source {info.get('source', 'n/a')}"),
             ("mode", "token-aligned rows (one tokenizer)" if cmp.mode == "tokens" else "per-text mean latents"),
             ("junk filter (A/B)", f"{junk}; rare < {cfg.min_fires} firings, dense > {cfg.max_density}, "
                                   f"single-token ≥ {cfg.max_token_share}, first-position ≥ {cfg.max_first_share}, "
                                   f"one-row ≥ {cfg.max_row_share}"),
             ("null", f"{cfg.n_shuffles} shuffled pairings (B's paired rows permuted)")]
    hist = _hist(cmp)
    rows = [[str(t["a"]), str(t["b"]), fmt(t["corr"], 3), "yes" if t["mutual"] else "no", fmt_g(t["density_a"]),
             fmt_g(t["density_b"]), " ‖ ".join(t["contexts_a"]), " ‖ ".join(t["contexts_b"])] for t in cmp.top]
    out = [section("setup", "Setup", "Feature universality: setup", "compare_setup", facts=facts, lines=_lines(cmp))]
    if hist is not None:
        out.append(section("corr", "Correlations", "How well each latent of A is matched", "compare_features_charts",
                           charts=[hist]))
    out.append(section("pairs", "Best pairs", "Best-matched latents, top contexts side by side",
                       "compare_features_pairs", head=["latent A", "latent B", "corr", "mutual", "density A",
                                                       "density B", "contexts of A", "contexts of B"], rows=rows))
    return out


def render_features(cmp: FeatureComparison) -> str:
    """The page of a loaded feature comparison as an HTML string."""
    sections = features_sections(cmp)
    return str(render_template("compare_features.html.j2", title="Feature universality",
                               name_a=Path(cmp.sae_a["path"]).name, name_b=Path(cmp.sae_b["path"]).name,
                               nav=[(s.anchor, s.nav) for s in sections], sections=sections))


def write_features_report(out_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the page of ``out_dir/features.json`` to ``out_path`` (default ``out_dir/report.html``)."""
    src = Path(out_dir) / "features.json"
    if not src.is_file():
        raise RiskscopeError(f"{src}: not found; run `riskscope compare features --out {out_dir}` first")
    cmp = FeatureComparison.load(src)
    try:
        html = render_features(cmp)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise RiskscopeError(f"{src}: unexpected content ({type(exc).__name__}: {exc})") from None
    return write_html(Path(out_path) if out_path is not None else Path(out_dir) / "report.html", html)


__all__ = ["features_sections", "render_features", "write_features_report"]
