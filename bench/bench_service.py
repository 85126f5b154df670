"""Load benchmark of `riskscope serve`: micro-batching on vs off, latency, RSS, misbehaving clients.

    .venv/bin/python bench/bench_service.py --probe RUN [--requests 10000] [--concurrency 32]

For each mode (micro-batching on, then off) the script starts the real server
(``python -m riskscope.cli serve --port 0``, a subprocess on 127.0.0.1) and drives it with an
async httpx client: ``--requests`` requests of one text each, ``--concurrency`` in flight, text
lengths mixed (4 to 64 words: about 6 to 85 tokens). Reported per mode: errors, p50/p90/p99 latency, texts/s,
the server's CPU seconds per text, the mean micro-batch size (from /metrics) and the server's RSS
at request 1,000 and at the end. With batching on it also measures:

* the latency of a single 64-token text (sequential requests, nothing else in flight);
* misbehaving clients while normal traffic keeps flowing: a slow client (body never finished),
  connections dropped mid-body and while waiting for the answer, and a burst past one key's rate
  limit; then checks that the server still answers and that /metrics counts each of them.

All traffic goes to 127.0.0.1; every phase is bounded. Raw figures go to ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, save_json, table  # noqa: E402

LOAD_KEY = "bench-load-key-0123456789abcdef"
BURST_KEY = "bench-burst-key-0123456789abcdef"
BURST = 5  # the burst key may send 5 requests at once, then 1 per 100 s


def word_pool() -> list[str]:
    from riskscope.data import load_dataset

    return " ".join(load_dataset("cyber_risk_pairs").texts).split()


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 4, 8, 16, 32 or 64 words (about 6 to 85 tokens) cut from the built-in texts."""
    words = word_pool()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.choice([4, 8, 16, 32, 64]))
        s = int(rng.integers(0, len(words) - k))
        out.append(" ".join(words[s:s + k]))
    return out


# --- the server -----------------------------------------------------------------------------------


class Server:
    """`riskscope serve` in a subprocess on 127.0.0.1, any free port."""

    def __init__(self, probe: str, keys: Path, batching: bool, threads: int | None, max_batch: int,
                 max_wait_ms: float, forward_batch: int, omp_passive: bool, dtype: str = "float32") -> None:
        cmd = [sys.executable, "-m", "riskscope.cli", "serve", "--probe", probe, "--port", "0", "--api-key-file",
               str(keys), "--log-level", "warning", "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--forward-batch", str(forward_batch),
               "--body-timeout", "2", "--timeout", "120", "--batching" if batching else "--no-batching",
               "--dtype", dtype]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if omp_passive else {})}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            self.stop()
            raise SystemExit(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.url = m.group(1)
        import httpx

        t0 = time.monotonic()
        while httpx.get(self.url + "/readyz").status_code != 200:
            if self.proc.poll() is not None or time.monotonic() - t0 > 300:
                raise SystemExit("the server did not become ready: " + self.proc.stderr.read()[-2000:])
            time.sleep(0.2)
        import psutil

        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def metrics(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


# --- load ---------------------------------------------------------------------------------------


async def drive(server: Server, texts: list[str], n: int, concurrency: int, rss_at: int) -> dict:
    """``n`` requests of one text each, ``concurrency`` in flight; latencies, errors, RSS samples."""
    import httpx

    lat = np.full(n, np.nan)
    status: dict[str, int] = {}
    rss: dict[int, float] = {}
    state = {"next": 0, "done": 0}
    headers = {"Authorization": f"Bearer {LOAD_KEY}"}

    async def worker(client):
        while state["next"] < n:
            i = state["next"]
            state["next"] += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/score", json={"texts": [texts[i % len(texts)]]}, headers=headers)
                key = str(r.status_code)
            except httpx.HTTPError as e:
                key = type(e).__name__
            lat[i] = time.perf_counter() - t0
            status[key] = status.get(key, 0) + 1
            state["done"] += 1
            if state["done"] % 500 == 0 or state["done"] == rss_at:
                rss[state["done"]] = server.rss_mb()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        seconds = time.perf_counter() - t0
    rss[n] = server.rss_mb()
    return {"seconds": seconds, "lat": lat, "status": status, "rss": rss}


def run_mode(args, keys: Path, batching: bool, texts: list[str]) -> dict:
    server = Server(args.probe, keys, batching, args.threads, args.max_batch, args.max_wait_ms, args.forward_batch,
                    not args.omp_spin, dtype=args.dtype)
    try:
        asyncio.run(drive(server, texts, min(200, args.requests), args.concurrency, 0))  # warm-up
        m0, cpu0 = metrics(server.url), server.cpu_s()
        load0 = os.getloadavg()[0]
        res = asyncio.run(drive(server, texts, args.requests, args.concurrency, args.rss_from))
        cpu = server.cpu_s() - cpu0
        m1 = metrics(server.url)
        batches = m1["riskscope_batch_texts_count"] - m0["riskscope_batch_texts_count"]
        scored = m1["riskscope_batch_texts_sum"] - m0["riskscope_batch_texts_sum"]
        out = {"batching": batching, "requests": args.requests, "concurrency": args.concurrency,
               "errors": args.requests - res["status"].get("200", 0), "status": res["status"],
               "seconds": res["seconds"], "texts_per_s": args.requests / res["seconds"],
               "server_cpu_s_per_text": cpu / args.requests,
               "p50_ms": 1e3 * float(np.nanpercentile(res["lat"], 50)),
               "p90_ms": 1e3 * float(np.nanpercentile(res["lat"], 90)),
               "p99_ms": 1e3 * float(np.nanpercentile(res["lat"], 99)),
               "mean_batch_texts": scored / max(batches, 1), "rss_mb": res["rss"],
               "loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2)}
        r_from, r_end = res["rss"].get(args.rss_from), res["rss"][args.requests]
        if r_from:
            out["rss_growth"] = r_end / r_from - 1
        if batching:
            out["single_64"] = single_latency(server, args.single_runs)
            out["misbehaving"] = asyncio.run(misbehave(server))
        return out
    finally:
        server.stop()


def single_latency(server: Server, runs: int) -> dict:
    """Latency of one 64-token text, sequential requests (nothing else in flight)."""
    import httpx

    words = word_pool()
    k, text, tokens = 48, "", 0
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {LOAD_KEY}"}) as c:
        for _ in range(60):  # find a cut of the built-in texts that is exactly 64 tokens
            text = " ".join(words[100:100 + k])
            tokens = c.post("/v1/score", json={"texts": [text]}).json()["results"][0]["tokens"]
            if tokens == 64:
                break
            k += 1 if tokens < 64 else -1
        lat = []
        for _ in range(runs):
            t0 = time.perf_counter()
            assert c.post("/v1/score", json={"texts": [text]}).status_code == 200
            lat.append(time.perf_counter() - t0)
    return {"tokens": tokens, "runs": runs, "p50_ms": 1e3 * float(np.median(lat)),
            "p90_ms": 1e3 * float(np.percentile(lat, 90))}


# --- float32 against bfloat16: latency and how far the scores move ---------------------------------


def dtype_compare(args, keys: Path) -> dict:
    """Single 64-token latency of a float32 and a bfloat16 server, alternated twice, and the scores both
    give the built-in dataset (AUC of each, largest and median change of a risk score)."""
    import httpx
    from sklearn.metrics import roc_auc_score

    from riskscope.data import load_dataset

    data = load_dataset("cyber_risk_pairs")
    texts, labels = list(data.texts), np.asarray(data.labels)
    out: dict = {"rounds": []}
    scores: dict[str, np.ndarray] = {}
    risky: dict[str, np.ndarray] = {}
    for rnd in range(2):
        for dtype in ("float32", "bfloat16"):
            server = Server(args.probe, keys, True, args.threads, args.max_batch, args.max_wait_ms,
                            args.forward_batch, not args.omp_spin, dtype=dtype)
            try:
                single_latency(server, 20)  # warm-up
                lat = single_latency(server, args.single_runs)
                out["rounds"].append({"dtype": dtype, "round": rnd, **lat, "loadavg": round(os.getloadavg()[0], 2)})
                if rnd == 0:
                    got, flags = [], []
                    with httpx.Client(base_url=server.url, timeout=300,
                                      headers={"Authorization": f"Bearer {LOAD_KEY}"}) as c:
                        for i in range(0, len(texts), 64):
                            r = c.post("/v1/score", json={"texts": texts[i:i + 64]}).json()["results"]
                            got += [x["risk_score"] for x in r]
                            flags += [x["risky"] for x in r]
                    scores[dtype], risky[dtype] = np.asarray(got), np.asarray(flags)
            finally:
                server.stop()
    d = np.abs(scores["bfloat16"] - scores["float32"])
    out["drift"] = {"texts": len(texts), "max_abs": float(d.max()), "median_abs": float(np.median(d)),
                    "auc_float32": float(roc_auc_score(labels, scores["float32"])),
                    "auc_bfloat16": float(roc_auc_score(labels, scores["bfloat16"])),
                    "decisions_changed": int((risky["float32"] != risky["bfloat16"]).sum())}
    p50 = {dt: float(np.median([r["p50_ms"] for r in out["rounds"] if r["dtype"] == dt]))
           for dt in ("float32", "bfloat16")}
    out["p50_ms"], out["speedup"] = p50, p50["float32"] / p50["bfloat16"]
    return out


# --- the ceiling: what batching can give on this CPU, without HTTP -------------------------------


def ceiling(probe: str, runs: int = 10) -> list[dict]:
    """In process, no server: ms per 64-token text scored alone vs 16 at once, with 1 and 2 torch threads."""
    import torch

    from riskscope.probes import Probe

    p = Probe.load(probe)
    lm = p.load_model()
    words = word_pool()
    k = 40
    while True:  # a 64-token text
        text = " ".join(words[100:100 + k])
        n = len(lm.tokenizer([text])["input_ids"][0])
        if n == 64 or k > 80:
            break
        k += 1 if n < 64 else -1
        if n > 64 and len(lm.tokenizer([" ".join(words[100:100 + k])])["input_ids"][0]) < 64:
            break
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        row = {"threads": threads, "tokens": n}
        for batch in (1, 16):
            texts = [text] * batch
            p.score(texts, lm=lm, batch_size=batch)
            ts = []
            for _ in range(runs if batch == 1 else max(2, runs // 4)):
                t0 = time.perf_counter()
                p.score(texts, lm=lm, batch_size=batch)
                ts.append((time.perf_counter() - t0) / batch)
            row[f"ms_per_text_batch{batch}"] = 1e3 * float(np.median(ts))
        row["gain"] = row["ms_per_text_batch1"] / row["ms_per_text_batch16"]
        out.append(row)
    return out


# --- misbehaving clients ------------------------------------------------------------------------


async def misbehave(server: Server) -> dict:
    """Slow client, dropped connections, a burst past a key's rate limit, with normal traffic alongside."""
    import httpx

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"texts": ["a request whose client goes away"]}).encode()
    head = (f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {LOAD_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    before = metrics(server.url)

    async def slow_client():
        r, w = await asyncio.open_connection(host, int(port))
        w.write(head + body[:10])  # never sends the rest
        await w.drain()
        reply = await asyncio.wait_for(r.read(200), 10)
        w.close()
        return reply.split(b"\r\n", 1)[0].decode()

    async def drop_mid_body():
        _, w = await asyncio.open_connection(host, int(port))
        w.write(head + body[:10])
        await w.drain()
        await asyncio.sleep(0.2)
        w.transport.abort()

    async def drop_waiting():
        _, w = await asyncio.open_connection(host, int(port))
        w.write(head + body)
        await w.drain()
        await asyncio.sleep(0.01)  # the request is queued or in its batch
        w.transport.abort()

    async def normal(client, n=25):
        codes = []
        for t in mixed_texts(n, seed=7):
            codes.append((await client.post("/v1/score", json={"texts": [t]},
                                            headers={"Authorization": f"Bearer {LOAD_KEY}"})).status_code)
        return codes

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        burst = [client.post("/v1/score", json={"texts": ["burst"]}, headers={"X-API-Key": BURST_KEY})
                 for _ in range(4 * BURST)]
        traffic = [normal(client) for _ in range(4)]
        drops = [drop_mid_body() for _ in range(3)] + [drop_waiting() for _ in range(3)]
        results = await asyncio.gather(slow_client(), *burst, *traffic, *drops)
        slow_status = results[0]
        burst_codes = [r.status_code for r in results[1:1 + 4 * BURST]]
        normal_codes = [c for codes in results[1 + 4 * BURST:1 + 4 * BURST + 4] for c in codes]
        await asyncio.sleep(1.0)
        after_ok = (await client.post("/v1/score", json={"texts": ["still serving"]},
                                      headers={"Authorization": f"Bearer {LOAD_KEY}"})).status_code == 200
    after = metrics(server.url)

    def delta(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {"slow_client_answer": slow_status, "burst_codes": {str(c): burst_codes.count(c) for c in set(burst_codes)},
            "normal_ok": sum(c == 200 for c in normal_codes), "normal_total": len(normal_codes),
            "served_after": after_ok,
            "metrics": {"slow_clients": delta("riskscope_slow_clients_total"),
                        "dropped_connections": delta("riskscope_dropped_connections_total"),
                        "rate_limited": delta('riskscope_rejections_total{reason="rate_limited"}')},
            "sent": {"slow_clients": 1, "dropped_connections": 6, "rate_limited_expected": 4 * BURST - BURST}}


# --- report -------------------------------------------------------------------------------------


def report(res: dict) -> str:
    rows = []
    for m in res["modes"]:
        rss = {int(k): v for k, v in m["rss_mb"].items()}
        rows.append(["on" if m["batching"] else "off", m["requests"], m["errors"], f"{m['texts_per_s']:.1f}",
                     f"{m['p50_ms']:.0f}", f"{m['p99_ms']:.0f}", f"{m['mean_batch_texts']:.1f}",
                     f"{1e3 * m['server_cpu_s_per_text']:.1f}",
                     f"{rss.get(res['rss_from'], float('nan')):.0f} -> {rss[m['requests']]:.0f}"
                     + (f" ({100 * m['rss_growth']:+.1f} %)" if "rss_growth" in m else ""),
                     f"{m['loadavg_start']} / {m['loadavg_end']}"])
    lines = [table(["batching", "requests", "errors", "texts/s", "p50 ms", "p99 ms", "mean batch", "server CPU ms/text",
                    f"RSS MB at {res['rss_from']} -> end", "load avg start / end"], rows)]
    on = next((m for m in res["modes"] if m["batching"]), None)
    off = next((m for m in res["modes"] if not m["batching"]), None)
    if on and off:
        lines.append(f"\nthroughput from batching: **{on['texts_per_s'] / off['texts_per_s']:.2f}x** texts/s; "
                     f"server CPU per text {off['server_cpu_s_per_text'] / on['server_cpu_s_per_text']:.2f}x less")
    if on:
        s = on["single_64"]
        lines.append(f"single {s['tokens']}-token text, sequential: p50 **{s['p50_ms']:.1f} ms**, "
                     f"p90 {s['p90_ms']:.1f} ms ({s['runs']} requests)")
        mb = on["misbehaving"]
        lines.append(f"misbehaving clients: slow client answered `{mb['slow_client_answer']}`; burst codes "
                     f"{mb['burst_codes']}; normal traffic alongside {mb['normal_ok']}/{mb['normal_total']} OK; "
                     f"served after: {mb['served_after']}; /metrics counted {mb['metrics']} (sent {mb['sent']})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", required=True, help="run folder (e.g. from `riskscope run --skip all`)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="server torch threads (default torch's)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--forward-batch", type=int, default=16)
    ap.add_argument("--omp-spin", action="store_true", help="leave OpenMP's default (spinning) wait policy; by "
                    "default the server runs with OMP_WAIT_POLICY=PASSIVE, which a shared machine needs")
    ap.add_argument("--rss-from", type=int, default=1000, help="RSS is compared from this request to the end")
    ap.add_argument("--single-runs", type=int, default=200)
    ap.add_argument("--modes", default="on,off", help="on, off or on,off")
    ap.add_argument("--dtype", default="float32", help="the server's --dtype in the load run (float32 or bfloat16)")
    ap.add_argument("--dtype-compare", action="store_true", help="only float32 vs bfloat16 servers: single "
                    "64-token latency (alternated, 2 rounds) and the change of the built-in texts' scores")
    ap.add_argument("--report", default=None, help="re-print the tables of a saved JSON result")
    ap.add_argument("--ceiling", action="store_true", help="only the in-process ceiling: one 64-token text alone "
                    "vs 16 at once, 1 and 2 threads (no server)")
    args = ap.parse_args()
    if args.dtype_compare:
        with tempfile.TemporaryDirectory() as tmp:
            keys = Path(tmp) / "keys.txt"
            keys.write_text(f"{LOAD_KEY} 1000000 1000000\n")
            res = dtype_compare(args, keys)
        save_json("service-dtype", {"machine": machine(), **res})
        print(json.dumps(res, indent=1))
        return
    if args.ceiling:
        rows = ceiling(args.probe)
        save_json("service-ceiling", {"machine": machine(), "rows": rows})
        print(table(["torch threads", "tokens", "ms/text alone", "ms/text in a batch of 16", "gain"],
                    [[r["threads"], r["tokens"], f"{r['ms_per_text_batch1']:.1f}", f"{r['ms_per_text_batch16']:.1f}",
                      f"{r['gain']:.2f}x"] for r in rows]))
        return
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    texts = mixed_texts(2000)
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.txt"
        keys.write_text(f"{LOAD_KEY} 1000000 1000000\n{BURST_KEY} 0.01 {BURST}\n")
        modes = []
        for mode in args.modes.split(","):
            print(f"micro-batching {mode}: {args.requests} requests at concurrency {args.concurrency} ...",
                  file=sys.stderr, flush=True)
            modes.append(run_mode(args, keys, mode == "on", texts))
    res = {"machine": machine(), "args": vars(args), "rss_from": args.rss_from, "modes": modes}
    path = save_json("service", res)
    print(report(res))
    print(f"\nraw: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
