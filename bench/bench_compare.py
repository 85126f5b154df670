"""Layer comparison: riskscope's streamed block-Gram CKA vs the straightforward full-Gram CKA, same stores, same run.

    .venv/bin/python bench/bench_compare.py --store-a OUT/stores/a --store-b OUT/stores/a_random_init

The stores: any two stores of one row per text on the same dataset; ``riskscope compare layers
-m default -m gemma3-270m --out OUT`` leaves ``OUT/stores/a`` (the default model, 30 layers)
and ``OUT/stores/a_random_init`` (its random-init copy, 30 layers), 768 texts each.

Each variant runs in its own child process, which reports its wall and CPU time and its peak
RSS above what it held after imports and opening the stores (``VmHWM`` reset there):

- ``streamed``: :func:`riskscope.compare.cka_matrix` (blocks of ``--block`` rows, no null);
- ``streamed+null``: the same with ``--perms`` within-block shuffles;
- ``full-gram``: every layer read whole, its n x n Gram matrix held for every layer of both
  models (float64), the unbiased centring of Kornblith et al., then all pairs as dot products.

The parent checks that the two matrices agree (max absolute difference).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, save_json, table  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
from riskscope.compare import StoreSource, cka_matrix
mode, sa, sb, out = sys.argv[1:5]
block, perms = int(sys.argv[6]), int(sys.argv[7])
a, b = StoreSource(sa), StoreSource(sb)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
base = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")
    reset = True
except OSError:
    reset = False
t0, c0 = time.perf_counter(), time.process_time()
if mode.startswith("streamed"):
    values = cka_matrix(a, b, debiased=True, block=block, n_perm=perms if mode == "streamed+null" else 0).values_AB
else:
    def centred(src):
        out = []
        for k in src.layers:
            x = src.layer(k).astype(np.float64)
            g = x @ x.T
            n = len(g)
            np.fill_diagonal(g, 0)
            means = g.sum(0) / (n - 2)
            means -= means.sum() / (2 * (n - 1))
            g -= means[:, None]
            g -= means[None, :]
            np.fill_diagonal(g, 0)
            out.append(g.ravel())
        return np.stack(out)
    GA, GB = centred(a), centred(b)
    xy = GA @ GB.T
    values = xy / np.sqrt(np.outer((GA * GA).sum(1), (GB * GB).sum(1)))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
np.save(out, values)
print("RESULT " + json.dumps({"seconds": wall, "cpu_seconds": cpu, "peak_mb": status("VmHWM"), "base_mb": base,
                              "hwm_reset": reset, "shape": list(values.shape)}))
"""


def run(mode: str, args, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.store_a), str(args.store_b), str(out),
                           str(args.threads), str(args.block), str(args.perms)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store-a", type=Path, required=True)
    ap.add_argument("--store-b", type=Path, required=True)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--perms", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("streamed", "full-gram", "streamed+null"):
            results[mode] = run(mode, args, Path(tmp) / f"{mode}.npy")
            results[mode]["values"] = np.load(Path(tmp) / f"{mode}.npy")
    diff = float(np.abs(results["streamed"]["values"] - results["full-gram"]["values"]).max())
    diff_null = float(np.abs(results["streamed+null"]["values"] - results["full-gram"]["values"]).max())
    rows = [[m, r["shape"], f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", f"{r['peak_mb'] - r['base_mb']:.0f}"]
            for m, r in results.items()]
    print(table(["variant", "matrix", "wall s", "CPU s", "peak RSS above start (MB)"], rows))
    print(f"max |streamed - full-gram| = {diff:.2e} (with null: {diff_null:.2e}); block {args.block}, "
          f"perms {args.perms}, threads {args.threads}")
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "max_abs_diff": diff,
               "results": {m: {k: v for k, v in r.items() if k != "values"} for m, r in results.items()}}
    print("saved", save_json("compare", payload))


if __name__ == "__main__":
    main()
