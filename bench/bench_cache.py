"""Caching throughput: riskscope vs a bare transformers forward, TransformerLens and nnsight.

Same model (riskscope.load_model("default"): SmolLM2-135M, float32, CPU), same texts (the
built-in dataset), same length-sorted batches of 32 as the store, same hook points
(resid_post + mlp_neurons at every layer, last non-pad token), same process. Variants run
interleaved (A B C ... A B C ..., the starting variant rotating each round) and the report
gives median non-pad tokens/s and, per round, the ratio to the bare forward of that round.

    bench/.venv-bench/bin/python bench/bench_cache.py          # all variants
    .venv/bin/python bench/bench_cache.py                      # TL / nnsight skipped if absent

TransformerLens and nnsight are imported only if installed (bench/.venv-bench); each wraps
its own deep copy of the model (TransformerBridge switches the model it wraps to eager
attention, which would otherwise slow the bare and riskscope runs too).
"""

from __future__ import annotations

import argparse
import copy
import gc
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

import riskscope
from riskscope.hooks import HookPoint, capture, pad_batch, run_batch, tokenize
from riskscope.data import Dataset
from riskscope.data import CacheConfig, Store, cache_activations

from _common import machine, median, save_json, table

CHECK_LAYERS = (0, 14, 29)  # points compared across frameworks (all texts, both hooks)


def make_batches(lm, texts, batch_size):
    """Length-sorted (longest first) right-padded batches, exactly as cache_activations makes them."""
    ids = tokenize(lm, texts)
    lengths = np.array([len(r) for r in ids])
    order = np.argsort(-lengths, kind="stable")
    batches = []
    for b in range(0, len(ids), batch_size):
        rows = order[b:b + batch_size]
        x, m = pad_batch([ids[i] for i in rows], lm.tokenizer.pad_token_id, "right", lm.device)
        batches.append((rows, x, m))
    return batches, int(lengths.sum()), int(sum(m.numel() for _, _, m in batches))


def _last(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B, T, W) -> (B, W) at the last non-pad token of right-padded rows."""
    return x[torch.arange(x.shape[0]), m.sum(1) - 1]


# --- the variants: each runs every batch once and keeps the last-token activations ---------------


def run_bare(lm, batches):
    with torch.inference_mode():
        for _, x, m in batches:
            lm.model(input_ids=x, attention_mask=m)  # logits included, no hooks
    return None


def run_riskscope_capture(lm, batches, points):
    outs = []
    with torch.inference_mode():
        for rows, x, m in batches:
            with capture(lm, points, "last", stop=True) as got:
                run_batch(lm, x, m)
            outs.append((rows, {str(p): t for p, t in got.items()}))
    return outs


def run_riskscope_store(lm, data, points, tmp_root, keep=False):
    d = tempfile.mkdtemp(dir=tmp_root)
    stats = cache_activations(lm, data, Path(d) / "store", CacheConfig(points=tuple(points)))
    return d, stats


def tl_names(n_layers):
    return {**{f"resid_post.{i}": f"blocks.{i}.hook_resid_post" for i in range(n_layers)},
            **{f"mlp_neurons.{i}": f"blocks.{i}.mlp.hook_post" for i in range(n_layers)}}


def run_tl(bridge, batches, names):
    outs = []
    wanted = list(names.values())
    with torch.inference_mode():
        for rows, x, m in batches:
            _, cache = bridge.run_with_cache(x, attention_mask=m, names_filter=wanted)
            outs.append((rows, {k: _last(cache[n], m) for k, n in names.items()}))
    return outs


def run_nnsight(nm, batches, n_layers):
    outs = []
    with torch.inference_mode():
        for rows, x, m in batches:
            saved = {}
            with nm.trace({"input_ids": x, "attention_mask": m}):
                for i in range(n_layers):  # nnsight wants modules in execution order
                    layer = nm.model.layers[i]
                    saved[f"mlp_neurons.{i}"] = layer.mlp.down_proj.input.save()
                    saved[f"resid_post.{i}"] = layer.output.save()
            got = {}
            for k, v in saved.items():
                v = v[0] if isinstance(v, tuple) else v
                got[k] = _last(v, m)
            outs.append((rows, got))
    return outs


def assemble(outs, n_rows, keys):
    """[(rows, {key: (B, W)})] -> {key: (N, W) float32 numpy in dataset order}."""
    res = {}
    for k in keys:
        first = outs[0][1][k]
        arr = np.empty((n_rows, first.shape[-1]), dtype=np.float32)
        for rows, got in outs:
            arr[rows] = got[k].float().numpy()
        res[k] = arr
    return res


def report(wall: dict, cpu: dict, n_tokens: int) -> None:
    """Print the throughput and goal tables from per-round seconds (``{variant: [s, ...]}``, bare first).

    Goals are judged on the median of the per-round ratios (variant and baseline timed in the same
    round, so a slow drift in machine load cancels), on wall time and on CPU time; a goal counts as
    met only when both agree.
    """
    order = list(wall)
    bare = order[0]
    reps = len(wall[bare])

    def paired(times, a, b):  # per-round time(a) / time(b): > 1 means b is faster
        return [x / y for x, y in zip(times[a], times[b])]

    rows = []
    for name in order:
        pw = paired(wall, bare, name)
        rows.append([name, f"{median(wall[name]):.2f}", f"{n_tokens / median(wall[name]):.0f}",
                     f"{median(wall[bare]) / median(wall[name]):.2f}x",
                     f"{median(pw):.2f}x ({min(pw):.2f}-{max(pw):.2f})",
                     f"{n_tokens / median(cpu[name]):.0f}", f"{median(paired(cpu, bare, name)):.2f}x"])
    print(f"\n## throughput ({reps} interleaved rounds, medians; {n_tokens} non-pad tokens per pass)\n")
    print(table(["variant", "s / pass", "non-pad tok/s", "vs bare (ratio of medians)",
                 "vs bare (median per-round ratio, range)", "tok per CPU-s", "vs bare (CPU time, median per-round ratio)"],
                rows))

    goals = []
    for rn in [n for n in order if n.startswith("riskscope")]:
        for other, need in [(bare, 1.2)] + [(o, 1.0) for o in order[3:]]:
            w, c = median(paired(wall, other, rn)), median(paired(cpu, other, rn))
            ok = w >= need and c >= need if need > 1 else w > need and c > need
            label = f"{rn} >= 1.2x bare" if other == bare else f"{rn} faster than {other}"
            goals.append([label, f"{w:.3f}x", f"{c:.3f}x", "met" if ok else "NOT met"])
    print("\n## goals (median per-round ratios)\n")
    print(table(["goal", "wall", "CPU time", "status"], goals))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="timed rounds per variant (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    ap.add_argument("--no-nnsight", action="store_true", help="skip nnsight")
    ap.add_argument("--check-batches", type=int, default=2,
                    help="batches in the warm-up round that also compares the captured values")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: leave torch's default, one per core)")
    ap.add_argument("--limit", type=int, default=None, help="first N pairs only (smoke test)")
    ap.add_argument("--report", metavar="JSON", default=None,
                    help="only re-print the tables from a raw-results file this script saved under bench/out/")
    args = ap.parse_args(argv)
    if args.report:
        import json

        raw = json.loads(Path(args.report).read_text())
        print(f"# caching throughput (re-printed from {args.report}; run: {' '.join(raw['argv'])})")
        report(raw["wall"], raw["cpu"], raw["n_tokens"])
        return 0
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    env = machine()
    t0 = time.perf_counter()
    lm = riskscope.load_model("default")
    data = riskscope.load_dataset("cyber_risk_pairs").limit(args.limit)
    points = [HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in range(lm.n_layers)]
    batches, n_tokens, n_padded = make_batches(lm, data.texts, args.batch_size)
    print(f"# caching throughput\n\nmodel {lm.model_id} ({lm.info['dtype']}, {lm.device}), "
          f"{len(data)} texts (built-in cyber_risk_pairs, digest {data.digest()[:12]}"
          f"{f', first {args.limit} pairs' if args.limit else ''}), {len(batches)} batches of <= {args.batch_size}, {n_tokens} non-pad tokens "
          f"({n_padded} with padding), {len(points)} hook points, torch threads {torch.get_num_threads()}, "
          f"load average at start {env['loadavg']}\n", flush=True)

    tmp_root = tempfile.mkdtemp(prefix="rs-bench-cache-")
    names = tl_names(lm.n_layers)
    bridge = nn_model = None
    skipped = []
    if not args.no_tl:
        try:
            from transformer_lens.model_bridge import TransformerBridge

            tl_model = copy.deepcopy(lm.model)
            bridge = TransformerBridge.boot_transformers(lm.source, hf_model=tl_model, tokenizer=lm.tokenizer,
                                                         device="cpu", dtype=torch.float32)
            bridge.eval()
        except ImportError as e:
            skipped.append(f"TransformerLens: {e}")
    if not args.no_nnsight:
        try:
            from nnsight import LanguageModel

            nn_hf = copy.deepcopy(lm.model)
            nn_model = LanguageModel(nn_hf, tokenizer=lm.tokenizer)
        except ImportError as e:
            skipped.append(f"nnsight: {e}")

    def variants_for(bs, ds):
        v = {
            "bare HF forward (logits, no hooks)": lambda: run_bare(lm, bs),
            "riskscope capture(stop=True), in memory": lambda: run_riskscope_capture(lm, bs, points),
            "riskscope cache_activations (to disk)": lambda: run_riskscope_store(lm, ds, points, tmp_root),
        }
        if bridge is not None:
            v["TransformerLens TransformerBridge.run_with_cache"] = lambda: run_tl(bridge, bs, names)
        if nn_model is not None:
            v["nnsight trace + save"] = lambda: run_nnsight(nn_model, bs, lm.n_layers)
        return v

    variants = variants_for(batches, data)
    print(f"setup {time.perf_counter() - t0:.1f} s; attention: riskscope/bare "
          f"{lm.model.config._attn_implementation}"
          + (f", TL {tl_model.config._attn_implementation}" if bridge is not None else "")
          + (f", nnsight {nn_hf.config._attn_implementation}" if nn_model is not None else ""),
          flush=True)
    for s in skipped:
        print(f"skipped {s}")

    # --- warm-up on the first batches, which also proves every variant captures the same values --
    # The subset keeps the longest texts in the same stable order, so the store makes the very
    # same batches from it and every variant sees identical inputs.
    warm = batches[:args.check_batches]
    warm_rows = np.sort(np.concatenate([r for r, _, _ in warm]))
    warm_data = Dataset(data.name, tuple(data.rows[i] for i in warm_rows))
    pos = {int(r): j for j, r in enumerate(warm_rows)}
    warm = [(np.array([pos[int(i)] for i in r]), x, m) for r, x, m in warm]
    keys = [f"{h}.{i}" for h in ("resid_post", "mlp_neurons") for i in CHECK_LAYERS]
    ref = None
    checks = []
    for name, fn in variants_for(warm, warm_data).items():
        out = fn()
        if name.startswith("bare"):
            continue
        if name.startswith("riskscope cache_activations"):
            d, stats = out
            store = Store.open(Path(d) / "store")
            got = {k: store.read(k) for k in keys}
            shutil.rmtree(d)
        else:
            got = assemble(out, len(warm_rows), keys)
        if ref is None:
            ref = got
            continue
        worst_abs = max(float(np.abs(got[k] - ref[k]).max()) for k in keys)
        worst_rel = max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in keys)
        checks.append([name, ", ".join(keys), f"{worst_abs:.2e}", f"{worst_rel:.2e}"])
    print(f"\n## same values as riskscope capture (last token of {len(warm_rows)} texts)\n")
    print(table(["variant", "points compared", "max abs diff", "max abs diff / max abs value"], checks), flush=True)

    # --- timed rounds, interleaved -------------------------------------------------------------
    order = list(variants)
    wall = {n: [] for n in order}
    cpu = {n: [] for n in order}
    for r in range(args.reps):
        k = r % len(order)
        for name in order[k:] + order[:k]:
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            out = variants[name]()
            w1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(w1 - w0)
            cpu[name].append(c1 - c0)
            if name.startswith("riskscope cache_activations"):
                assert out[1].tokens == n_tokens, (out[1].tokens, n_tokens)
                shutil.rmtree(out[0])
            del out
        print(f"round {r + 1}/{args.reps}: " + ", ".join(f"{wall[n][-1]:.2f}" for n in order)
              + f" s (load avg {[round(x, 2) for x in __import__('os').getloadavg()]})", flush=True)
    shutil.rmtree(tmp_root, ignore_errors=True)

    report(wall, cpu, n_tokens)
    env_end = [round(x, 2) for x in __import__("os").getloadavg()]
    print(f"\nload average at end {env_end}")
    path = save_json("cache", {"machine": env, "loadavg_end": env_end, "n_tokens": n_tokens, "n_padded": n_padded,
                               "batches": len(batches), "wall": wall, "cpu": cpu, "checks": checks,
                               "skipped": skipped, "argv": sys.argv})
    print(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
