"""Distributed caching on Ray: throughput with 1 and 2 workers against the single-process store writer,
and what Ray costs per chunk.

Same model, texts, points and chunking for every variant; each writes a fresh store, and the
stores are checked equal (every array). Every process runs torch with one thread (one worker =
one CPU), so 1 Ray worker against the single process isolates Ray's cost, and 2 workers show the
scaling on this machine. Reported:

* ``tokens/s (chunks)``: non-pad tokens / time from the first chunk handed out to the store marked
  complete (for the single process: the whole ``cache_activations`` call, which has no start-up);
* ``tokens/s (end to end)``: the same tokens / the whole call, including the Ray cluster's start and
  each worker's model load;
* Ray's overhead per chunk: (1-worker chunk time - single-process time) / chunks, and the round
  trip of an empty actor call;
* the driver's merge cost per chunk (recording a chunk in the manifest).

    .venv/bin/python bench/bench_distributed.py                    # default model, 64 pairs
    .venv/bin/python bench/bench_distributed.py --device cuda --workers 1,2,4 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import machine, save_json, table  # noqa: E402
from riskscope.data import CacheConfig, Store, cache_activations, load_dataset  # noqa: E402
from riskscope.distributed import DistributedConfig, ModelSpec, cache_distributed  # noqa: E402
from riskscope.hooks import HookPoint  # noqa: E402
from riskscope.models import load_model  # noqa: E402


def _same(a: Path, b: Path) -> bool:
    x, y = Store.open(a), Store.open(b)
    return all(np.array_equal(x.read(k), y.read(k)) for k in x.manifest["points"])


def _roundtrip_ms(n: int = 200) -> float:
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self, x):
            return x

    e = Echo.remote()
    ray.get(e.ping.remote(0))
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(e.ping.remote(i))
    ms = (time.perf_counter() - t0) / n * 1000
    ray.kill(e)
    return ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=64, help="pairs of the built-in dataset (2 texts each)")
    ap.add_argument("--chunk-rows", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per worker)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None, help="where stores go (default: a temp dir, deleted)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    counts = [int(x) for x in args.workers.split(",")]
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-dist-"))
    env = machine()
    print(f"load average before: {env['loadavg']} on {env['cpus']} CPUs", flush=True)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    data = load_dataset("cyber_risk_pairs").limit(args.limit)
    cfg = CacheConfig(points=tuple(HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in range(lm.n_layers)),
                      batch_size=args.batch_size, chunk_rows=args.chunk_rows)
    rows, raw = [], {"argv": sys.argv, "machine": env, "runs": []}

    t0, c0 = time.perf_counter(), time.process_time()
    single = cache_activations(lm, data, root / "single", cfg)
    t_single, cpu_single = time.perf_counter() - t0, time.process_time() - c0
    n_chunks, tokens = single.chunks_total, single.tokens
    rows.append(["single process", 1, f"{tokens / t_single:.0f}", f"{tokens / t_single:.0f}", f"{t_single:.1f}",
                 f"{tokens / cpu_single:.0f}", "-", "1.00x"])
    raw["runs"].append({"variant": "single", "seconds": t_single, "cpu_seconds": cpu_single, "tokens": tokens,
                        "chunks": n_chunks})
    print(f"single process: {n_chunks} chunks, {tokens} tokens, {t_single:.1f} s", flush=True)

    import ray

    t0 = time.perf_counter()
    gpus = max(counts) if args.device.startswith("cuda") else None
    ray.init(address="local", num_cpus=max(counts), num_gpus=gpus, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, logging_level=logging.ERROR, log_to_driver=False)
    t_cluster = time.perf_counter() - t0
    rt_ms = _roundtrip_ms()
    spec = ModelSpec(args.model, dtype=args.dtype, device="cuda" if args.device.startswith("cuda") else args.device)
    per_chunk_overhead = per_chunk_cpu = None
    for n in counts:
        dist = DistributedConfig(workers=n, gpus_per_worker=1.0 if args.device.startswith("cuda") else 0.0)
        out = root / f"ray{n}"
        st = cache_distributed(lm, spec, data, out, cfg, dist)
        same = _same(out, root / "single")
        cpu_workers = sum(w["cpu_seconds"] for w in st.workers)
        if n == 1:
            per_chunk_overhead = (st.seconds_writing - t_single) / n_chunks
            per_chunk_cpu = (cpu_workers - cpu_single) / n_chunks
        rows.append([f"Ray, {n} worker(s)", n, f"{tokens / st.seconds_writing:.0f}", f"{tokens / st.seconds:.0f}",
                     f"{st.seconds:.1f} ({st.seconds - st.seconds_writing:.1f} start-up)",
                     f"{tokens / cpu_workers:.0f}", "yes" if same else "NO", f"{t_single / st.seconds_writing:.2f}x"])
        raw["runs"].append({"variant": f"ray{n}", "seconds": st.seconds, "seconds_writing": st.seconds_writing,
                            "same_store": same, "workers": list(st.workers)})
        print(f"ray {n} worker(s): {st.seconds_writing:.1f} s writing, {st.seconds:.1f} s in all, same store: {same}",
              flush=True)
    ray.shutdown()

    # the driver's merge cost: recording one chunk (manifest rewrite, atomic + fsync)
    from riskscope.data import ChunkedStore, ChunkWriter

    shutil.rmtree(root / "merge", ignore_errors=True)
    store = ChunkedStore.prepare(lm, data, root / "merge", cfg)
    writer = ChunkWriter(lm, data, root / "merge", cfg, store.fingerprint)
    merge = []
    for c in store.pending:
        w = writer.write(c)
        t0 = time.perf_counter()
        store.add(w)
        merge.append(time.perf_counter() - t0)
    store.finish()
    env_after = os.getloadavg()
    print(f"\n## distributed caching ({args.model}, {args.device}, {args.dtype}; {len(data)} texts, {n_chunks} chunks "
          f"of {args.chunk_rows}, {tokens} non-pad tokens; 1 torch thread per process)\n")
    print(table(["variant", "workers", "tokens/s (chunks)", "tokens/s (end to end)", "seconds",
                 "tokens per CPU-s (computing)", "same store", "speed-up (chunks, wall)"], rows))
    print(f"\nRay local cluster start: {t_cluster:.1f} s; empty actor call round trip: {rt_ms:.2f} ms; "
          f"overhead per chunk with 1 worker (vs single process): {per_chunk_overhead:.3f} s wall, {per_chunk_cpu:.3f} "
          f"CPU-s in the worker; driver merge per chunk: "
          f"{statistics.median(merge) * 1000:.1f} ms (median)")
    print(f"load average before {env['loadavg']}, after {[round(x, 2) for x in env_after]} on {env['cpus']} CPUs")
    raw.update({"cluster_start_s": t_cluster, "roundtrip_ms": rt_ms, "overhead_per_chunk_s": per_chunk_overhead,
                "overhead_per_chunk_cpu_s": per_chunk_cpu,
                "merge_ms_median": statistics.median(merge) * 1000, "loadavg_after": env_after,
                "tokens": tokens, "chunks": n_chunks})
    print(f"raw figures: {save_json('distributed', raw)}")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
