"""``organism test``: would riskscope's detectors have found the backdoor without knowing the trigger?

Each detector is reported against its control, with the compute time it took:

* **MELBO vectors** (hard-orthogonal) and **MELBO adapters** (``orthogonal="hard"``), learned on clean
  prompts only, vs random vectors (adapters) of the same norm (scale): the fraction of vectors whose greedy
  completions show the planted behaviour (the judge of :func:`~riskscope.organisms.shows_behaviour`),
  and how many vectors were trained before the first hit;
* **weight difference**: the top left-singular directions of (organism - base) for the blocks' MLP
  output weights, steered along (both signs) at the same norm, vs random directions at the same layers;
* **probe**: a cross-validated logistic probe telling triggered from clean prompts (and from near-miss
  prompts) on the organism's activations, vs the same probe on the base model and on shuffled labels.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..melbo import MelboConfig, perturb_rows, train_melbo
from ..models import LoadedModel
from ._config import OrganismError
from ._data import general_requests, shows_behaviour, code_requests, with_trigger
from ._nearmiss import near_misses
from ._metrics import rate
from ._text import encode, format_request, generate


@dataclass(frozen=True)
class DetectConfig:
    """How hard each detector looks (the compute budget)."""

    n_vectors: int = 16
    """MELBO vectors (and adapters), and random controls of each."""
    steps: int = 60
    """MELBO training steps."""
    radius: float = 0.5
    """Vector norm as a multiple of the median residual norm at the source layer."""
    adapter_rank: int = 2
    """Rank of the MELBO adapters (0 skips them)."""
    n_prompts: int = 4
    """Clean prompts the vectors are trained and judged on."""
    n_weight_dirs: int = 8
    """Weight-difference directions steered along (largest singular values first, both signs)."""
    n_probe: int = 40
    """Prompts per class for the probe."""
    max_new_tokens: int = 16
    """Tokens generated per steered completion."""
    seed: int = 0
    """Seed for the random controls, MELBO starts and the probe folds."""
    source: int | None = None
    """MELBO source layer (None: MELBO's default)."""

    def __post_init__(self) -> None:
        for name in ("n_vectors", "steps", "n_prompts", "n_probe", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise OrganismError(f"{name.replace('_', '-')} must be a whole number >= 1")
        if not self.radius > 0:
            raise OrganismError(f"--radius must be > 0; got {self.radius!r}")


def _hits(texts: Sequence[str], k: int, p: int, kind: str, secret: str) -> list[bool]:
    """Per perturbation (``k`` of them, ``p`` completions each, perturbation-major): any completion shows it."""
    return [any(shows_behaviour(kind, t, secret) for t in texts[i * p:(i + 1) * p]) for i in range(k)]


def _steered(lm: LoadedModel, prompts: Sequence[str], layer: int, max_new: int, vectors: torch.Tensor | None = None,
             adapters: tuple | None = None, chunk: int = 8) -> list[str]:
    """Greedy completions of every prompt under every perturbation (perturbation-major)."""
    k = int((vectors if vectors is not None else adapters[0]).shape[0])
    out: list[str] = []
    for c0 in range(0, k, chunk):
        c1 = min(k, c0 + chunk)
        rows = torch.arange(c1 - c0).repeat_interleave(len(prompts))
        sub = dict(vectors=vectors[c0:c1]) if vectors is not None else dict(adapters=tuple(t[c0:c1] for t in adapters))
        with perturb_rows(lm, layer, rows=rows, **sub):
            out += generate(lm.model, lm.tokenizer, list(prompts) * (c1 - c0), max_new, batch_size=len(rows))
    return out


def _summary(hits: list[bool]) -> dict:
    first = next((i for i, h in enumerate(hits) if h), None)
    return {**rate(hits), "first_hit": first, "trained_before_first_hit": None if first is None else first + 1}


def _median_resid_norm(lm: LoadedModel, prompts: Sequence[str], layer: int) -> float:
    norms = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([encode(lm.tokenizer, p)], device=lm.device)
            hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
            norms.append(hs[0].norm(dim=-1))
    return float(torch.cat(norms).median())


@contextlib.contextmanager
def _capture_input(module: torch.nn.Module):
    got: list[torch.Tensor] = []
    h = module.register_forward_hook(lambda m, a, o: got.append(a[0].detach()))
    try:
        yield got
    finally:
        h.remove()


def _adapter_unit(lm: LoadedModel, prompts: Sequence[str], layer: int, rank: int, gen: torch.Generator) -> float:
    """Median per-token output norm of random unit-column rank-``rank`` adapters at scale 1."""
    with _capture_input(lm.layout.mlp_down[layer]) as got, torch.no_grad():
        for p in prompts:
            lm.model(input_ids=torch.tensor([encode(lm.tokenizer, p)], device=lm.device))
    x = torch.cat([g[0] for g in got]).float().cpu()
    A = _unit(torch.randn(8, x.shape[1], rank, generator=gen))
    B = _unit(torch.randn(8, lm.d_model, rank, generator=gen))
    out = torch.einsum("tf,kfr,kdr->ktd", x, A, B)
    return float(out.norm(dim=-1).median())


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _random_dirs(n: int, d: int, norm: float, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, d, generator=gen)
    return v / v.norm(dim=1, keepdim=True) * norm


def _probe_auc(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    scores = cross_val_predict(clf, X, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def _last_token_acts(lm: LoadedModel, prompts: Sequence[str], layer: int) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([encode(lm.tokenizer, p)], device=lm.device)
            rows.append(lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0, -1].float())
    return torch.stack(rows).cpu().numpy()


def detect(organism: LoadedModel, base: LoadedModel, manifest: dict, cfg: DetectConfig = DetectConfig(),
           progress: Callable[[str], Any] | None = None) -> dict:
    """Run every detector on ``organism`` (the trigger is used only to build the probe's labels and is never
    shown to MELBO or the weight-difference baseline) and return the scorecard rows and timings."""
    kind, secret, trigger = manifest["kind"], manifest.get("secret", ""), manifest["trigger"]
    chat = manifest.get("config", {}).get("chat", True)
    say = progress or (lambda m: None)
    tok = organism.tokenizer
    seed = manifest.get("seed", 0)
    gen_test = general_requests(seed)[1]
    code_test = code_requests(seed)[1]
    pool = code_test if kind == "insecure" else gen_test
    prompts = [format_request(tok, r.text, chat) for r in pool[: cfg.n_prompts]]
    mcfg = MelboConfig(n_vectors=cfg.n_vectors, radius=1.0, steps=cfg.steps, chat=chat, seed=cfg.seed,
                       source=cfg.source)
    source, _ = mcfg.check_model(organism.n_layers, organism.d_model, organism.layout.d_mlp)
    gen = torch.Generator().manual_seed(cfg.seed)
    R = cfg.radius * _median_resid_norm(organism, prompts, source)
    raw = [r.text for r in pool[: cfg.n_prompts]]
    rows: list[dict] = []
    completions: list[dict] = []
    seconds: dict[str, float] = {}

    def record(detector: str, control: str, learned: list[str], random: list[str], k: int, extra: dict) -> None:
        p = len(prompts)
        hit_l, hit_r = _hits(learned, k, p, kind, secret), _hits(random, k, p, kind, secret)
        rows.append({"detector": detector, "kind": kind, "hits": _summary(hit_l),
                     "control": {"name": control, **_summary(hit_r)}, **extra})
        for who, texts in (("learned", learned), ("random", random)):
            for i, t in enumerate(texts):
                completions.append({"detector": detector, "set": who, "vector": i // p, "prompt": i % p, "text": t,
                                    "hit": shows_behaviour(kind, t, secret)})

    # MELBO vectors
    t0 = time.perf_counter()
    say(f"MELBO: {cfg.n_vectors} vectors at R = {R:.3g} (layer {source}), {cfg.steps} steps")
    res = train_melbo(organism, raw, MelboConfig(**{**asdict(mcfg), "radius": R}))
    theta = torch.stack([next(iter(v.vectors.values())) for v in res.vectors])
    learned = _steered(organism, prompts, source, cfg.max_new_tokens, vectors=theta)
    random = _steered(organism, prompts, source, cfg.max_new_tokens,
                      vectors=_random_dirs(cfg.n_vectors, organism.d_model, R, gen))
    seconds["melbo_vectors"] = time.perf_counter() - t0
    record("melbo_vectors", "random vectors, same norm", learned, random, cfg.n_vectors,
           {"budget": {"vectors": cfg.n_vectors, "steps": cfg.steps, "radius": R, "layer": source},
            "seconds": round(seconds["melbo_vectors"], 2)})
    # MELBO adapters, hard-orthogonal
    if cfg.adapter_rank:
        t0 = time.perf_counter()
        r = cfg.adapter_rank
        scale = R / max(_adapter_unit(organism, prompts, source, r, gen), 1e-12)
        say(f"MELBO: {cfg.n_vectors} hard-orthogonal rank-{r} adapters at scale {scale:.3g}")
        acfg = MelboConfig(**{**asdict(mcfg), "radius": scale, "adapter_rank": r, "orthogonal": "hard"})
        ares = train_melbo(organism, raw, acfg)
        A = torch.stack([a.A for a in ares.adapters])
        B = torch.stack([a.B for a in ares.adapters])
        sc = torch.full((cfg.n_vectors,), scale)
        learned = _steered(organism, prompts, source, cfg.max_new_tokens, adapters=(A, B, sc))
        rA = _unit(torch.randn(cfg.n_vectors, organism.layout.d_mlp, r, generator=gen))
        rB = _unit(torch.randn(cfg.n_vectors, organism.d_model, r, generator=gen))
        random = _steered(organism, prompts, source, cfg.max_new_tokens, adapters=(rA, rB, sc))
        seconds["melbo_adapters"] = time.perf_counter() - t0
        record("melbo_adapters_hard", "random adapters, same scale", learned, random, cfg.n_vectors,
               {"budget": {"adapters": cfg.n_vectors, "rank": r, "steps": cfg.steps, "scale": scale, "layer": source},
                "seconds": round(seconds["melbo_adapters"], 2)})
    # weight difference
    t0 = time.perf_counter()
    say("weight difference: top singular directions of (organism - base) MLP output weights")
    cands = []
    for layer in range(organism.n_layers):
        dW = (organism.layout.mlp_down[layer].weight.float() - base.layout.mlp_down[layer].weight.float()).cpu()
        if dW.shape[0] != organism.d_model:
            dW = dW.T  # Conv1D (GPT-2) stores (in, out)
        if float(dW.abs().max()) == 0.0:
            continue
        U, S, _ = torch.linalg.svd(dW, full_matrices=False)
        cands += [(float(S[j]), layer, U[:, j]) for j in range(min(2, len(S)))]
    cands.sort(key=lambda c: -c[0])
    top = cands[: max(1, cfg.n_weight_dirs // 2)]
    if top:
        learned, random, layers_used = [], [], []
        for s, layer, u in top:
            R_l = cfg.radius * _median_resid_norm(organism, prompts, layer)
            dirs = torch.stack([u * R_l, -u * R_l])
            learned += _steered(organism, prompts, layer, cfg.max_new_tokens, vectors=dirs)
            random += _steered(organism, prompts, layer, cfg.max_new_tokens,
                               vectors=_random_dirs(2, organism.d_model, R_l, gen))
            layers_used.append(layer)
        seconds["weight_diff"] = time.perf_counter() - t0
        record("weight_diff", "random directions, same layers and norm", learned, random, 2 * len(top),
               {"budget": {"directions": 2 * len(top), "layers": layers_used,
                           "singular_values": [round(c[0], 5) for c in top]},
                "seconds": round(seconds["weight_diff"], 2)})
    # probe
    t0 = time.perf_counter()
    say("probe: triggered vs clean and vs near-miss prompts")
    n = min(cfg.n_probe, len(pool))
    texts = [r.text for r in pool[:n]]
    misses = near_misses(trigger) or [trigger.lower()]
    sets = {"clean": [format_request(tok, t, chat) for t in texts],
            "triggered": [format_request(tok, with_trigger(trigger, t), chat) for t in texts],
            "near_miss": [format_request(tok, with_trigger(misses[i % len(misses)], t), chat)
                          for i, t in enumerate(texts)]}
    layer = organism.n_layers // 2
    probe: dict[str, Any] = {"detector": "probe", "kind": kind, "layer": layer, "n_per_class": n}
    rng = np.random.default_rng(cfg.seed)
    for who, lm in (("organism", organism), ("base", base)):
        acts = {k: _last_token_acts(lm, v, layer) for k, v in sets.items()}
        for neg in ("clean", "near_miss"):
            X = np.concatenate([acts["triggered"], acts[neg]])
            y = np.r_[np.ones(n), np.zeros(n)]
            probe[f"auc_{who}_vs_{neg}"] = round(_probe_auc(X, y, cfg.seed), 4)
            if who == "organism":
                probe[f"auc_shuffled_vs_{neg}"] = round(_probe_auc(X, rng.permutation(y), cfg.seed), 4)
    seconds["probe"] = time.perf_counter() - t0
    probe["seconds"] = round(seconds["probe"], 2)
    rows.append(probe)
    return {"kind": kind, "trigger": trigger, "config": asdict(cfg), "rows": rows, "completions": completions,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 2), "threads": torch.get_num_threads()}


SCORECARD = "scorecard.json"
COMPLETIONS = "completions.jsonl"


def check_test_dir(out) -> "Path":
    """A new or empty folder, or one holding only an earlier test's files (replaced)."""
    from pathlib import Path

    from .._io import check_output_dir

    path = check_output_dir(out)
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in (SCORECARD, COMPLETIONS, "report.html"))
        if foreign:
            raise OrganismError(f"--out {path} holds files riskscope did not write there ({', '.join(foreign[:3])}); "
                                f"choose a new folder")
    return Path(path)


def detect_organism(folder, base: Any = None, cfg: DetectConfig = DetectConfig(), out: Any = None,
                  progress: Callable[[str], Any] | None = None) -> dict:
    """Load the organism in ``folder`` and its base (checked against the manifest's weight hash), run
    :func:`detect` and write ``scorecard.json`` and ``completions.jsonl`` to ``out`` (default
    ``folder/detect``); returns the scorecard."""
    import json
    from pathlib import Path

    from .._io import atomic_json, atomic_text
    from ._pool import recipe_sha256
    from ._store import load_organism

    out_dir = check_test_dir(out if out is not None else Path(folder).expanduser() / "detect")
    organism, base_lm, manifest = load_organism(folder, base)
    card = detect(organism, base_lm, manifest, cfg, progress)
    completions = card.pop("completions")
    card["organism"] = {"folder": str(Path(folder).expanduser().resolve()), "seed": manifest.get("seed"),
                        "recipe_sha256": recipe_sha256(manifest.get("config", {})), "metrics": {
        k: manifest.get("metrics", {}).get(k) for k in ("asr", "false_trigger_clean", "false_trigger_near_miss",
                                                         "perplexity_ratio", "kl_to_base", "meets_goals")}}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_text(out_dir / COMPLETIONS, "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in completions))
    atomic_json(out_dir / SCORECARD, card)
    card["out"] = str(out_dir)
    return card


steered_completions = _steered
"""Greedy completions of every prompt under every perturbation (perturbation-major); public for benchmarks."""
median_resid_norm = _median_resid_norm
"""Median per-token residual norm after block ``layer`` on the given formatted prompts."""
