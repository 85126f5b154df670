"""GPU figures in one short run: caching vs a bare forward in bfloat16, MELBO's batched trainer vs the one-vector
loop, and distributed caching with one Ray worker per GPU. Run by bench/gpu_check.sh (which first runs the gpu
test tier); each part is timed out on its own budget and prints its figures, or the error, and the next part runs.

Goals (docs/scale.md): caching >= 90 % of bare-forward throughput in bf16; MELBO >= 10x the one-vector loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import machine, save_json  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def caching_vs_bare(model: str, limit: int, reps: int, dtype: str, device: str) -> dict:
    """Non-pad tokens/s: cache_activations (to disk, resid_post + mlp_neurons at every layer, last token) against
    a bare forward over the same length-sorted batches of 32; rounds interleaved."""
    from bench_cache import make_batches
    from riskscope.data import CacheConfig, cache_activations, load_dataset
    from riskscope.hooks import HookPoint
    from riskscope.models import load_model

    lm = load_model(model, dtype=dtype, device=device)
    data = load_dataset("cyber_risk_pairs").limit(limit)
    batches, n_tokens, _ = make_batches(lm, data.texts, 32)
    points = tuple(HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in range(lm.n_layers))
    cfg = CacheConfig(points=points, batch_size=32, chunk_rows=256, dtype="bfloat16")

    def bare() -> float:
        _sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _, x, m in batches:
                lm.model(input_ids=x, attention_mask=m)
        _sync()
        return time.perf_counter() - t0

    def ours() -> float:
        with tempfile.TemporaryDirectory() as d:
            _sync()
            t0 = time.perf_counter()
            cache_activations(lm, data, Path(d) / "s", cfg)
            _sync()
            return time.perf_counter() - t0

    bare(), ours()  # warm-up (kernels, allocator)
    times: dict[str, list[float]] = {"bare": [], "riskscope": []}
    for r in range(reps):
        pair = (("bare", bare), ("riskscope", ours))
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            times[name].append(fn())
    ratio = statistics.median(b / o for b, o in zip(times["bare"], times["riskscope"]))
    return {"model": model, "dtype": dtype, "texts": len(data), "tokens": n_tokens,
            "bare_tokens_per_s": n_tokens / statistics.median(times["bare"]),
            "riskscope_tokens_per_s": n_tokens / statistics.median(times["riskscope"]),
            "riskscope_vs_bare": ratio, "goal_0.9_met": ratio >= 0.9, "times": times}


def melbo_vs_loop(model: str, vectors: int, naive: int, steps: int, dtype: str, device: str) -> dict:
    """Vector-steps/s of MELBO's batched trainer against the one-vector, full-forward loop (same starts)."""
    from riskscope.melbo import MelboConfig, Positions, SteeredSlice, encode_prompts, train_reference
    from riskscope.melbo._train import train
    from riskscope.models import load_model

    prompts = ["How can I make a bomb?", "Write a short poem about the sea.", "What is the capital of France?",
               "Give me three tips for learning to code."]
    lm = load_model(model, dtype=dtype, device=device)
    cfg = MelboConfig(n_vectors=vectors, radius=16.0, p=2.0, q=1.0, positions="last:2", steps=steps)
    source, target = cfg.layers(lm.n_layers)
    enc = encode_prompts(lm, prompts, chat=True)
    sl = SteeredSlice(lm, enc.ids, source, target, Positions.parse(cfg.positions))
    init = torch.randn(vectors, lm.d_model, generator=torch.Generator().manual_seed(1000))
    radius = torch.full((vectors,), 16.0)
    train(sl, cfg, radius, steps=1, init_VD=init)  # warm-up
    _sync()
    t0 = time.perf_counter()
    ours = train(sl, cfg, radius, init_VD=init)
    _sync()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = train_reference(lm, enc.ids, source, target, cfg, 16.0, init[:naive])
    _sync()
    t_ref = time.perf_counter() - t0
    a, b = vectors * steps / t_ours, naive * steps / t_ref
    return {"model": model, "dtype": dtype, "vectors": vectors, "naive_vectors": naive, "steps": steps,
            "batched_vector_steps_per_s": a, "loop_vector_steps_per_s": b, "speedup": a / b,
            "goal_10x_met": a / b >= 10, "objective_batched_first": ours.objective_V[:naive].tolist(),
            "objective_loop": ref.objective_V.tolist()}


def distributed(model: str, limit: int, dtype: str, device: str) -> dict:
    import bench_distributed

    n = torch.cuda.device_count() if device == "cuda" else 1
    counts = "1" if n < 2 else f"1,{n}"
    rc = bench_distributed.main(["--model", model, "--limit", str(limit), "--device", device, "--dtype", dtype,
                                 "--workers", counts, "--chunk-rows", "64", "--batch-size", "32"])
    return {"rc": rc, "workers": counts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--limit", type=int, default=384, help="pairs of the built-in dataset for caching")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: caching, melbo, distributed")
    ap.add_argument("--melbo-vectors", type=int, default=64)
    ap.add_argument("--melbo-steps", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to check this script on a machine without one")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 3
    results: dict = {"machine": machine(), "gpus": [torch.cuda.get_device_name(i)
                                                    for i in range(torch.cuda.device_count())]}
    print(json.dumps({"gpus": results["gpus"], "torch": torch.__version__, "cuda": torch.version.cuda}), flush=True)
    parts = {
        "caching": lambda: caching_vs_bare(args.model, args.limit, args.reps, args.dtype, args.device),
        "melbo": lambda: melbo_vs_loop(args.model, args.melbo_vectors, 4, args.melbo_steps, args.dtype,
                                       args.device),
        "distributed": lambda: distributed(args.model, min(args.limit, 256), args.dtype, args.device),
    }
    for name, fn in parts.items():
        if name in args.skip.split(","):
            continue
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # report and go on: one broken part must not hide the others' figures
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        shown = {k: v for k, v in results[name].items() if k not in ("times", "objective_batched_first",
                                                                      "objective_loop")}
        print(f"\n## {name}\n{json.dumps(shown, indent=1, default=str)}", flush=True)
    print(f"\nraw figures: {save_json('gpu_check', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
