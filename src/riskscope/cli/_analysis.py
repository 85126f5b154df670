"""``riskscope analyze``, ``neurons``, ``ask``, ``steer``, ``trace`` and the ``vector`` group.

``register(app)`` adds them to the ``riskscope`` typer app. No analysis logic lives here; every command calls
the Python API and writes JSON with the same ``to_dict`` the run pipeline uses. Commands on a run folder load
the run's model with the settings its manifest recorded (``--model``, ``--trust-remote-code`` and
``--module-paths`` override them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _common as c
from ..errors import RiskscopeError


def _store_of(run: Path):
    from ..pipeline import open_run_store

    return open_run_store(run)


def _probe_of(run: Path, store, hook: Optional[str], layer: Optional[int]):
    """The run's probe bundle if there is one, else a probe fitted on the store at the best (or given) point."""
    from ..probes import probe_for_run

    return probe_for_run(run, store, hook=hook, layer=layer)


def _load_vector(path: Path):
    from ..steering import SteeringVector, import_control_vector

    return import_control_vector(path) if str(path).endswith(".gguf") else SteeringVector.load(path)


def neurons(
    run: Path = typer.Argument(..., help="run folder (or activation store) with mlp_neurons activations"),
    layers: Optional[str] = typer.Option(None, help="layers to rank (default: all in the store), e.g. 20-29"),
    effect_layers: Optional[str] = typer.Option(None, "--effect-layers",
                                                help="layers to clamp (default: the 3 of the later half with the largest effect sizes)"),
    top_k: int = typer.Option(10, help="neurons listed per layer"),
    by: str = typer.Option("weight", help="rank by |standardised probe weight| (weight) or |Cohen's d| (effect)"),
    effects: bool = typer.Option(True, "--effects/--no-effects", help="clamp neurons in the live model"),
    mode: str = typer.Option("sd", help="clamp to: sd (risky mean + k sd), risky_mean (k x it), value, zero"),
    k: float = typer.Option(10.0, help="multiplier for sd / risky_mean modes"),
    value: float = typer.Option(1.0, help="clamp value for --mode value"),
    positions: str = typer.Option("all", help="clamp at all tokens or only the last"),
    n_texts: int = typer.Option(48, help="validation texts (whole pairs)"),
    singles: int = typer.Option(3, help="top neurons per layer clamped one at a time"),
    group: int = typer.Option(10, help="top neurons per layer clamped together (0 = no group clamp)"),
    batch_size: int = typer.Option(32, help="texts per forward"),
    seed: int = typer.Option(0, help="seed for validation texts and control neurons"),
    model: Optional[str] = c.RunModelOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: Optional[bool] = c.RunTrustOpt,
    module_paths: Optional[str] = c.RunPathsOpt,
    out: Optional[Path] = c.SaveOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Rank MLP neurons by probe weight and effect size; clamp the top ones next to random controls."""
    from ..neurons import EffectsConfig, neuron_effects, rank_neurons

    store = _store_of(run)
    ranking = rank_neurons(store, c.layers_or_none(layers), top_k=top_k, by=by)
    result: dict = {"ranking": ranking.to_dict()}
    if effects:
        cfg = EffectsConfig(mode=mode, k=k, value=value, positions=positions, n_texts=n_texts, singles=singles,
                            group=group, batch_size=batch_size, seed=seed)
        lm = c.load_run_lm(run, model, dtype, device, trust_remote_code, module_paths)
        with c.progress() as prog:
            task = prog.add_task("clamping neurons", total=None)
            ne = neuron_effects(lm, store, ranking, c.layers_or_none(effect_layers, lm.n_layers), config=cfg,
                                progress=lambda done, total: prog.update(task, completed=done, total=total))
        result["effects"] = ne.to_dict()
    c.save_json(out if out is not None else (Path(run) / "neurons.json" if (Path(run) / "store").is_dir() else None),
                result)
    if json_out:
        c.print_json(result)
        return
    _print_neurons(ranking, result.get("effects"))


def _print_neurons(ranking, effects: dict | None) -> None:
    from rich.table import Table

    t = Table("neuron", "weight", "Cohen's d", "risky - benign", title=f"top neurons by {ranking.by}")
    for layer in ranking.layers:
        for s in ranking.top[layer][:5]:
            t.add_row(s.label, f"{s.weight:+.3f}", f"{s.effect_size:+.2f}", f"{s.mean_diff:+.4f}")
    c.out.print(t)
    if not effects:
        return
    t = Table("clamp", "KL", "KL random", "Δ log P(risk)", "Δ random", "boosts (texts where it holds)",
              title=f"clamping effects on {effects['n_texts']} texts, next to random neurons of the same layer")
    for r in (*effects["singles"], *effects["groups"]):
        e, ctl = r["effect"], r["control"]
        boosts = ", ".join(f"{b['token'].strip()!r}({b['n_texts']})" for b in e["boosts"][:8])
        t.add_row(r["label"], f"{e['kl']:.4f}", f"{ctl['kl']:.4f}", f"{e['risk_dlogp'] or 0:+.3f}",
                  f"{ctl['risk_dlogp'] or 0:+.3f}", boosts)
    c.out.print(t)


def ask(
    model: str = c.ModelOpt,
    dataset: str = c.DatasetOpt,
    limit: Optional[int] = c.LimitOpt,
    template_file: Optional[Path] = typer.Option(None, "--templates",
                                                 help="JSON list of {name, prompt, positive, negative, chat}"),
    prompt: Optional[str] = typer.Option(None, help="one template, e.g. '{text} The risk seems'"),
    positive: str = typer.Option(" high", help="comma list of answers meaning risky (with --prompt)"),
    negative: str = typer.Option(" low", help="comma list of answers meaning benign (with --prompt)"),
    chat: bool = typer.Option(False, "--chat", help="wrap --prompt in the chat template"),
    folds: int = c.FoldsOpt,
    seed: int = c.SeedOpt,
    n_bootstrap: int = c.BootstrapOpt,
    batch_size: int = typer.Option(16, help="prompts per forward"),
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: bool = c.TrustOpt,
    module_paths: Optional[str] = c.PathsOpt,
    out: Optional[Path] = c.SaveOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Ask the model zero-shot (' high' vs ' low' next, say) and score it like the probes."""
    from ..scorers import DEFAULT_TEMPLATES, AskTemplate, ask_baseline, ask_templates, load_templates
    from ..data import load_dataset

    if prompt is not None:
        templates = (AskTemplate("custom", prompt, tuple(positive.split(",")), tuple(negative.split(",")), chat),)
    elif template_file is not None:
        templates = load_templates(template_file)
    else:
        templates = DEFAULT_TEMPLATES
    data = load_dataset(dataset).limit(limit)
    if folds < 2:
        raise RiskscopeError(f"--folds must be >= 2, got {folds}")
    lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    templates = ask_templates(lm, templates)
    with c.progress() as prog:
        task = prog.add_task("asking", total=len(data) * len(templates))
        ev = ask_baseline(lm, data.texts, data.labels, data.pair_ids, templates, folds=folds, seed=seed,
                          n_bootstrap=n_bootstrap, batch_size=batch_size, progress=lambda n: prog.advance(task, n))
    c.save_json(out, ev.to_dict(arrays=True))
    if json_out:
        c.print_json(ev.to_dict())
        return
    from rich.table import Table

    t = Table("template", "AUC", "95% CI", "pair acc.", "F1", "acc.", "zero-shot acc.", "answers")
    for r in ev.results:
        t.add_row(r.template.name, f"{r.auc:.3f}", f"{r.auc_ci[0]:.2f}–{r.auc_ci[1]:.2f}", f"{r.pair_accuracy:.3f}",
                  f"{r.f1:.3f}", f"{r.accuracy:.3f}", f"{r.zero_shot_accuracy:.3f}",
                  f"{r.answer_tokens['positive']} vs {r.answer_tokens['negative']}")
    c.out.print(t)


def steer(
    prompts: Optional[list[str]] = typer.Argument(None, help="prompts to complete (none with --demo)"),
    vector: Path = typer.Option(..., "--vector", "-v", help="riskscope vector (NAME.safetensors/.json) or .gguf"),
    scale: float = typer.Option(4.0, help="multiplier of the vector"),
    layers: Optional[str] = typer.Option(None, help="use only these layers of the vector, e.g. 8 or 6-10"),
    positions: str = typer.Option("all", help="add at all tokens or only the last one of each forward"),
    max_new_tokens: int = typer.Option(40, help="tokens to generate"),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="wrap prompts in the chat template"),
    demo: bool = typer.Option(False, "--demo", help="run the caution demo on neutral prompts vs a random vector"),
    model: str = c.ModelOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: bool = c.TrustOpt,
    module_paths: Optional[str] = c.PathsOpt,
    out: Optional[Path] = c.SaveOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Print unsteered and steered completions side by side (or run the caution demo)."""
    from ..steering import NEUTRAL_PROMPTS, SteeringVector, caution_demo, steer_compare

    vec = _load_vector(vector)
    if positions not in ("all", "last"):
        raise RiskscopeError(f"--positions must be all or last, got {positions!r}")
    lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    chosen = c.layers_or_none(layers, lm.n_layers)
    if chosen:
        missing = [k for k in chosen if k not in vec.vectors]
        if missing:
            raise RiskscopeError(f"{vector} has no layer(s) {missing}; it has {vec.layers}")
        vec = SteeringVector({k: vec.vectors[k] for k in chosen}, hook=vec.hook, model=vec.model, meta=vec.meta)
    vec.check(lm)
    if demo:
        with c.err.status("running the caution demo ..."):
            res = caution_demo(lm, vec, list(prompts) if prompts else NEUTRAL_PROMPTS, scale=scale, chat=chat,
                               max_new_tokens=max_new_tokens)
        c.save_json(out, res.to_dict())
        if json_out:
            c.print_json(res.to_dict())
            return
        c.out.print(f"steered: {res.steered}\nrandom:  {res.random}\nnone:    {res.baseline}\nwins: {res.wins:.2f}")
        return
    if not prompts:
        raise RiskscopeError("give at least one prompt (or --demo)")
    with c.err.status("generating ..."):
        samples = steer_compare(lm, prompts, vec, scale=scale, positions=None if positions == "all" else "last",
                                max_new_tokens=max_new_tokens, chat=chat)
    data = {"vector": str(vector), "layers": vec.layers, "scale": scale, "samples": [s.to_dict() for s in samples]}
    c.save_json(out, data)
    if json_out:
        c.print_json(data)
        return
    from rich.table import Table

    t = Table("prompt", "unsteered", f"steered (x{scale:g}, layers {vec.layers})", show_lines=True)
    for s in samples:
        t.add_row(s.prompt, s.unsteered, s.steered)
    c.out.print(t)


def trace(
    texts: Optional[list[str]] = typer.Argument(None, help="texts to trace (default: pairs from the run's store)"),
    run: Path = typer.Option(..., "--run", "-r", help="run folder (or activation store) to take the probe from"),
    hook: Optional[str] = typer.Option(None, help="probe hook (default: the run's best)"),
    layer: Optional[int] = typer.Option(None, help="probe layer (default: the run's best)"),
    pairs: int = typer.Option(3, help="pairs from the store when no texts are given"),
    attribution: bool = typer.Option(True, "--attribution/--no-attribution", help="add gradient x input"),
    model: Optional[str] = c.RunModelOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: Optional[bool] = c.RunTrustOpt,
    module_paths: Optional[str] = c.RunPathsOpt,
    out: Optional[Path] = c.SaveOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Score every token position with the run's probe; add gradient x input attribution."""
    from ..scorers import pick_trace_texts, token_traces

    store = _store_of(run)
    probe = _probe_of(run, store, hook, layer)
    labels = None
    if not texts:
        texts, labels = pick_trace_texts(store, pairs)
    lm = c.load_run_lm(run, model, dtype, device, trust_remote_code, module_paths)
    res = token_traces(lm, probe, texts, labels, attribution=attribution)
    c.save_json(out, res.to_dict())
    if json_out:
        c.print_json(res.to_dict())
        return
    import numpy as np
    from rich.text import Text

    c.out.print(f"probe {res.probe}: background = P(risky) after each token; underline = top-3 gradient x input")
    for tr in res.traces:
        line = Text()
        top = set(np.argsort(-np.abs(tr.attribution))[:3].tolist()) if tr.attribution is not None else set()
        for i, (tok, p) in enumerate(zip(tr.tokens, tr.prob)):
            red, blue = int(255 * p), int(255 * (1 - p))
            line.append(tok, style=f"on rgb({min(255, 155 + red // 3)},{200},{min(255, 155 + blue // 3)})"
                        + (" underline bold" if i in top else ""))
        label = "" if tr.label is None else ("[risky] " if tr.label == 1 else "[benign] ")
        c.out.print(Text(label) + line + Text(f"  final P={tr.prob[-1]:.2f}"))


vector_app = typer.Typer(help="Build, export (llama.cpp GGUF) and import steering vectors.", no_args_is_help=True,
                         rich_markup_mode=None)


@vector_app.command("build")
def vector_build(
    run: Path = typer.Argument(..., help="run folder or activation store"),
    out: Path = typer.Option(..., "--out", "-o", help="vector path without suffix (writes .safetensors + .json)"),
    hook: str = typer.Option("resid_post", help="hook of the activations"),
    layers: Optional[str] = typer.Option(None, help="layers (default: all in the store)"),
    normalize: bool = typer.Option(False, help="unit norm per layer"),
    gguf: bool = typer.Option(False, "--gguf", help="also write OUT.gguf for llama.cpp (layer 0 left out)"),
    json_out: bool = c.JsonOpt,
) -> None:
    """Risky-minus-benign diff-of-means vector from the store."""
    from ..steering import diff_of_means_vector, export_control_vector

    vec = diff_of_means_vector(_store_of(run), hook, c.layers_or_none(layers), normalize=normalize)
    written = {"vector": str(vec.save(out))}
    if gguf:
        written["gguf"] = str(export_control_vector(vec, Path(str(out) + ".gguf"), drop_layer0=True))
    c.print_json({**written, "layers": vec.layers, "norms": vec.norms()}) if json_out else \
        c.out.print(f"wrote {', '.join(written.values())} ({len(vec.layers)} layers at {vec.hook})")


@vector_app.command("export")
def vector_export(
    vector: Path = typer.Argument(..., help="riskscope vector (NAME.safetensors or NAME.json)"),
    out: Path = typer.Option(..., "--out", "-o", help="the .gguf file to write"),
    drop_layer0: bool = typer.Option(False, "--drop-layer0", help="leave out layer 0, which llama.cpp rejects"),
    model_hint: Optional[str] = typer.Option(None, help="controlvector.model_hint (default: from the vector)"),
    json_out: bool = c.JsonOpt,
) -> None:
    """Write a vector as a llama.cpp control vector (direction.<k> = output of block k)."""
    from ..steering import SteeringVector, export_control_vector

    path = export_control_vector(SteeringVector.load(vector), out, model_hint=model_hint, drop_layer0=drop_layer0)
    c.print_json({"gguf": str(path)}) if json_out else c.out.print(f"wrote {path}")


@vector_app.command("import")
def vector_import(
    gguf_file: Path = typer.Argument(..., help="llama.cpp / repeng control vector (.gguf)"),
    out: Path = typer.Option(..., "--out", "-o", help="vector path without suffix"),
    json_out: bool = c.JsonOpt,
) -> None:
    """Read a control-vector GGUF into riskscope's format (resid_post, layer k = direction.k)."""
    from ..steering import import_control_vector

    vec = import_control_vector(gguf_file)
    path = vec.save(out)
    info = {"vector": str(path), "layers": vec.layers, "width": vec.width, "model_hint": vec.meta.get("model_hint")}
    c.print_json(info) if json_out else c.out.print(f"wrote {path}: layers {vec.layers}, width {vec.width}")


def analyze(
    run: Path = typer.Argument(..., help="run folder made by riskscope run (or riskscope cache + probe)"),
    skip: str = typer.Option("", "--skip", help=c.SKIP_HELP),
    ask_pairs: int = typer.Option(64, "--ask-pairs", help="pairs the ask baseline scores (0 = every row)"),
    report: bool = typer.Option(True, "--report/--no-report", help="rewrite RUN/report.html afterwards"),
    model: Optional[str] = c.RunModelOpt,
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: Optional[bool] = c.RunTrustOpt,
    module_paths: Optional[str] = c.RunPathsOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Run the live-model analyses of `riskscope run` on an existing run folder and rewrite its report."""
    from ..pipeline import analyze_run, parse_skip

    analyses = parse_skip(skip)
    if not analyses:
        raise RiskscopeError("--skip leaves no analysis to run")
    _store_of(run)  # not a run folder: fail before loading the model
    lm = c.load_run_lm(run, model, dtype, device, trust_remote_code, module_paths)
    with c.err.status("analyses ...") as st:
        done = analyze_run(lm, run, analyses, progress=lambda msg: st.update(f"analyses: {msg} ..."),
                           ask_pairs=ask_pairs or None)
    files = dict(done.files)
    if report and (Path(run) / "metrics.json").is_file():
        from ..report import write_report

        files["report"] = str(write_report(run))
    elif report:
        c.err.print(f"no report: {run} has no metrics.json (run `riskscope probe {run}` first)")
    if json_out:
        c.print_json({"files": files, "seconds": done.seconds})
        return
    for name, path in files.items():
        c.out.print(f"{name}: {path}")


def register(app: typer.Typer) -> None:
    """Add ``neurons``, ``ask``, ``steer``, ``trace``, ``analyze`` and the ``vector`` group to ``app``."""
    app.command("analyze")(analyze)
    app.command("neurons")(neurons)
    app.command("ask")(ask)
    app.command("steer")(steer)
    app.command("trace")(trace)
    app.add_typer(vector_app, name="vector")


__all__ = ["register", "vector_app"]
