"""Benchmark: clamping effects of N neurons over T texts, batched vs the naive per-text loop.

    python bench/bench_interventions.py                      # 20 neurons x 200 texts, layer 20
    python bench/bench_interventions.py --naive-texts 200    # run the naive loop on every text too

Three ways to get the same numbers (mean change of every token's next-token
log-probability per clamped neuron, plus KL):

* naive: for every neuron, for every text, one unpadded forward with the clamp
  (full logits), against one clean forward per text;
* batched: one forward per batch of texts per neuron (left-padded,
  ``logits_to_keep=1``), ``riskscope.effects.run_effects(..., replay=False)``;
* batched + replay: the default - the clean forward of each batch records what
  every block received, so a clamp at layer L re-runs only blocks L.. .

The naive loop is timed on ``--naive-texts`` texts and extrapolated linearly
(its cost is exactly per text). Results agree to float tolerance; the script
checks it. Prints a JSON summary (``--out`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def naive(lm, texts, layer, neurons, value):
    """The loop one writes first: a forward per text per neuron, full logits, no padding."""
    from riskscope.hooks import Clamp, HookPoint, intervene, run_texts

    V = None
    sums = {}
    with torch.inference_mode():
        clean = []
        for t in texts:
            out, _ = run_texts(lm, [t])
            clean.append(torch.log_softmax(out.logits[0, -1].float(), -1))
        V = clean[0].shape[0]
        for n in neurons:
            s = torch.zeros(V, dtype=torch.float64)
            for t, c in zip(texts, clean):
                with intervene(lm, [Clamp(HookPoint("mlp_neurons", layer), indices=(n,), value=value)]):
                    out, _ = run_texts(lm, [t])
                s += (torch.log_softmax(out.logits[0, -1].float(), -1) - c).double()
            sums[n] = (s / len(texts)).numpy()
    return sums


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--naive-texts", type=int, default=20, help="texts for the naive loop (then extrapolated)")
    ap.add_argument("--full-texts", type=int, default=64,
                    help="texts for batched-without-replay (then extrapolated; 0 = skip)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--value", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from riskscope.data import load_dataset
    from riskscope.effects import run_effects
    from riskscope.hooks import Clamp, HookPoint
    from riskscope.models import load_model

    lm = load_model(args.model)
    texts = load_dataset().texts[:args.texts]
    neurons = list(range(0, 1000, 1000 // args.neurons))[:args.neurons]
    iv = {n: [Clamp(HookPoint("mlp_neurons", args.layer), indices=(n,), value=args.value)] for n in neurons}
    n_tokens = sum(len(x) for x in lm.tokenizer(texts)["input_ids"])

    fast, t_fast, c_fast = _timed(lambda: run_effects(lm, texts, iv, batch_size=args.batch_size, min_prob=0.0))
    ftexts = texts[:args.full_texts] if args.full_texts else []
    full, t_full, c_full = _timed(lambda: run_effects(lm, ftexts, iv, batch_size=args.batch_size, replay=False,
                                                      min_prob=0.0)) if ftexts else (None, float("nan"), float("nan"))
    fscale = len(texts) / max(len(ftexts), 1)
    sub = texts[:args.naive_texts]
    slow, t_naive, c_naive = _timed(lambda: naive(lm, sub, args.layer, neurons, args.value))
    check = run_effects(lm, sub, iv, batch_size=args.batch_size, min_prob=0.0, top_tokens=50)
    diff = 0.0
    for n in neurons:
        ids = [t.token_id for t in check[n].boosts]
        diff = max(diff, float(np.abs(np.array([t.mean_dlogp for t in check[n].boosts]) - slow[n][ids]).max()))
    scale = len(texts) / len(sub)
    res = {
        "model": lm.model_id, "layer": args.layer, "n_layers": lm.n_layers, "neurons": len(neurons),
        "texts": len(texts), "tokens": n_tokens, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "load_avg": os.getloadavg(),
        "naive": {"texts_timed": len(sub), "wall_s": round(t_naive, 1), "cpu_s": round(c_naive, 1),
                  "wall_s_extrapolated": round(t_naive * scale, 1), "cpu_s_extrapolated": round(c_naive * scale, 1),
                  "forwards_extrapolated": len(texts) * (len(neurons) + 1)},
        "batched": {"texts_timed": len(ftexts), "wall_s": round(t_full, 1), "cpu_s": round(c_full, 1),
                    "wall_s_extrapolated": round(t_full * fscale, 1), "cpu_s_extrapolated": round(c_full * fscale, 1),
                    "forwards": -(-len(texts) // args.batch_size) * (len(neurons) + 1)},
        "batched_replay": {"wall_s": round(t_fast, 1), "cpu_s": round(c_fast, 1)},
        "speedup_cpu": {"batched": round(c_naive * scale / (c_full * fscale), 1),
                        "batched_replay": round(c_naive * scale / c_fast, 1)},
        "speedup_wall": {"batched": round(t_naive * scale / (t_full * fscale), 1),
                         "batched_replay": round(t_naive * scale / t_fast, 1)},
        "max_abs_diff_vs_naive": diff,
        "max_abs_diff_kl_replay_vs_full": float(max(np.abs(fast[n].kl_N[:len(ftexts)] - full[n].kl_N).max()
                                                    for n in neurons)) if full else None,
    }
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
