"""MELBO speed: batched trainer vs the MELBO paper's straightforward loop, same run, same everything.

Both train from the *same* random starts with the same R, p, q, positions, optimiser and
steps on the same chat prompts of the default model. The straightforward loop trains one
vector at a time, one prompt at a time, running the whole model (logits included) every
step; ours trains all vectors at once and runs only the layers source..target. Reported:
vector-steps per second of each, their ratio, and the final objective of both, computed by
the same direct term-by-term evaluation (``objective_direct``) on the vectors both
methods started from identically (the first ``--naive-vectors``).

Ours trains 32 vectors at once (the CLI's default ``--vectors``) and, from the first 8 of
the same starts, 8 at once (``--also-vectors``), so both batch sizes are measured in one run.

    python bench/bench_melbo.py                      # ~15 min on 2 busy cores
    python bench/bench_melbo.py --steps 5 --seeds 1  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from riskscope.melbo import MelboConfig, Positions, SteeredSlice, encode_prompts, objective_direct, train_reference
from riskscope.melbo._train import train
from riskscope.models import load_model

PROMPTS = ["How can I make a bomb?", "Write a short poem about the sea.", "What is the capital of France?",
           "Give me three tips for learning to code."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--vectors", type=int, default=32, help="vectors trained by the batched trainer per seed")
    ap.add_argument("--also-vectors", type=int, default=8,
                    help="also time the batched trainer on the first N of the same starts (0: skip)")
    ap.add_argument("--naive-vectors", type=int, default=2, help="vectors trained by the straightforward loop")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--radius", type=float, default=16.0, help="R (SmolLM2's residual norm at layer 8 is ~130)")
    ap.add_argument("--p", type=float, default=2.0)
    ap.add_argument("--q", type=float, default=1.0)
    ap.add_argument("--positions", default="last:2")
    ap.add_argument("--orthogonal", default="hard")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both (1 is steadiest on a busy box)")
    ap.add_argument("--ablate-prefix", action="store_true",
                    help="also time the batched trainer without shared-prefix KV caching")
    ap.add_argument("--out", default="bench/out/melbo.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    cfg = MelboConfig(n_vectors=args.vectors, radius=args.radius, p=args.p, q=args.q, positions=args.positions,
                      orthogonal=args.orthogonal, steps=args.steps)
    source, target = cfg.layers(lm.n_layers)
    enc = encode_prompts(lm, PROMPTS, chat=True)
    pos = Positions.parse(cfg.positions)
    t0 = time.perf_counter()
    sl = SteeredSlice(lm, enc.ids, source, target, pos)
    setup = time.perf_counter() - t0
    plain = SteeredSlice(lm, enc.ids, source, target, pos, share_prefix=False) if args.ablate_prefix else None
    print(f"target block rows: {sl.rows_note}; shared prefix: {sl.prefix_note}; "
          f"tokens per vector {sl.tokens_per_vector()} (without sharing {sum(len(x) for x in enc.ids)} + padding)",
          flush=True)
    k = args.naive_vectors
    runs = []
    for seed in range(args.seeds):
        init = torch.randn(args.vectors, lm.d_model, generator=torch.Generator().manual_seed(1000 + seed))
        radius_V = torch.full((args.vectors,), args.radius)
        m = args.also_vectors
        train(sl, cfg, radius_V, steps=1, init_VD=init)  # warm-up: records block inputs for this batch size
        if m:
            train(sl, cfg, radius_V[:m], steps=1, init_VD=init[:m])
        load0 = os.getloadavg()[0]
        order = ("naive", "ours", "few") if seed % 2 == 0 else ("few", "ours", "naive")  # balance load drift
        out, cpu = {}, {}
        for which in order:  # CPU time of this process: fair when other jobs share the machine
            c0 = time.process_time()
            if which == "ours":
                out[which] = train(sl, cfg, radius_V, init_VD=init)
            elif which == "few":
                if not m:
                    continue
                out[which] = train(sl, cfg, radius_V[:m], init_VD=init[:m])
            else:
                out[which] = train_reference(lm, enc.ids, source, target, cfg, args.radius, init[:k])
            cpu[which] = time.process_time() - c0
        ours, naive = out["ours"], out["naive"]
        if plain is not None:
            train(plain, cfg, radius_V, steps=1, init_VD=init)
            out["plain"] = train(plain, cfg, radius_V, init_VD=init)
        direct = [objective_direct(lm, enc.ids, source, target, pos, ours.theta_VD[j], cfg.p, cfg.q) for j in range(k)]
        runs.append({
            "seed": seed, "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "ours_vector_steps_per_s": ours.vector_steps_per_second,
            "naive_vector_steps_per_s": naive.vector_steps_per_second,
            "speedup": ours.vector_steps_per_second / naive.vector_steps_per_second,
            "ours_vector_steps_per_cpu_s": ours.n * ours.steps / cpu["ours"],
            "naive_vector_steps_per_cpu_s": naive.n * naive.steps / cpu["naive"],
            "speedup_cpu_time": (ours.n * ours.steps / cpu["ours"]) / (naive.n * naive.steps / cpu["naive"]),
            "ours_objective_first_k": direct, "naive_objective_first_k": naive.objective_V.tolist(),
            "ours_objective_all": ours.objective_V.tolist(),
            "ours_start_objective_mean": float(ours.curves_SV[0].mean()),
            "few_vectors": m, "few_vector_steps_per_cpu_s": m * args.steps / cpu["few"] if m else None,
            "few_speedup_cpu_time": ((m * args.steps / cpu["few"]) / (naive.n * naive.steps / cpu["naive"])
                                     if m else None),
            "few_objective_all": out["few"].objective_V.tolist() if m else None,
            "ours_no_prefix_sharing_vector_steps_per_s": out["plain"].vector_steps_per_second if plain else None,
        })
        r = runs[-1]
        print(f"seed {seed}: ours {r['ours_vector_steps_per_s']:.3f} vs naive {r['naive_vector_steps_per_s']:.3f} "
              f"vector-steps/s = {r['speedup']:.2f}x wall, {r['speedup_cpu_time']:.2f}x CPU time"
              + (f" ({m} at once: {r['few_speedup_cpu_time']:.2f}x CPU time)" if m else "") + "; "
              f"objective (first {k}) ours "
              f"{statistics.mean(direct):.2f} vs naive {statistics.mean(r['naive_objective_first_k']):.2f}", flush=True)
    ours_obj = [x for r in runs for x in r["ours_objective_first_k"]]
    naive_obj = [x for r in runs for x in r["naive_objective_first_k"]]
    summary = {
        "model": lm.model_id, "n_layers": lm.n_layers, "source": source, "target": target,
        "prompts": PROMPTS, "prompt_tokens": [len(x) for x in enc.ids], "radius": args.radius, "p": cfg.p,
        "q": cfg.q, "positions": cfg.positions, "orthogonal": cfg.orthogonal, "steps": args.steps,
        "lr": cfg.lr, "vectors_ours": args.vectors, "vectors_naive": k, "seeds": args.seeds,
        "threads": args.threads, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch": torch.__version__, "setup_seconds": setup, "shared_prefix": sl.prefix_note,
        "tokens_per_vector": sl.tokens_per_vector(), "target_rows": sl.rows_note, "runs": runs,
        "speedup_median": statistics.median(r["speedup"] for r in runs),
        "speedup_cpu_time_median": statistics.median(r["speedup_cpu_time"] for r in runs),
        "ours_vector_steps_per_cpu_s_median": statistics.median(r["ours_vector_steps_per_cpu_s"] for r in runs),
        "naive_vector_steps_per_cpu_s_median": statistics.median(r["naive_vector_steps_per_cpu_s"] for r in runs),
        "few_speedup_cpu_time_median": (statistics.median(r["few_speedup_cpu_time"] for r in runs)
                                        if args.also_vectors else None),
        "ours_vector_steps_per_s_median": statistics.median(r["ours_vector_steps_per_s"] for r in runs),
        "naive_vector_steps_per_s_median": statistics.median(r["naive_vector_steps_per_s"] for r in runs),
        "objective_ours_mean": statistics.mean(ours_obj), "objective_naive_mean": statistics.mean(naive_obj),
    }
    print(f"median speed-up {summary['speedup_median']:.2f}x wall, {summary['speedup_cpu_time_median']:.2f}x CPU "
          f"time; mean final objective ours "
          f"{summary['objective_ours_mean']:.3f} vs naive {summary['objective_naive_mean']:.3f}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
