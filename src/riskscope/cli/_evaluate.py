"""``riskscope evaluate``: a run's probe bundle on an external labelled set, beside the lexical model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from . import _common as c


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci) -> str:
    return "n/a" if not ci or None in ci else f"{ci[0]:.3f}-{ci[1]:.3f}"


def evaluate(
    probe_path: Path = typer.Option(..., "--probe", "-p", help="run folder or probe bundle directory"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="labelled external set: built-in name (riskscope "
                                "datasets) or a .jsonl/.csv file (pairs or single labelled texts)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="write evaluation.json, scores.jsonl and "
                                           "evaluation.html here (default: print only)"),
    model: Optional[str] = c.RunModelOpt,
    batch_size: int = c.BatchOpt,
    n_bootstrap: int = c.BootstrapOpt,
    seed: int = c.SeedOpt,
    no_lexical: bool = typer.Option(False, "--no-lexical", help="skip the lexical transfer baseline"),
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: Optional[bool] = c.RunTrustOpt,
    module_paths: Optional[str] = c.RunPathsOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Score a labelled external set with a run's probe: AUC, pair accuracy, F1 and accuracy with 95% CIs, per
    category and severity, calibration, the lexical transfer baseline and the ΔAUC test."""
    from ..pipeline import EvaluateConfig, evaluate as run_eval, load_evaluation_model, prepare_evaluation

    cfg = EvaluateConfig(probe=probe_path, dataset=dataset, out=out_dir, model=model, dtype=dtype, device=device,
                         trust_remote_code=trust_remote_code, module_paths=module_paths, batch_size=batch_size,
                         n_bootstrap=n_bootstrap, seed=seed, lexical=not no_lexical)
    prep = prepare_evaluation(cfg)  # bad input fails here, before the model loads
    with c.err.status(f"loading model {cfg.model or prep.probe.model_id} ..."):
        lm = load_evaluation_model(cfg, prep)
    with warnings.catch_warnings(record=True) as caught, c.err.status("evaluating ...") as st:
        warnings.simplefilter("always", UserWarning)
        ev = run_eval(cfg, lm, prepared=prep, status=lambda msg: st.update(msg))
    for w in caught:
        c.err.print(f"warning: {w.message}", highlight=False, markup=False, soft_wrap=True)
    r = ev.result
    if json_out:
        c.print_json({k: r[k] for k in ("probe", "dataset", "truncated", "probe_metrics", "lexical", "delta_auc",
                                        "lexical_misses", "categories", "calibration", "cv", "notes")}
                     | {"files": ev.files})
        return
    from rich.table import Table

    t = Table(title=f"{r['probe'].get('recipe') or r['probe']['name']} on {r['dataset']['name']} ({r['n_texts']} texts, {r['n_pairs']} pairs)")
    for col in ("model", "AUC", "95% CI", "pair acc", "95% CI", "F1", "accuracy"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, m in (("probe", r["probe_metrics"]), ("lexical", r["lexical"])):
        if m:
            t.add_row(name, _fmt(m["auc"]), _ci(m["auc_ci"]), _fmt(m["pair_accuracy"]), _ci(m["pair_accuracy_ci"]),
                      _fmt(m["f1"]), _fmt(m["accuracy"]))
    c.out.print(t)
    d = r["delta_auc"]
    if d:
        c.out.print(f"ΔAUC (probe - lexical): {_fmt(d['value'])}, 95% CI {_ci(d['ci'])}, p = {_fmt(d['p_value'])}")
    c.out.print(f"calibration: ECE {_fmt(r['calibration']['ece'])}; truncated texts: {r['truncated']['count']}")
    unseen = (r["categories"] or {}).get("unseen")
    if unseen:
        c.out.print(f"categories unseen in training: {', '.join(unseen)}")
    for note in r["notes"]:
        c.err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if ev.files:
        c.out.print(f"wrote {out_dir}: " + ", ".join(sorted(Path(f).name for f in ev.files.values())))


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to ``app``."""
    app.command("evaluate")(evaluate)


__all__ = ["evaluate", "register"]
