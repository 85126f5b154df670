"""The page of an SAE folder: its metrics against the random-init baseline, its risk features and a feature
browser, in one offline HTML file (``riskscope sae browse`` writes it).

Reads ``DIR/metrics.json`` and ``DIR/risk.json`` when present (written by ``riskscope sae train`` and
``riskscope sae risk``); the browser's data (:func:`riskscope.sae.browser_data`) is embedded as JSON and
drawn by a small inline viewer, a page of 50 latents at a time, so 10k latents stay fast. The viewer builds
its nodes with ``textContent``: nothing from the data is parsed as markup.

>>> from riskscope.report import write_sae_page
>>> write_sae_page("sae/resid15", browser)           # doctest: +SKIP
PosixPath('sae/resid15/browser.html')
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from markupsafe import Markup

from ...errors import RiskscopeError
from .._render import Section, fmt, fmt_ci, fmt_g, render_template, section, write_html
from .._run import read_json

FEATURE_HEAD = ["latent", "mean diff", "95% CI", "d_z", "q", "cos with probe", "density"]


def _feature_rows(rows: list[dict]) -> list[list[str]]:
    return [[str(r.get("feature")), fmt_g(r.get("mean_diff")), fmt_ci(r.get("ci"), 3), fmt(r.get("dz")),
             fmt_g(r.get("q")), fmt(r.get("cos_probe"), 3), fmt_g(r.get("density"))] for r in rows]


def sae_risk_section(risk: dict, anchor: str = "sae-risk") -> Section:
    """The risk-feature section from ``risk.json`` (:func:`riskscope.sae.risk_features`)."""
    for key in ("paired", "probe_direction", "sparse_probe", "clamp", "reading"):
        if key not in risk:
            raise RiskscopeError(f"risk.json: missing field {key!r}")
    pd, cl = risk["probe_direction"], risk["clamp"]
    cos_rows = [["max |cos| of the probe with a decoder row", fmt(pd.get("max_abs_cos"), 3)],
                ["same for random directions, 95th percentile", fmt(pd.get("null_max_abs_cos_q95"), 3)],
                ["same, 99th percentile", fmt(pd.get("null_max_abs_cos_q99"), 3)],
                ["p (random directions at least as aligned)", fmt_g(pd.get("p_max"))],
                ["Spearman of |cos| with |d_z| over latents", fmt(pd.get("spearman_abs_cos_vs_abs_dz"), 3)]]
    probe_rows = []
    for name, r in risk["sparse_probe"].get("probes", {}).items():
        label = ("dense probe (raw activations)" if name == "dense" else
                 name.replace("sae_top", "top ").replace("sae_random", "random ") + " latents")
        probe_rows.append([label, fmt(r.get("auc"), 3), fmt_ci(r.get("ci"), 3), fmt(r.get("minus_dense"), 3, True)
                           if "minus_dense" in r else "", fmt_ci(r.get("minus_dense_ci"), 3) if "minus_dense" in r else ""])
    clamp_rows = []
    for kind, what in (("add", "add decoder direction (benign texts)"), ("ablate", "ablate latent (risky texts)")):
        block = cl.get(kind, {})
        for label, eff in [("top", block.get("top"))] + [("random", e) for e in block.get("random", [])]:
            if not eff:
                continue
            boosts = ", ".join(repr(t.get("token", "")) for t in eff.get("boosts", [])[:6])
            clamp_rows.append([what if label == "top" else "  control", eff.get("name", "").split(" ")[-1],
                               fmt_g(eff.get("kl")), fmt(eff.get("risk_dlogodds"), 3, True), boosts])
    clamp_note = (f"Latent {cl.get('top_feature')} is the risky-side latent with the smallest q; controls are "
                  f"{len(cl.get('random_features', []))} latents of about its training density that do not differ "
                  f"(q above the FDR). The added vector has the norm of the top latent's decoder row times its mean "
                  f"activation where it fires ({fmt_g(cl.get('added_norm'))}) for every latent; measured on "
                  f"{cl.get('texts')} texts of each label.")
    intro = (f"{risk.get('pairs')} risky/benign pairs of {risk.get('dataset')}, latents pooled ({risk.get('pool')}) "
             f"over each text's tokens at {risk.get('point')}. Paired test: {risk['paired'].get('test')}.")
    return section(anchor, "Risk features", "Risk features", "sae_risk", intro=intro, reading=risk["reading"],
                   feat_head=FEATURE_HEAD, up_rows=_feature_rows(risk["paired"].get("up", [])),
                   down_rows=_feature_rows(risk["paired"].get("down", [])), probe_source=f"Probe: {pd.get('source')}.",
                   cos_rows=cos_rows, probe_rows=probe_rows, clamp_rows=clamp_rows, clamp_note=clamp_note)


def build(run, path: Path) -> Section:
    """The run report's section from ``RUN/sae_risk.json`` (``riskscope sae risk SAE --out RUN/sae_risk.json``)."""
    return sae_risk_section(read_json(path))


def _metrics_section(m: dict) -> Section:
    r = m.get("random_init") if isinstance(m.get("random_init"), dict) else {}

    def get(d, *path):
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        return d

    keys = [("L0 (active latents per token)", ("held_out", "l0")),
            ("FVU (variance around the mean)", ("held_out", "fvu")),
            ("FVU legacy (per-token ratio, SAELens explained_variance_legacy)", ("held_out", "fvu_legacy")),
            ("FVU around zero (before SAELens#659)", ("held_out", "fvu_about_zero")),
            ("dead latents (fraction)", ("dead", "fraction")),
            ("CE loss recovered vs zero-ablation", ("splice", "ce_loss_recovered_vs_zero")),
            ("CE loss recovered vs mean-ablation", ("splice", "ce_loss_recovered_vs_mean")),
            ("CE clean / with SAE", None),
            ("KL with SAE (nats/token)", ("splice", "kl_sae")),
            ("KL zero-ablation / mean-ablation", None)]
    rows = []
    for label, path in keys:
        if path is None and label.startswith("CE clean"):
            rows.append([label, f"{fmt(get(m, 'splice', 'ce_clean'), 3)} / {fmt(get(m, 'splice', 'ce_sae'), 3)}",
                         f"{fmt(get(r, 'splice', 'ce_clean'), 3)} / {fmt(get(r, 'splice', 'ce_sae'), 3)}"])
        elif path is None:
            rows.append([label, f"{fmt_g(get(m, 'splice', 'kl_zero_ablation'))} / "
                                f"{fmt_g(get(m, 'splice', 'kl_mean_ablation'))}",
                         f"{fmt_g(get(r, 'splice', 'kl_zero_ablation'))} / {fmt_g(get(r, 'splice', 'kl_mean_ablation'))}"])
        else:
            rows.append([label, fmt_g(get(m, *path)), fmt_g(get(r, *path))])
    t = m.get("training") or {}
    rows.append(["training tokens / seconds", f"{t.get('tokens', 'n/a')} / {fmt(m.get('seconds'), 0)}", ""])
    missing = "" if r.get("held_out") else "No random-init baseline was trained (--no-random-baseline)."
    return section("sae-metrics", "Metrics", "Metrics", "sae_metrics",
                   head=["metric", "this SAE", "random-init model"], rows=rows, missing=missing)


def _script_json(obj) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` escaped as \\u sequences."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
                  .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def sae_page_html(sae_dir: str | os.PathLike, browser: dict | None = None) -> str:
    """The page of ``sae_dir`` as a string (metrics and risk sections when their files exist)."""
    path = Path(sae_dir)
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else None
    risk = read_json(path / "risk.json") if (path / "risk.json").is_file() else None
    cfg = read_json(path / "cfg.json") if (path / "cfg.json").is_file() else {}
    sections: list[Section] = []
    if isinstance(metrics, dict):
        sections.append(_metrics_section(metrics))
    if isinstance(risk, dict):
        sections.append(sae_risk_section(risk))
    if browser is not None:
        n = len(browser.get("features", []))
        intro = (f"{n} latents read on {browser.get('tokens_read')} tokens ({browser.get('windows')} windows of "
                 f"{(browser.get('meta') or {}).get('corpus', 'the corpus')}). Click a latent for its top contexts "
                 f"(orange: activation relative to its max), its activation histogram and the output tokens its "
                 f"decoder row boosts and suppresses (W_dec · W_U, through the final norm's gain).")
        sections.append(section("sae-features", "Features", "Feature browser", "sae_features", intro=intro,
                                has_risk=any("dz" in f for f in browser.get("features", [])[:1])))
    meta = cfg.get("metadata") or {}
    title = f"SAE at {(meta.get('riskscope') or {}).get('point') or meta.get('hook_name') or path.name}"
    subtitle = (f"{cfg.get('architecture', '?')}, {cfg.get('d_sae', '?')} latents over {cfg.get('d_in', '?')} "
                f"dimensions of {meta.get('model_name', 'a model')}; folder {path}")
    return str(render_template("sae.html.j2", title=title, subtitle=subtitle, sections=sections,
                               data_json=_script_json(browser) if browser is not None else ""))


def write_sae_page(sae_dir: str | os.PathLike, browser: dict | None = None,
                   out_path: str | os.PathLike | None = None) -> Path:
    """Write the page (default ``SAE_DIR/browser.html``) atomically."""
    out = Path(out_path) if out_path is not None else Path(sae_dir) / "browser.html"
    return write_html(out, sae_page_html(sae_dir, browser))


__all__ = ["build", "sae_page_html", "sae_risk_section", "write_sae_page"]
