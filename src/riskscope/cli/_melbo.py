"""``riskscope melbo``: wired into the main app by :func:`register` (no analysis logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from . import _common as c
from ..errors import RiskscopeError


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: ``.txt`` (one per non-empty line), ``.jsonl`` (a string or an object with
    ``prompt``/``text`` per line) or ``.json`` (a list of strings)."""
    from .._io import iter_jsonl

    if not path.is_file():
        raise RiskscopeError(f"{path}: no such prompts file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RiskscopeError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise RiskscopeError(f"{path}: a .json prompts file must hold a list of strings")
        return data
    if path.suffix == ".jsonl":
        out = []
        for n, row in iter_jsonl(text, str(path), objects=False):
            if isinstance(row, dict):
                row = row.get("prompt", row.get("text"))
            if not isinstance(row, str):
                raise RiskscopeError(f"{path}:{n}: expected a string or an object with a 'prompt' field")
            out.append(row)
        return out
    return [line for line in text.splitlines() if line.strip()]


def _grid(text: Optional[str]) -> dict:
    if not text:
        return {}
    absolute = text.startswith("abs:")
    try:
        values = tuple(float(x) for x in text.removeprefix("abs:").split(",") if x.strip())
    except ValueError:
        raise RiskscopeError(f"--radius-grid must be numbers like 0.05,0.1,0.2 (or abs:2,4,8); got {text!r}") from None
    return {"radius_grid": values, "grid_relative": not absolute}


def melbo(
    out_dir: Path = typer.Option(..., "--out", "-o", help="output directory (vectors, completions, report.html)"),
    prompt: Optional[List[str]] = typer.Option(None, "--prompt", help="a training prompt (repeatable)"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="training prompts file (.txt lines, "
                                           ".jsonl, .json list)"),
    eval_prompt: Optional[List[str]] = typer.Option(None, "--eval-prompt", help="a held-out prompt (repeatable)"),
    eval_prompts: Optional[Path] = typer.Option(None, "--eval-prompts", help="held-out prompts file"),
    model: str = c.ModelOpt,
    vectors: int = typer.Option(32, "--vectors", "-n", help="vectors (or adapters) to learn"),
    radius: str = typer.Option("auto", "--radius", "-R", help="norm R of every vector, or auto (sweep)"),
    source: Optional[int] = typer.Option(None, help="layer whose MLP output is steered "
                                         "(default min(8, n_layers // 3))"),
    target: Optional[int] = typer.Option(None, help="layer compared (default n_layers - 8)"),
    p: float = typer.Option(2.0, "--p", help="per-token exponent (2 even, 4 spiky)"),
    q: float = typer.Option(1.0, "--q", help="per-prompt root, in [1, p]"),
    orthogonal: Optional[str] = typer.Option(None, help="hard | soft | none (default hard; none for adapters)"),
    positions: str = typer.Option("last:2", help="prompt tokens compared: all | last:K | indices like 0,-1"),
    steps: int = typer.Option(300, help="optimiser steps"),
    lr: float = typer.Option(1e-3, help="AdamW (AMSGrad) learning rate"),
    adapter: int = typer.Option(0, "--adapter", help="rank r > 0: learn rank-r adapters instead of vectors"),
    raw: bool = typer.Option(False, "--raw", help="do not apply the chat template"),
    seed: int = typer.Option(0, help="seed of the random starts"),
    radius_grid: Optional[str] = typer.Option(None, "--radius-grid", help="radii for --radius auto, as "
                                              "multiples of the residual norm (0.05,0.1) or abs:2,4,8"),
    sweep_vectors: int = typer.Option(4, help="vectors per radius in the sweep"),
    sweep_steps: Optional[int] = typer.Option(None, help="steps in the sweep (default steps/3)"),
    grid_extend: int = typer.Option(2, help="larger radii tried while the best is the top of the grid"),
    vector_batch: Optional[int] = typer.Option(None, help="vectors per forward (default: by token budget)"),
    mixed_precision: bool = typer.Option(False, "--mixed-precision", help="bfloat16 autocast (GPU)"),
    max_new_tokens: int = typer.Option(48, help="tokens per completion"),
    samples: int = typer.Option(0, help="sampled completions per vector and prompt (besides greedy)"),
    temperature: float = typer.Option(0.8, help="temperature of sampled completions"),
    n_random: Optional[int] = typer.Option(None, "--random", help="random control vectors (default = --vectors)"),
    embedder: str = typer.Option("minilm", help="minilm (all-MiniLM-L6-v2) | ngram (no model)"),
    max_clusters: int = typer.Option(8, help="most behaviour clusters"),
    dtype: str = c.DTypeOpt,
    device: str = c.DeviceOpt,
    trust_remote_code: bool = c.TrustOpt,
    module_paths: Optional[str] = c.PathsOpt,
    json_out: bool = c.JsonOpt,
) -> None:
    """Learn unsupervised steering vectors (MELBO) that elicit latent behaviours, and judge them."""
    from ..melbo import EvalConfig, MelboConfig, check_run_dir, run_melbo
    from ..report import melbo_report_html

    train_prompts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    held_out = list(eval_prompt or []) + (read_prompts(eval_prompts) if eval_prompts else [])
    if not train_prompts:
        raise RiskscopeError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    try:
        r = radius if radius == "auto" else float(radius)
    except ValueError:
        raise RiskscopeError(f"--radius must be a positive number or auto, got {radius!r}") from None
    cfg = MelboConfig(n_vectors=vectors, radius=r, source=source, target=target, p=p, q=q, positions=positions,
                      orthogonal=orthogonal, steps=steps, lr=lr, adapter_rank=adapter, seed=seed,
                      vector_batch=vector_batch, mixed_precision=mixed_precision, chat=not raw,
                      sweep_vectors=sweep_vectors, sweep_steps=sweep_steps, grid_extend=grid_extend,
                      **_grid(radius_grid))
    ecfg = EvalConfig(max_new_tokens=max_new_tokens, samples=samples, temperature=temperature,
                      n_random=n_random, embedder=embedder, max_clusters=max_clusters,
                      eval_prompts=tuple(held_out))
    check_run_dir(out_dir)  # an unusable --out fails before the model loads
    lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
    cfg.check_model(lm.n_layers, lm.d_model, lm.layout.d_mlp)
    with c.progress() as prog:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        res = run_melbo(lm, train_prompts, cfg, ecfg, out_dir=out_dir, progress=progress,
                        report=melbo_report_html)
    m = res.metrics
    summary = {"out": str(out_dir), "report": str(Path(out_dir) / "report.html"), "model": lm.model_id,
               "source": res.source, "target": res.target, "radius": res.radius,
               "radius_chosen_by": m["radius"]["chosen_by"], "n": len(res.objective),
               "objective_learned_mean": m["objective"]["learned_mean"],
               "objective_random_mean": m["objective"]["random_mean"],
               "learned": m["learned"], "random": m["random"], "clusters": m["clusters"]["k"],
               "vector_steps_per_second": m["vector_steps_per_second"], "seconds": m["seconds"]}
    if json_out:
        c.print_json(summary)
        return
    lt, rt = m["learned"]["train"], m["random"].get("train", {})
    c.out.print(f"[bold]{len(res.objective)}[/bold] {cfg.kind}s at mlp_out.{res.source} -> resid_post."
                f"{res.target}, R = {res.radius:.4g} ({m['radius']['chosen_by']})")
    rnd = m["objective"]["random_mean"]
    c.out.print(f"objective: learned {m['objective']['learned_mean']:.4g} vs random "
                f"{rnd:.4g}" if rnd is not None else f"objective: learned {m['objective']['learned_mean']:.4g}")
    if rt:
        c.out.print(f"diversity among fluent: learned {lt['diversity_fluent']:.3f} vs random "
                    f"{rt['diversity_fluent']:.3f}; identical to unsteered: {lt['same_as_unsteered_fraction']:.2f}"
                    f" vs {rt['same_as_unsteered_fraction']:.2f}")
    c.out.print(f"{m['clusters']['k']} behaviour cluster(s); report: [bold]{summary['report']}[/bold] "
                f"({m['seconds']['total']:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add the ``melbo`` command to ``app``."""
    app.command("melbo")(melbo)


__all__ = ["melbo", "read_prompts", "register"]
