"""Default-model load time: GGUF first load (conversion) vs cached load, each in a fresh process.

    .venv/bin/python bench/bench_load.py [--cached-runs 5]

``RISKSCOPE_HOME`` points at a fresh temporary directory, so the first call dequantises the
GGUF (and hashes it); the later calls, each a new process, read the safetensors cache. The
child times ``import riskscope`` and ``load_model("default")`` with ``time.perf_counter``;
the parent times the whole process (interpreter start to exit).
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

from _common import machine, median, save_json, table

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import riskscope
t1 = time.perf_counter()
lm = riskscope.load_model("default")
t2 = time.perf_counter()
import resource
print("RESULT " + json.dumps({"import_riskscope": t1 - t0, "load_model": t2 - t1,
      "converted": lm.info["converted"], "load_seconds_info": lm.info["load_seconds"],
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(home: str) -> dict:
    env = {**os.environ, "RISKSCOPE_HOME": home}
    w0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "process_wall": wall, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cached-runs", type=int, default=5)
    args = ap.parse_args(argv)
    env = machine()
    home = tempfile.mkdtemp(prefix="rs-bench-home-")
    print(f"# load time\n\nRISKSCOPE_HOME={home} (fresh), load average at start {env['loadavg']}\n", flush=True)
    first = run_child(home)
    assert first["converted"], "first load did not convert: RISKSCOPE_HOME was not fresh"
    cached = []
    for _ in range(args.cached_runs):
        c = run_child(home)
        assert not c["converted"]
        cached.append(c)
    rows = [["first (GGUF -> safetensors conversion)", f"{first['import_riskscope']:.2f}", f"{first['load_model']:.2f}",
             f"{first['process_wall']:.2f}", f"{first['maxrss_mb']:.0f}", first["loadavg"]]]
    for i, c in enumerate(cached, 1):
        rows.append([f"cached #{i}", f"{c['import_riskscope']:.2f}", f"{c['load_model']:.2f}", f"{c['process_wall']:.2f}",
                     f"{c['maxrss_mb']:.0f}", c["loadavg"]])
    med = {k: median([c[k] for c in cached]) for k in ("import_riskscope", "load_model", "process_wall", "maxrss_mb")}
    rows.append([f"**cached, median of {len(cached)}**", f"{med['import_riskscope']:.2f}", f"**{med['load_model']:.2f}**",
                 f"{med['process_wall']:.2f}", f"{med['maxrss_mb']:.0f}", ""])
    print(table(["load", "import riskscope (s)", "load_model() (s)", "whole process (s)", "peak RSS (MB)",
                 "load avg after"], rows))
    ok = med["load_model"] <= 3.0
    print(f"\ngoal cached load_model() <= 3 s: {med['load_model']:.2f} s -> {'met' if ok else 'NOT met'}"
          f" (import + load_model: {med['import_riskscope'] + med['load_model']:.2f} s; whole process "
          f"{med['process_wall']:.2f} s)")
    path = save_json("load", {"machine": env, "first": first, "cached": cached, "argv": sys.argv})
    print(f"raw results: {path}")
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
