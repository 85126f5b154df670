"""SAE training: riskscope's trainer vs SAELens's, on the same cached activations, in the same run;
and riskscope's peak RSS when the training tokens grow 10x, streaming from an on-disk store.

    .venv/bin/python bench/bench_sae.py --tokens 262144 --eval-tokens 16384 --threads 2
    .venv/bin/python bench/bench_sae.py --rss --rss-tokens 65536

Speed: activations of the default model at a middle layer over the ``pydocs`` corpus are
captured once (or read back with ``--acts FILE.safetensors``) and shuffled once; then each
trainer runs TopK (same d_sae, k, tokens, batch, Adam lr, AuxK coefficient 1/32,
normalisation ``expected_average_only_in``) on exactly those tokens, interleaved over
``--reps`` rounds. Reported: training tokens/s (wall and CPU), and on held-out tokens FVU
(variance around the mean), L0 and the fraction of latents that fire on none of them.
SAELens (``pip install sae-lens``) is optional; without it the script says so.

RSS: a store with ``positions="all"`` is cached once; two child processes train from it
with N and 10N tokens (wrapping around the store when it runs out) and report their peak
RSS (``VmHWM``, reset after imports and model-free setup).
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
from _common import machine, save_json, table, version  # noqa: E402


class MemorySource:
    """Cached activations handed out as blocks (what a store chunk would be)."""

    def __init__(self, x, block: int):
        self.x, self.block, self.d_in = x, block, x.shape[1]

    def blocks(self, start: int = 0):
        n = max(1, self.x.shape[0] // self.block)
        g = start
        while True:
            b = g % n
            yield g, self.x[b * self.block:(b + 1) * self.block]
            g += 1


def capture(n_tokens: int, layer: int | None, threads: int, dtype: str = "float32"):
    import torch
    from riskscope.models import load_model
    from riskscope.hooks import HookPoint
    from riskscope.sae import LiveSource, load_corpus

    torch.set_num_threads(threads)
    lm = load_model("default", dtype=dtype)
    point = HookPoint("resid_post", layer if layer is not None else lm.n_layers // 2)
    src = LiveSource(lm, point, load_corpus("pydocs"), context=128, batch_size=16, block_tokens=16384, holdout=0)
    parts, got = [], 0
    for _, x in src.blocks():
        parts.append(x)
        got += x.shape[0]
        if got >= n_tokens:
            break
    return torch.cat(parts)[:n_tokens], str(point.normalised(lm))


def eval_stats(encode, decode, x) -> dict:
    import torch
    from riskscope.sae import reconstruction_metrics

    with torch.no_grad():
        acts = encode(x)
        recon = decode(acts)
    fired = (acts > 0).any(0)
    return {"fvu": reconstruction_metrics(x, recon)["fvu"], "l0": float((acts > 0).sum(1).float().mean()),
            "dead_on_held_out": float(1 - fired.float().mean())}


def run_riskscope(x_train, x_eval, args) -> dict:
    import torch
    from riskscope.sae import SAEConfig, train_sae_on

    cfg = SAEConfig(d_in=x_train.shape[1], expansion=args.expansion, arch="topk", k=args.k, lr=args.lr,
                    batch_size=args.batch, tokens=x_train.shape[0], seed=0, norm_tokens=args.batch * 16,
                    block_tokens=args.block)
    w0, c0 = time.perf_counter(), time.process_time()
    res = train_sae_on(MemorySource(x_train, args.block), cfg)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, **eval_stats(res.sae.encode, res.sae.decode, x_eval)}


def run_saelens(x_train, x_eval, args) -> dict:
    import torch
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    d_in = x_train.shape[1]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=int(round(d_in * args.expansion)), k=args.k,
                                                aux_loss_coefficient=1 / 32,
                                                normalize_activations="expected_average_only_in"))
    n_batches = x_train.shape[0] // args.batch

    def provider():
        while True:  # the norm estimate reads n_batches_for_norm_estimate batches first, then training restarts
            for i in range(n_batches):
                yield x_train[i * args.batch:(i + 1) * args.batch]

    tcfg = SAETrainerConfig(total_training_samples=n_batches * args.batch, train_batch_size_samples=args.batch,
                            lr=args.lr, lr_end=args.lr, n_batches_for_norm_estimate=16)
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    w0, c0 = time.perf_counter(), time.process_time()
    trained = trainer.fit()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    trained.eval()
    return {"wall": wall, "cpu": cpu, **eval_stats(trained.encode, trained.decode, x_eval)}


RSS_CHILD = r"""
import json, os, resource, sys, time, torch
from riskscope.data import Store
from riskscope.sae import SAEConfig, StoreSource, train_sae_on
store, point, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
src = StoreSource(Store.open(store), point)
cfg = SAEConfig(d_in=src.d_in, expansion=8, k=32, batch_size=4096, tokens=tokens, block_tokens=65536)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
try:
    open("/proc/self/clear_refs", "w").write("5")
    reset = True
except OSError:
    reset = False
t0 = time.perf_counter()
res = train_sae_on(src, cfg)
print("RESULT " + json.dumps({"tokens": res.tokens, "seconds": time.perf_counter() - t0,
      "peak_mb": status("VmHWM"), "hwm_reset": reset,
      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def rss(args) -> dict:
    import riskscope
    from riskscope.data import CacheConfig, cache_activations, load_dataset
    from riskscope.hooks import HookPoint
    from riskscope.models import load_model
    from riskscope.sae import load_corpus

    tmp = Path(tempfile.mkdtemp(prefix="bench-sae-"))
    texts, seen = [], set()
    for t in load_corpus("pydocs").texts():
        t = t[:1500]
        if t.strip() in seen:  # the dataset loader refuses duplicate texts
            continue
        seen.add(t.strip())
        texts.append(t)
        if len(texts) >= args.rss_texts:
            break
    ds = tmp / "texts.jsonl"
    ds.write_text("".join(json.dumps({"id": f"t{i}", "text": t, "label": 0, "category": "none", "severity": 0})
                          + "\n" for i, t in enumerate(texts)))
    lm = load_model("default", dtype=args.dtype)
    point = HookPoint("resid_post", args.layer if args.layer is not None else lm.n_layers // 2).normalised(lm)
    cache_activations(lm, load_dataset(str(ds)), tmp / "store",
                      CacheConfig(points=(point,), positions="all", chunk_rows=32, truncate=True))
    del lm
    out = {}
    for factor in (1, 10):
        proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(tmp / "store"), str(point),
                               str(args.rss_tokens * factor), str(args.threads)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        out[f"x{factor}"] = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    out["ratio_10x_over_1x"] = out["x10"]["peak_mb"] / out["x1"]["peak_mb"]
    manifest = json.loads((tmp / "store" / "manifest.json").read_text())
    out["store_tokens"] = manifest["stats"]["tokens"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=262_144, help="training tokens")
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--expansion", type=float, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--block", type=int, default=65_536)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="dtype the model runs in to capture the activations (both "
                    "parts; the SAEs always train in float32)")
    ap.add_argument("--acts", type=Path, default=None, help="read (or write, if missing) the captured activations here")
    ap.add_argument("--rss", action="store_true", help="run the peak-RSS comparison instead")
    ap.add_argument("--rss-tokens", type=int, default=65_536)
    ap.add_argument("--rss-texts", type=int, default=256)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.rss:
        r = rss(args)
        print(table(["training tokens", "peak RSS (VmHWM) MB", "ru_maxrss MB", "seconds"],
                    [[r[k]["tokens"], f"{r[k]['peak_mb']:.0f}", f"{r[k]['ru_maxrss_mb']:.0f}",
                      f"{r[k]['seconds']:.1f}"] for k in ("x1", "x10")]))
        print(f"\nstore: {r['store_tokens']} tokens; 10x / 1x peak RSS = {r['ratio_10x_over_1x']:.3f}")
        print("raw:", save_json("sae-rss", {"machine": machine(), "args": vars(args), **r}))
        return 0
    from safetensors.torch import load_file, save_file

    need = args.tokens + args.eval_tokens
    if args.acts and args.acts.is_file():
        t = load_file(str(args.acts))
        x, point = t["acts"], "cached"
    else:
        x, point = capture(need, args.layer, args.threads, args.dtype)
        if args.acts:
            save_file({"acts": x.contiguous()}, str(args.acts))
    if x.shape[0] < need:
        raise SystemExit(f"only {x.shape[0]} cached tokens, need {need}")
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))]
    x_train, x_eval = x[:args.tokens].contiguous(), x[args.tokens:need].contiguous()
    have_saelens = version("sae-lens") != "not installed"
    warm = argparse.Namespace(**{**vars(args), "block": args.batch * 2})  # first-call imports and allocations
    run_riskscope(x_train[:args.batch * 2], x_eval, warm)
    if have_saelens:
        run_saelens(x_train[:args.batch * 2], x_eval, warm)
    rows, raw = [], {"riskscope": [], "sae_lens": []}
    for rep in range(args.reps):
        order = ["riskscope", "sae_lens"] if rep % 2 == 0 else ["sae_lens", "riskscope"]
        for name in order:
            if name == "sae_lens" and not have_saelens:
                continue
            raw[name].append(run_riskscope(x_train, x_eval, args) if name == "riskscope"
                             else run_saelens(x_train, x_eval, args))
    for name, runs in raw.items():
        if not runs:
            rows.append([name, "not installed", "", "", "", "", ""])
            continue
        wall = sorted(r["wall"] for r in runs)[len(runs) // 2]
        cpu = sorted(r["cpu"] for r in runs)[len(runs) // 2]
        last = runs[-1]
        rows.append([name, f"{args.tokens / wall:,.0f}", f"{args.tokens / cpu:,.0f}", f"{last['fvu']:.4f}",
                     f"{last['l0']:.1f}", f"{last['dead_on_held_out']:.3f}", f"{wall:.1f}"])
    print(f"TopK {args.expansion:g}x, k {args.k}, {args.tokens} tokens, batch {args.batch}, lr {args.lr}, "
          f"{point}, {args.threads} threads, sae-lens {version('sae-lens')}")
    print(table(["trainer", "tokens/s (wall)", "tokens/s (CPU)", "held-out FVU", "L0", "dead (held-out)",
                 "seconds"], rows))
    if raw["sae_lens"]:
        r_w = [a["wall"] for a in raw["riskscope"]]
        s_w = [a["wall"] for a in raw["sae_lens"]]
        print(f"\nspeed-up (median wall): {sorted(s_w)[len(s_w) // 2] / sorted(r_w)[len(r_w) // 2]:.2f}x; "
              f"CPU: {sorted(a['cpu'] for a in raw['sae_lens'])[len(s_w) // 2] / sorted(a['cpu'] for a in raw['riskscope'])[len(r_w) // 2]:.2f}x")
    print("raw:", save_json("sae-speed", {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                          "point": point, "runs": raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
