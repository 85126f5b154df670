"""Hits per CPU-minute on a planted organism: batched MELBO vs random vectors vs the one-vector-at-a-time loop.

All three steer the organism at the same layer and norm (R = --radius x the median residual norm at the
source layer) on the same clean prompts (the trigger is never shown), generate the same greedy
completions and judge them with the organism's rule (``riskscope.organisms.shows_behaviour``). CPU time
(``time.process_time``) counts training (none for random vectors), generation and judging.

* ``melbo``: ``--vectors`` hard-orthogonal vectors trained together (``riskscope.melbo.train_melbo``);
* ``random``: ``--vectors`` Gaussian directions of the same norm;
* ``loop``: the MELBO paper's procedure, one vector at a time, one prompt at a time, full forwards
  (``riskscope.melbo.train_reference``), from the same starts as ``melbo``.

    python bench/bench_organisms.py --organism organisms/hate --vectors 16 --steps 60
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from riskscope.melbo import MelboConfig, encode_prompts, train_melbo, train_reference
from riskscope.models import load_model
from riskscope.organisms import (code_requests, general_requests, median_resid_norm, read_manifest, shows_behaviour,
                                 steered_completions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--organism", required=True)
    ap.add_argument("--vectors", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--radius", type=float, default=0.5)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    man = read_manifest(a.organism)
    lm = load_model(a.organism)
    kind, secret = man["kind"], man.get("secret", "")
    pool = (code_requests if kind == "insecure" else general_requests)(man.get("seed", 0))[1]
    raw = [r.text for r in pool[: a.prompts]]
    enc = encode_prompts(lm, raw, chat=True)
    prompts = list(enc.formatted)
    cfg = MelboConfig(n_vectors=a.vectors, radius=1.0, steps=a.steps, seed=a.seed)
    source, target = cfg.check_model(lm.n_layers, lm.d_model, lm.layout.d_mlp)
    R = a.radius * median_resid_norm(lm, prompts, source)
    cfg = MelboConfig(n_vectors=a.vectors, radius=R, steps=a.steps, seed=a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    starts = torch.randn(a.vectors, lm.d_model, generator=gen)

    def judge(theta: torch.Tensor) -> list[bool]:
        texts = steered_completions(lm, prompts, source, a.max_new_tokens, vectors=theta)
        p = len(prompts)
        return [any(shows_behaviour(kind, t, secret) for t in texts[i * p:(i + 1) * p]) for i in range(len(theta))]

    out = {"organism": a.organism, "kind": kind, "vectors": a.vectors, "steps": a.steps, "radius": R,
           "source": source, "target": target, "threads": a.threads, "methods": {}}
    for name in ("melbo", "random", "loop"):
        t0, w0 = time.process_time(), time.perf_counter()
        if name == "melbo":
            theta = torch.stack([next(iter(v.vectors.values())) for v in train_melbo(lm, raw, cfg).vectors])
        elif name == "random":
            theta = starts / starts.norm(dim=1, keepdim=True) * R
        else:
            theta = train_reference(lm, enc.ids, source, target, cfg, R, starts).theta_VD
        hits = judge(theta.float())
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        out["methods"][name] = {"hits": sum(hits), "n": len(hits), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                                "hits_per_cpu_minute": round(60 * sum(hits) / cpu, 4) if cpu > 0 else None}
        print(name, out["methods"][name], flush=True)
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
