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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, save_json, table

CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import riskscope
t1, c1 = time.perf_counter(), time.process_time()
lm = riskscope.load_model("default")
t2, c2 = time.perf_counter(), time.process_time()
import resource
print("RESULT " + json.dumps({"import_riskscope": t1 - t0, "load_model": t2 - t1,
      "import_riskscope_cpu": c1 - c0, "load_model_cpu": c2 - c1,
      "converted": lm.info["converted"], "load_seconds_info": lm.info["load_seconds"],
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# The floor under any cached load: what importing the transformers model class alone costs in a
# fresh process that has already imported riskscope (and so torch), with the garbage collector
# paused as load_model() pauses it. riskscope cannot go below it.
FLOOR = r"""
import gc, json, time
import riskscope
gc.disable()
t0, c0 = time.perf_counter(), time.process_time()
import transformers.models.llama.modeling_llama
t1, c1 = time.perf_counter(), time.process_time()
print("RESULT " + json.dumps({"import_transformers_llama": t1 - t0, "import_transformers_llama_cpu": c1 - c0}))
"""


def run_child(home: str, code: str = CHILD) -> dict:
    env = {**os.environ, "RISKSCOPE_HOME": home}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "process_wall": wall, "process_cpu": cpu, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cached-runs", type=int, default=5)
    ap.add_argument("--floor-runs", type=int, default=3,
                    help="fresh processes timing `import transformers.models.llama.modeling_llama` alone")
    args = ap.parse_args(argv)
    env = machine()
    home = tempfile.mkdtemp(prefix="rs-bench-home-")
    print(f"# load time\n\nRISKSCOPE_HOME={home} (fresh), load average at start {env['loadavg']}\n", flush=True)
    first = run_child(home)
    assert first["converted"], "first load did not convert: RISKSCOPE_HOME was not fresh"
    cached, floor = [], []
    for i in range(max(args.cached_runs, args.floor_runs)):  # interleaved: both see the same machine load
        if i < args.cached_runs:
            c = run_child(home)
            assert not c["converted"]
            cached.append(c)
        if i < args.floor_runs:
            floor.append(run_child(home, FLOOR))

    def row(label, c, bold=False):
        b = "**" if bold else ""
        return [label, f"{c['import_riskscope']:.2f} ({c['import_riskscope_cpu']:.2f})",
                f"{b}{c['load_model']:.2f} ({c['load_model_cpu']:.2f}){b}",
                f"{c['process_wall']:.2f} ({c['process_cpu']:.2f})", f"{c['maxrss_mb']:.0f}", c.get("loadavg", "")]

    keys = ("import_riskscope", "import_riskscope_cpu", "load_model", "load_model_cpu", "process_wall",
            "process_cpu", "maxrss_mb")
    med = {k: median([c[k] for c in cached]) for k in keys}
    rows = [row("first (GGUF -> safetensors conversion)", first)]
    rows += [row(f"cached #{i}", c) for i, c in enumerate(cached, 1)]
    rows.append(row(f"**cached, median of {len(cached)}**", med, bold=True))
    print(table(["load", "import riskscope: wall s (CPU s)", "load_model(): wall s (CPU s)",
                 "whole process: wall s (CPU s)", "peak RSS (MB)", "load avg after"], rows))
    print(f"\ngoal cached load_model() <= 3 s: wall {med['load_model']:.2f} s "
          f"({'met' if med['load_model'] <= 3.0 else 'NOT met'}), CPU {med['load_model_cpu']:.2f} s "
          f"({'met' if med['load_model_cpu'] <= 3.0 else 'NOT met'}); import riskscope + load_model(): wall "
          f"{med['import_riskscope'] + med['load_model']:.2f} s, CPU {med['import_riskscope_cpu'] + med['load_model_cpu']:.2f} s; "
          f"whole process: wall {med['process_wall']:.2f} s, CPU {med['process_cpu']:.2f} s")
    if floor:
        fw = median([f["import_transformers_llama"] for f in floor])
        fc = median([f["import_transformers_llama_cpu"] for f in floor])
        print(f"floor: `import transformers.models.llama.modeling_llama` alone (after import riskscope, GC paused), median of "
              f"{len(floor)} fresh processes: wall {fw:.2f} s, CPU {fc:.2f} s; so riskscope's own part of the "
              f"cached load_model() is about {med['load_model'] - fw:.2f} s wall, {med['load_model_cpu'] - fc:.2f} s CPU")
    print("(CPU time = user + system time of the process: far less sensitive than the wall time to other work "
          "sharing the CPUs; the loading work is mostly single-threaded Python.)")
    path = save_json("load", {"machine": env, "first": first, "cached": cached, "floor": floor, "argv": sys.argv})
    print(f"raw results: {path}")
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
