"""A whole MELBO run: (radius sweep), training, random controls, completions, metrics, clusters, files.

>>> from riskscope.melbo import MelboConfig, EvalConfig, run_melbo   # doctest: +SKIP
>>> res = run_melbo(lm, ["How can I make a bomb?"], MelboConfig(n_vectors=32), EvalConfig(),
...                 out_dir="runs/melbo")                             # doctest: +SKIP
>>> res.vectors[3]   # a SteeringVector at mlp_out.<source>            # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .._version import __version__
from .._io import OutputFiles, atomic_text, check_foreign_files, check_output_dir
from ..errors import RiskscopeError
from ..models import LoadedModel
from ..steering import SteeringVector
from ._adapter import SteeringAdapter
from ._config import EvalConfig, MelboConfig, Positions
from ._engine import EncodedPrompts, SteeredSlice, encode_prompts
from ._evaluate import (Embed, Generated, cluster, distinct_ratio, fluency, generate, get_embedder,
                        mean_pairwise_distance, pick_radius)
from ._train import TrainResult, _unit_columns, objective_of, random_vectors, train

Progress = Callable[[str, int, int], object]


@dataclass
class MelboResult:
    """Everything a run produced; ``vectors`` / ``adapters`` are ready to apply."""

    config: MelboConfig
    eval_config: EvalConfig | None
    model: dict
    prompts: EncodedPrompts
    source: int
    target: int
    radius: float
    training: TrainResult
    vectors: list[SteeringVector] = field(default_factory=list)
    adapters: list[SteeringAdapter] = field(default_factory=list)
    random_vectors: list[SteeringVector] = field(default_factory=list)
    random_adapters: list[SteeringAdapter] = field(default_factory=list)
    random_objective: list[float] = field(default_factory=list)
    sweep: dict | None = None
    completions: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    clusters: dict | None = None
    out_dir: Path | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def objective(self) -> list[float]:
        return [float(x) for x in self.training.objective_V]


def _note(progress: Progress | None, stage: str, done: int = 0, total: int = 1) -> None:
    if progress is not None:
        progress(stage, done, total)


# --- building values -----------------------------------------------------------------------------------------


def _as_vectors(theta_VD: Tensor, layer: int, model_id: str, meta: dict, objective: Tensor) -> list[SteeringVector]:
    return [SteeringVector({layer: theta_VD[j]}, hook="mlp_out", model=model_id,
                           meta={**meta, "index": j, "objective": float(objective[j])})
            for j in range(len(theta_VD))]


def _as_adapters(A: Tensor, B: Tensor, radius: Tensor, layer: int, model_id: str, meta: dict,
                 objective: Tensor) -> list[SteeringAdapter]:
    return [SteeringAdapter(layer=layer, A=A[j], B=B[j], scale=float(radius[j]), model=model_id,
                            meta={**meta, "index": j, "objective": float(objective[j])}) for j in range(len(A))]


def _adapter_unit_size(sl: SteeredSlice, rank: int, seed: int) -> float:
    """Median per-token norm of a random unit-column adapter's output at scale 1 (calibrates R)."""
    gen = torch.Generator().manual_seed(seed)
    A = _unit_columns(torch.randn(4, sl.lm.layout.d_mlp, rank, generator=gen)).to(sl.lm.device)
    B = _unit_columns(torch.randn(4, sl.lm.d_model, rank, generator=gen)).to(sl.lm.device)
    out = torch.einsum("ptf,cfr,cdr->cptd", sl.neurons_PTF.float(), A, B).norm(dim=-1)
    return float(out[:, sl.mask.bool()].median())


# --- training only -------------------------------------------------------------------------------------------


def _slice(lm: LoadedModel, enc: EncodedPrompts, cfg: MelboConfig) -> SteeredSlice:
    source, target = cfg.check_model(lm.n_layers, lm.d_model, lm.layout.d_mlp)
    return SteeredSlice(lm, enc.ids, source, target, Positions.parse(cfg.positions), cfg.mixed_precision,
                        cfg.share_prefix)


def train_melbo(lm: LoadedModel, prompts: Sequence[str], config: MelboConfig = MelboConfig(),
                progress: Progress | None = None) -> MelboResult:
    """Learn ``config.n_vectors`` vectors (or adapters) at a given radius; no evaluation."""
    if config.radius == "auto":
        raise RiskscopeError("radius='auto' picks R from completions: use run_melbo (or give a number)")
    enc = encode_prompts(lm, prompts, config.chat)
    sl = _slice(lm, enc, config)
    res = _train_final(lm, enc, sl, config, float(config.radius), progress)
    return res


def _train_final(lm, enc, sl, cfg, radius, progress) -> MelboResult:
    radius_V = torch.full((cfg.n_vectors,), radius)
    tr = train(sl, cfg, radius_V, progress=lambda d, t: _note(progress, "training", d, t))
    _check_trained(tr, radius)
    meta = {"method": "melbo", "source": sl.source, "target": sl.target, "radius": radius, "p": cfg.p,
            "q": cfg.q, "positions": cfg.positions, "orthogonal": cfg.ortho, "prompts": list(enc.texts)}
    res = MelboResult(config=cfg, eval_config=None, model=lm.describe(), prompts=enc, source=sl.source,
                      target=sl.target, radius=radius, training=tr)
    res.seconds["training"] = tr.seconds
    if tr.kind == "vector":
        res.vectors = _as_vectors(tr.theta_VD, sl.source, lm.model_id, meta, tr.objective_V)
    else:
        res.adapters = _as_adapters(tr.A_VFr, tr.B_VDr, tr.radius_V, sl.source, lm.model_id,
                                    {**meta, "rank": cfg.adapter_rank}, tr.objective_V)
    return res


# --- the full run --------------------------------------------------------------------------------------------


def _perturbation(tr_or_rand) -> dict:
    if isinstance(tr_or_rand, TrainResult):
        if tr_or_rand.kind == "vector":
            return {"vectors": tr_or_rand.theta_VD}
        return {"adapters": (tr_or_rand.A_VFr, tr_or_rand.B_VDr, tr_or_rand.radius_V)}
    return tr_or_rand


def _completion_rows(gens: Sequence[Generated], flu: np.ndarray, emb: np.ndarray, enc: EncodedPrompts,
                     set_name: str, prompt_set: str, base: dict[int, tuple[float, np.ndarray, str, float]],
                     ecfg: EvalConfig, extra: Callable[[int], dict] | None = None) -> list[dict]:
    rows = []
    for g, f, e in zip(gens, flu, emb):
        b_flu, b_emb, b_text, b_distinct = base[g.prompt]
        distinct = distinct_ratio(g.ids)
        fluent = bool(np.isfinite(f) and f >= b_flu - ecfg.fluency_margin
                      and distinct >= min(ecfg.min_distinct, b_distinct))
        rows.append({"set": set_name, "vector": None if g.cond < 0 else g.cond, "prompts": prompt_set,
                     "prompt_index": g.prompt, "prompt": enc.texts[g.prompt], "sample": g.sample, "text": g.text,
                     "n_tokens": len(g.ids), "fluency": None if not np.isfinite(f) else round(float(f), 4),
                     "distinct_trigrams": round(distinct, 3),
                     "fluent": fluent, "same_as_unsteered": g.text.strip() == b_text.strip(),
                     "distance_to_unsteered": round(float(1 - e @ b_emb), 4), **(extra(g.cond) if extra else {})})
    return rows


def _set_metrics(rows: list[dict], emb: np.ndarray, n_prompts: int) -> dict:
    """Diversity / fluency summaries of one set's greedy completions on one prompt set."""
    greedy = [k for k, r in enumerate(rows) if r["sample"] == 0]
    if not greedy:
        return {}
    div, div_fluent = [], []
    for i in range(n_prompts):
        ks = [k for k in greedy if rows[k]["prompt_index"] == i]
        keep = np.array([rows[k]["fluent"] for k in ks])
        div.append(mean_pairwise_distance(emb[ks]))
        div_fluent.append(mean_pairwise_distance(emb[ks], keep))
    flu = [rows[k]["fluency"] for k in greedy if rows[k]["fluency"] is not None]
    return {"diversity": float(np.mean(div)), "diversity_fluent": float(np.mean(div_fluent)),
            "fluency_mean": float(np.mean(flu)) if flu else None,
            "fluent_fraction": float(np.mean([rows[k]["fluent"] for k in greedy])),
            "same_as_unsteered_fraction": float(np.mean([rows[k]["same_as_unsteered"] for k in greedy])),
            "distance_to_unsteered_mean": float(np.mean([rows[k]["distance_to_unsteered"] for k in greedy]))}


class _Judge:
    """Generates, scores and embeds completions of one prompt set, relative to its unsteered completion."""

    def __init__(self, lm, enc, layer, ecfg: EvalConfig, embed: Embed, seed: int, name: str):
        self.lm, self.enc, self.layer, self.ecfg, self.embed, self.seed, self.name = lm, enc, layer, ecfg, embed, \
            seed, name
        gens = generate(lm, enc.ids, layer, [-1], max_new_tokens=ecfg.max_new_tokens, batch=ecfg.generation_batch)
        flu, emb = fluency(lm, enc.ids, gens), self.embed([g.text for g in gens])
        self.base = {g.prompt: (float(f), e, g.text, distinct_ratio(g.ids)) for g, f, e in zip(gens, flu, emb)}
        self.base_rows = _completion_rows(gens, flu, emb, enc, "unsteered", name, self.base, ecfg)

    def run(self, pert: dict, n: int, set_name: str, samples: int | None = None,
            extra: Callable[[int], dict] | None = None) -> tuple[list[dict], np.ndarray, dict]:
        e = self.ecfg
        gens = generate(self.lm, self.enc.ids, self.layer, list(range(n)), max_new_tokens=e.max_new_tokens,
                        samples=e.samples if samples is None else samples, temperature=e.temperature,
                        seed=self.seed, batch=e.generation_batch, **pert)
        flu, emb = fluency(self.lm, self.enc.ids, gens), self.embed([g.text for g in gens])
        rows = _completion_rows(gens, flu, emb, self.enc, set_name, self.name, self.base, e, extra)
        return rows, emb, _set_metrics(rows, emb, len(self.enc))


def run_melbo(lm: LoadedModel, prompts: Sequence[str], config: MelboConfig = MelboConfig(),
              eval_config: EvalConfig = EvalConfig(), out_dir: str | Path | None = None,
              progress: Progress | None = None, embed: Embed | None = None,
              report: Callable[[Path], str] | None = None) -> MelboResult:
    """Sweep R (if ``radius="auto"``), train, compare with random vectors of the same norm, cluster the
    behaviours and, with ``out_dir``, write vectors, completions and metrics there (:func:`save_run`).
    ``embed`` overrides ``eval_config.embedder`` (any ``texts -> (N, E)`` function); ``report`` renders
    report.html from the saved folder (the CLI passes ``riskscope.report.melbo_report_html``)."""
    t_start = time.perf_counter()
    if out_dir is not None:
        check_run_dir(out_dir)  # before any work: an unusable --out fails now, not after training
    cfg, ecfg = config, eval_config
    enc = encode_prompts(lm, prompts, cfg.chat)
    eval_enc = encode_prompts(lm, ecfg.eval_prompts, cfg.chat, "eval prompt") if ecfg.eval_prompts else None
    sl = _slice(lm, enc, cfg)
    embed = embed or get_embedder(ecfg.embedder, "cpu" if lm.device.type != "cuda" else str(lm.device))
    seconds: dict = {}
    _note(progress, "unsteered completions")
    judge = _Judge(lm, enc, sl.source, ecfg, embed, cfg.seed, "train")
    eval_judge = _Judge(lm, eval_enc, sl.source, ecfg, embed, cfg.seed, "eval") if eval_enc else None
    sweep, sweep_rows = None, []
    if cfg.radius == "auto":
        t0 = time.perf_counter()
        sweep, sweep_rows = _sweep(sl, cfg, judge, progress)
        radius = sweep["chosen"]
        seconds["sweep"] = time.perf_counter() - t0
    else:
        radius = float(cfg.radius)
    res = _train_final(lm, enc, sl, cfg, radius, progress)
    res.eval_config, res.sweep = ecfg, sweep
    seconds["training"] = res.training.seconds
    tr = res.training
    # random controls: same norm (vectors) or same scale and column norms (adapters)
    t0 = time.perf_counter()
    n_rand = cfg.n_vectors if ecfg.n_random is None else ecfg.n_random
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    meta = {"method": "random", "radius": radius, "source": sl.source}
    rand_pert: dict = {}
    if n_rand:
        if tr.kind == "vector":
            rtheta = random_vectors(n_rand, lm.d_model, radius, gen)
            res.random_objective = objective_of(sl, cfg, rtheta).tolist()
            res.random_vectors = _as_vectors(rtheta, sl.source, lm.model_id, meta, torch.tensor(res.random_objective))
            rand_pert = {"vectors": rtheta}
        else:
            rA = _unit_columns(torch.randn(n_rand, lm.layout.d_mlp, cfg.adapter_rank, generator=gen))
            rB = _unit_columns(torch.randn(n_rand, lm.d_model, cfg.adapter_rank, generator=gen))
            rR = torch.full((n_rand,), radius)
            with torch.no_grad():
                res.random_objective = [float(sl.objective_of(torch.einsum(
                    "ptf,fr,dr->ptd", sl.neurons_PTF.float(), rA[j].to(lm.device), rB[j].to(lm.device))[None]
                    * radius, cfg.p, cfg.q)) for j in range(n_rand)]
            res.random_adapters = _as_adapters(rA, rB, rR, sl.source, lm.model_id, meta,
                                               torch.tensor(res.random_objective))
            rand_pert = {"adapters": (rA, rB, rR)}
    # completions and metrics
    _note(progress, "completions", 0, 2)
    obj = tr.objective_V.tolist()
    rows, emb, m_learned = judge.run(_perturbation(tr), tr.n, "learned", extra=lambda j: {"objective": obj[j]})
    metrics: dict = {"learned": {"train": m_learned}, "random": {}}
    completions = judge.base_rows + rows
    if n_rand:
        _note(progress, "completions", 1, 2)
        robj = res.random_objective
        rrows, _, m_rand = judge.run(rand_pert, n_rand, "random", extra=lambda j: {"objective": robj[j]})
        metrics["random"]["train"] = m_rand
        completions += rrows
    _note(progress, "completions", 2, 2)
    if eval_judge is not None:
        _note(progress, "generalisation", 0, 1)
        erows, _, m_eval = eval_judge.run(_perturbation(tr), tr.n, "learned")
        metrics["learned"]["eval"] = m_eval
        completions += eval_judge.base_rows + erows
        if n_rand:
            errows, _, m_reval = eval_judge.run(rand_pert, n_rand, "random")
            metrics["random"]["eval"] = m_reval
            completions += errows
        _note(progress, "generalisation", 1, 1)
    seconds["evaluation"] = time.perf_counter() - t0
    # clusters of the learned vectors' greedy completions on the training prompts
    greedy = [k for k, r in enumerate(rows) if r["sample"] == 0]
    per_vec = np.stack([emb[[k for k in greedy if rows[k]["vector"] == j]].mean(0) for j in range(tr.n)])
    cl = cluster(per_vec, ecfg.max_clusters, cfg.seed)
    res.clusters = _cluster_summary(cl, rows, greedy, obj)
    metrics["objective"] = {"learned": obj, "random": res.random_objective,
                            "learned_mean": float(np.mean(obj)),
                            "random_mean": float(np.mean(res.random_objective)) if res.random_objective else None}
    metrics["training_curves"] = tr.curves_SV.T.tolist()
    metrics["vector_steps_per_second"] = tr.vector_steps_per_second
    metrics["engine"] = {"additive_source": sl.additive, "shared_prefix": sl.prefix_note, "target_rows": sl.rows_note,
                         "tokens_per_vector": sl.tokens_per_vector()}
    metrics["radius"] = {"value": radius, "chosen_by": "auto" if sweep else "given",
                         "residual_norm": sl.residual_norm()}
    if sweep:
        metrics["radius_sweep"] = sweep
    metrics["clusters"] = {"k": cl.k, "silhouette": cl.silhouette}
    seconds["total"] = time.perf_counter() - t_start
    metrics["seconds"] = seconds
    res.metrics, res.completions, res.seconds = metrics, sweep_rows + completions, seconds
    if out_dir is not None:
        _note(progress, "writing", 0, 1)
        res.out_dir = save_run(res, out_dir, eval_enc, report=report)
        _note(progress, "writing", 1, 1)
    return res


def _sweep(sl: SteeredSlice, cfg: MelboConfig, judge: _Judge, progress: Progress | None) -> tuple[dict, list]:
    """Train ``sweep_vectors`` per grid radius (all in one batch), score each radius by the diversity of
    its fluent completions, and pick the best; while the best is the top of the grid, extend the grid
    upwards (``grid_extend`` times at most) so the chosen R is not just the largest one tried."""
    unit = sl.residual_norm()
    if cfg.adapter_rank:
        unit = unit / max(_adapter_unit_size(sl, cfg.adapter_rank, cfg.seed), 1e-12)
    radii = [g * unit for g in cfg.radius_grid] if cfg.grid_relative else list(cfg.radius_grid)
    k, steps = cfg.sweep_vectors, cfg.sweep_steps or max(1, cfg.steps // 3)
    scores: list[float] = []
    curve: list[dict] = []
    rows: list[dict] = []
    seconds = 0.0

    def score(new: list[float], seed: int) -> None:
        nonlocal seconds
        radius_V = torch.tensor([r for r in new for _ in range(k)])
        group_V = torch.arange(len(new)).repeat_interleave(k)
        sweep_cfg = MelboConfig.from_dict({**cfg.to_dict(), "seed": seed, "radius": 1.0})
        tr = train(sl, sweep_cfg, radius_V, group_V, steps=steps,
                   progress=lambda d, t: _note(progress, "radius sweep", d, t))
        seconds += tr.seconds
        _check_trained(tr, new, "the radius sweep")
        got, emb, _ = judge.run(_perturbation(tr), tr.n, "sweep", samples=0,
                                extra=lambda j: {"radius": float(radius_V[j]), "objective": float(tr.objective_V[j])})
        offset = len(curve) * k
        for g, r in enumerate(new):
            mine = [i for i, row in enumerate(got) if int(group_V[row["vector"]]) == g]
            m = _set_metrics([got[i] for i in mine], emb[mine], len(judge.enc))
            scores.append(m["diversity_fluent"])
            curve.append({"radius": r, "relative": r / sl.residual_norm() if not cfg.adapter_rank else None,
                          "objective_mean": float(tr.objective_V[group_V == g].mean()), **m})
        rows.extend({**row, "vector": row["vector"] + offset} for row in got)

    score(radii, cfg.seed + 1)
    extended = 0
    while extended < cfg.grid_extend and pick_radius(radii, scores) == len(radii) - 1:
        ratio = radii[-1] / radii[-2] if len(radii) > 1 else 2.0
        radii.append(radii[-1] * ratio)
        extended += 1
        score(radii[-1:], cfg.seed + 1 + extended)
    best = pick_radius(radii, scores)
    return {"grid": radii, "score": "diversity_fluent", "scores": scores, "chosen": radii[best],
            "chosen_index": best, "steps": steps, "vectors_per_radius": k, "curve": curve, "extended": extended,
            "at_top": best == len(radii) - 1, "seconds": seconds}, rows


def _cluster_summary(cl, rows: list[dict], greedy: list[int], obj: list[float]) -> dict:
    out = []
    for c, rep in enumerate(cl.representatives):
        members = [j for j, lab in enumerate(cl.labels) if lab == c]
        texts = [rows[k]["text"] for k in greedy if rows[k]["vector"] == rep]
        flu = [rows[k]["fluency"] for k in greedy if rows[k]["vector"] in members and rows[k]["fluency"] is not None]
        out.append({"cluster": c, "size": len(members), "vectors": members, "representative": rep,
                    "representative_completions": texts, "mean_objective": float(np.mean([obj[j] for j in members])),
                    "mean_fluency": float(np.mean(flu)) if flu else None})
    return {"k": cl.k, "silhouette": cl.silhouette, "clusters": out}


# --- files -----------------------------------------------------------------------------------------------------




RUN_FOLDERS = ("vectors", "random_vectors", "adapters", "random_adapters")
"""Folders of a MELBO run folder that only riskscope writes into."""
RUN_FILES = ("config.json", "completions.jsonl", "metrics.json", "clusters.json", "report.html")
"""The top-level files :func:`save_run` writes (keep in step with it)."""


def check_run_dir(out_dir: str | Path) -> Path:
    """Refuse, before any training, an output folder :func:`save_run` could not write cleanly: an existing
    file, an unwritable parent, a previous run's manifest that cannot be read, or files riskscope did not
    write where it would write (``RUN_FILES``) or inside its own folders (``RUN_FOLDERS``). Creates nothing."""
    out = check_output_dir(out_dir)
    check_foreign_files(out, RUN_FILES, RUN_FOLDERS)
    return out


def _check_trained(tr: TrainResult, radius, what: str = "training") -> None:
    """Refuse vectors (or adapters) that are not finite numbers, and objectives that overflowed."""
    parts = [tr.theta_VD] if tr.kind == "vector" else [tr.A_VFr, tr.B_VDr]
    bad = torch.zeros(tr.n, dtype=torch.bool)
    for t in parts:
        bad |= ~torch.isfinite(t.detach().float().reshape(tr.n, -1)).all(1).cpu()
    bad |= ~torch.isfinite(tr.objective_V.detach().float().cpu())
    if bool(bad.any()):
        raise RiskscopeError(f"{what} produced NaN or infinite values for {int(bad.sum())} of {tr.n} {tr.kind}s "
                             f"(R = {radius}); nothing was written: lower --lr, --radius or --p")


def _run_files(res: MelboResult) -> list[tuple[str, object]]:
    """(relative path, value) of every steering vector or adapter file :func:`save_run` writes."""
    out = []
    for name, values in (("vectors", res.vectors), ("random_vectors", res.random_vectors),
                         ("adapters", res.adapters), ("random_adapters", res.random_adapters)):
        for j, v in enumerate(values):
            out.append((f"{name}/{name.rstrip('s')}_{j:03d}", v))
    return out


def save_run(res: MelboResult, out_dir: str | Path, eval_enc: EncodedPrompts | None = None,
             report: Callable[[Path], str] | None = None) -> Path:
    """Write config.json, vectors/ (or adapters/), random_*/, completions.jsonl, metrics.json,
    clusters.json and, when ``report`` is given, ``report.html = report(out_dir)`` under ``out_dir``
    (each file atomically), then ``files.json``, the
    list of files written. Re-run into the same folder, it replaces its own previous files only (those
    the previous ``files.json`` lists) and refuses, before writing anything, a folder holding files it
    did not write where it writes; non-finite vectors are refused, nothing written."""
    for j, v in enumerate([*res.vectors, *res.random_vectors]):
        if not all(bool(torch.isfinite(t).all()) for t in v.vectors.values()):
            raise RiskscopeError(f"vector {j} holds NaN or infinite values; nothing was written to {out_dir}")
    for j, a in enumerate([*res.adapters, *res.random_adapters]):
        if not (bool(torch.isfinite(a.A).all()) and bool(torch.isfinite(a.B).all()) and math.isfinite(a.scale)):
            raise RiskscopeError(f"adapter {j} holds NaN or infinite values; nothing was written to {out_dir}")
    values = _run_files(res)
    planned = [*RUN_FILES, *(f"{base}{ext}" for base, _ in values for ext in (".safetensors", ".json"))]
    files = OutputFiles(out_dir, planned, RUN_FOLDERS)
    out = files.folder
    config = {"format": "riskscope-melbo/1", "riskscope": __version__, "melbo": res.config.to_dict(),
              "eval": res.eval_config.to_dict() if res.eval_config else None, "model": res.model,
              "prompts": list(res.prompts.texts), "formatted_prompts": list(res.prompts.formatted),
              "eval_formatted_prompts": list(eval_enc.formatted) if eval_enc else [],
              "source": res.source, "target": res.target, "radius": res.radius,
              "hook": f"mlp_out.{res.source}"}
    atomic_text(files.path("config.json"), json.dumps(config, indent=1))
    for base, v in values:
        files.path(f"{base}.json")
        v.save(files.path(f"{base}.safetensors"))
    atomic_text(files.path("completions.jsonl"),
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in res.completions))
    atomic_text(files.path("metrics.json"), json.dumps(res.metrics, indent=1))
    atomic_text(files.path("clusters.json"), json.dumps(res.clusters, indent=1, ensure_ascii=False))
    if report is not None:  # the page is rendered from the files just written
        atomic_text(files.path("report.html"), report(out))
    files.finish()
    return out


def load_vectors(out_dir: str | Path, which: str = "vectors") -> list[SteeringVector]:
    """The steering vectors a run saved (``vectors`` or ``random_vectors``), in order."""
    folder = Path(out_dir) / which
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RiskscopeError(f"{folder}: no saved steering vectors")
    return [SteeringVector.load(f) for f in files]


def load_adapters(out_dir: str | Path, which: str = "adapters") -> list[SteeringAdapter]:
    """The adapters a run saved (``adapters`` or ``random_adapters``), in order."""
    folder = Path(out_dir) / which
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RiskscopeError(f"{folder}: no saved adapters")
    return [SteeringAdapter.load(f) for f in files]


__all__ = ["MelboResult", "RUN_FILES", "RUN_FOLDERS", "check_run_dir", "load_adapters", "load_vectors", "run_melbo",
           "save_run", "train_melbo"]
