"""Peak RSS of caching the built-in dataset 1x vs replicated 10x (goal: flat).

    .venv/bin/python bench/bench_rss.py [--factor 10] [--limit N_PAIRS] [--threads N] [--chunk-rows N]

The built-in dataset is written as row-per-text JSONL (unique ids, no pair_id) once as is
and once replicated ``--factor`` times with each copy's texts prefixed by its number (so every
text is unique). Each is cached by ``cache_activations`` (defaults: resid_post + mlp_neurons at
every layer, last token, float32) in a fresh process. The child reports its RSS after loading
the model, the peak RSS while caching (the kernel's high-water mark, reset just before caching
through /proc/self/clear_refs, so the model load's own peak does not mask it), and ru_maxrss
over the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, save_json, table

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import torch
import riskscope
from riskscope import CacheConfig, HookPoint, cache_activations
from riskscope.hooks import capture, run_texts

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB

if sys.argv[3] != "default":
    torch.set_num_threads(int(sys.argv[3]))
data = riskscope.load_dataset(sys.argv[1])
lm = riskscope.load_model("default")
points = tuple(HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in range(lm.n_layers))
after_load = status("VmRSS")
# one short text through the same capture path: pages in the weights the caching forward reads
# (safetensors are memory-mapped), so "after warm-up" is the baseline the caching adds to
with torch.inference_mode(), capture(lm, points, "last", stop=True):
    run_texts(lm, data.texts[:1])
after_warm = status("VmRSS")
hwm_reset = True
try:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
except OSError:
    hwm_reset = False
t0 = time.perf_counter()
stats = cache_activations(lm, data, sys.argv[2], CacheConfig(points=points, chunk_rows=int(sys.argv[4])))
secs = time.perf_counter() - t0
print("RESULT " + json.dumps({"rows": len(data), "tokens": stats.tokens, "chunks": stats.chunks_written,
      "seconds": secs, "rss_after_load_mb": after_load, "rss_after_warmup_mb": after_warm,
      "peak_during_cache_mb": status("VmHWM"),
      "hwm_reset": hwm_reset, "rss_end_mb": status("VmRSS"),
      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_dataset(path: Path, factor: int, limit: int | None) -> int:
    import riskscope

    base = riskscope.load_dataset("cyber_risk_pairs").limit(limit)
    n = 0
    with path.open("w") as f:
        for k in range(factor):
            for r in base.rows:
                rec = {"id": f"c{k}-{r.id}", "text": f"{k}. {r.text}", "label": r.label, "category": r.category,
                       "severity": r.severity}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


def run_child(dataset: Path, out: Path, threads: int | None, chunk_rows: int) -> dict:
    w0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(dataset), str(out), str(threads or "default"),
                           str(chunk_rows)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "process_wall": time.perf_counter() - w0,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None,
                    help="base = the first N pairs of the built-in dataset (default: all of it)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the child (default: torch's)")
    ap.add_argument("--chunk-rows", type=int, default=256,
                    help="texts per store chunk (default: the store's 256); with a small --limit, a smaller value "
                         "gives the 1x run several chunks, so both runs reach the steady state")
    args = ap.parse_args(argv)
    env = machine()
    tmp = Path(tempfile.mkdtemp(prefix="rs-bench-rss-"))
    print(f"# peak RSS, caching 1x vs {args.factor}x the dataset\n\nbase: built-in cyber_risk_pairs"
          f"{f', first {args.limit} pairs' if args.limit else ''}; chunk_rows {args.chunk_rows}; torch threads {args.threads or 'default'}; "
          f"load average at start {env['loadavg']}\n", flush=True)
    res = {}
    for factor in (1, args.factor):
        ds = tmp / f"cyber_x{factor}.jsonl"
        write_dataset(ds, factor, args.limit)
        res[factor] = run_child(ds, tmp / f"store_x{factor}", args.threads, args.chunk_rows)
        print(f"x{factor}: {json.dumps(res[factor])}", flush=True)
    rows = []
    for factor, r in res.items():
        rows.append([f"{factor}x", r["rows"], r["tokens"], r["chunks"], f"{r['seconds']:.1f}",
                     f"{r['rss_after_load_mb']:.0f}", f"{r['rss_after_warmup_mb']:.0f}",
                     f"{r['peak_during_cache_mb']:.0f}",
                     f"{r['peak_during_cache_mb'] - r['rss_after_warmup_mb']:.0f}", f"{r['ru_maxrss_mb']:.0f}"])
    a, b = res[1], res[args.factor]
    ratio = b["peak_during_cache_mb"] / a["peak_during_cache_mb"]
    inc_a = a["peak_during_cache_mb"] - a["rss_after_warmup_mb"]
    inc_b = b["peak_during_cache_mb"] - b["rss_after_warmup_mb"]
    rows.append([f"ratio {args.factor}x / 1x", "", "", "", "", "", "", f"{ratio:.3f}", f"{inc_b / max(inc_a, 1):.2f}",
                 f"{b['ru_maxrss_mb'] / a['ru_maxrss_mb']:.3f}"])
    print("\n" + table(["dataset", "texts", "non-pad tokens", "chunks", "caching s", "RSS after model load (MB)",
                        "RSS after 1-text warm-up (MB)", "peak RSS while caching (MB)", "peak minus warm-up (MB)",
                        "ru_maxrss, whole process (MB)"],
                       rows))
    flat = ratio <= 1.10
    print(f"\ngoal flat peak RSS: {args.factor}x / 1x = {ratio:.3f} -> {'met' if flat else 'NOT met'} "
          f"(flat taken as <= 1.10; peak high-water mark reset before caching: {a['hwm_reset']})")
    path = save_json("rss", {"machine": env, "results": res, "argv": sys.argv})
    print(f"raw results: {path}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
