"""Caching on Ray workers: the same store as one process, array for array, also when a worker is killed
mid-chunk; bad input (engine, address, weights, devices) refused in one line before any store is written.

One small local Ray cluster serves the module (starting one costs ~15 s on a busy 2-core machine); the
CLI runs against it by ``--address``, and once (slow tier) with a cluster of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from riskscope.data import CacheConfig, ChunkedStore, cache_activations, load_dataset, verify_store
from riskscope.distributed import (DistributedConfig, DistributedError, ModelSpec, cache_distributed,
                                   check_reachable, parse_address)
from riskscope.hooks import HookPoint
from riskscope.models import load_model
from tinyhf import build_tiny_hf

ray = pytest.importorskip("ray")

LIMIT = 12  # pairs: 24 texts, 6 chunks of 4
CFG = CacheConfig(points=(HookPoint("resid_post", 0), HookPoint("resid_post", -1), HookPoint("mlp_neurons", 1)),
                  batch_size=2, chunk_rows=4)
CLI = [sys.executable, "-m", "riskscope.cli"]
TIMING = {("model", "load_seconds"), ("stats", "seconds_last_run")}


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # the environment as it is now: a local cluster sets RAY_AUTH_MODE=token, which clients of it need too
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def assert_same_store(got: Path, want: Path) -> None:
    """Every array equal, the manifest equal but for timing fields and chunk hashes (safetensors writes its
    metadata in per-process hash order, so equal arrays may hash differently; each hash is checked against its
    own file by ``verify_store``), rows.jsonl byte-equal, no other file."""
    a, b = json.loads((got / "manifest.json").read_text()), json.loads((want / "manifest.json").read_text())
    for m in (a, b):
        for k, sub in TIMING:
            m.get(k, {}).pop(sub, None)
        m.pop("manifest_sha256")
        for rec in m["chunks"]:
            rec.pop("sha256")
    assert a == b
    assert (got / "rows.jsonl").read_bytes() == (want / "rows.jsonl").read_bytes()
    files = sorted(p.name for p in (got / "chunks").iterdir())
    assert files == sorted(p.name for p in (want / "chunks").iterdir()) == [r["file"] for r in a["chunks"]]
    assert sorted(p.name for p in got.iterdir()) == ["chunks", "manifest.json", "rows.jsonl"]
    rows = []
    for name in files:
        x, y = load_file(str(got / "chunks" / name)), load_file(str(want / "chunks" / name))
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (name, k)
        rows += x["row_index"].tolist()
    assert sorted(rows) == list(range(a["n_rows"]))  # no duplicates, none missing
    report = verify_store(got, full=True)
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny HF model (and a second one with other weights), the dataset, the single-process store, a cluster."""
    import logging

    root = tmp_path_factory.mktemp("dist")
    model = build_tiny_hf(root / "model")
    other = build_tiny_hf(root / "other", seed=1)
    data = load_dataset("cyber_risk_pairs").limit(LIMIT)
    lm = load_model(str(model))
    cache_activations(lm, data, root / "single", CFG)
    auth = os.environ.get("RAY_AUTH_MODE")  # ray.init sets it for this process; later modules must not see it
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
             logging_level=logging.ERROR, log_to_driver=False)
    yield {"root": root, "model": model, "other": other, "data": data, "lm": lm, "single": root / "single",
           "address": ray.get_runtime_context().gcs_address}
    ray.shutdown()
    if auth is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = auth


def test_two_workers_write_the_single_process_store(world, tmp_path):
    out = tmp_path / "store"
    seen = []
    stats = cache_distributed(world["lm"], ModelSpec(str(world["model"])), world["data"], out, CFG,
                              DistributedConfig(workers=2), progress=lambda n, total: seen.append((n, total)))
    assert_same_store(out, world["single"])
    assert stats.chunks_written == stats.chunks_total == 6 and stats.chunks_reused == 0
    assert sum(n for n, _ in seen) == len(world["data"]) and {t for _, t in seen} == {len(world["data"])}
    assert len(stats.workers) == 2 and sum(w["chunks"] for w in stats.workers) == 6
    # what the driver finds when the same command runs again: every chunk kept, nothing rewritten
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = ChunkedStore.prepare(world["lm"], world["data"], out, CFG)
    assert again.pending == () and again.reused == 6
    assert again.finish().chunks_written == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_is_restarted_and_the_store_is_unchanged(world, tmp_path):
    out = tmp_path / "store"
    marker = str(tmp_path / "killed-once")

    def kill_once(chunk: int, rows_done: int) -> None:  # runs inside the worker, after each batch
        if chunk == 2 and rows_done == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # half of chunk 2 computed, nothing of it written

    stats = cache_distributed(world["lm"], ModelSpec(str(world["model"])), world["data"], out, CFG,
                              DistributedConfig(workers=2, max_retries=2), on_batch=kill_once)
    assert os.path.exists(marker)
    assert stats.restarts == 1
    assert_same_store(out, world["single"])


def test_workers_with_other_weights_are_refused_before_the_store_is_created(world, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(DistributedError, match="other model weights"):
        cache_distributed(world["lm"], ModelSpec(str(world["other"])), world["data"], out, CFG,
                          DistributedConfig(workers=1))
    assert not out.exists()


@pytest.mark.slow
def test_cli_on_an_existing_cluster_by_address(world, tmp_path):
    out = tmp_path / "store"
    proc = _cli("cache", "--model", str(world["model"]), "--out", str(out), "--limit", str(LIMIT),
                "--layers", "0,1,-1", "--hooks", "resid_post,mlp_neurons", "--batch-size", "2", "--chunk-rows", "4",
                "--workers", "2", "--address", world["address"], "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["chunks_written"] == 6 and summary["engine"] == "ray" and len(summary["workers"]) == 2
    assert "caching activations (2 workers)" in proc.stderr  # one bar across the workers
    ref = tmp_path / "ref"
    cfg = CacheConfig(points=tuple(HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in (0, 1, -1)),
                      batch_size=2, chunk_rows=4)
    cache_activations(world["lm"], world["data"], ref, cfg)
    assert_same_store(out, ref)


@pytest.mark.slow
def test_cli_starts_its_own_local_cluster(world, tmp_path):
    out = tmp_path / "store"
    args = ["cache", "--model", str(world["model"]), "--out", str(out), "--limit", str(LIMIT), "--layers", "0,-1",
            "--hooks", "resid_post", "--batch-size", "2", "--chunk-rows", "4", "--json"]
    proc = _cli(*args, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["chunks_written"] == 6
    ref = tmp_path / "ref"
    assert _cli(*args, "--out", str(ref)).returncode == 0
    assert_same_store(out, ref)


# --- bad input: one line, exit 2, nothing written ----------------------------------------------------------------


def _main(args: list[str], capsys) -> tuple[int, str]:
    from riskscope.cli import main

    old = sys.argv
    sys.argv = ["riskscope", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and sum(line.startswith("error") for line in err) == 1, err
    return code, err[-1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_model(tmp_path_factory):
    return build_tiny_hf(tmp_path_factory.mktemp("m") / "model")


@pytest.mark.parametrize("extra,words", [
    (["--workers", "2", "--engine", "spark"], ["--engine 'spark'", "ray"]),
    (["--workers", "0"], ["--workers"]),
    (["--engine", "ray"], ["--engine ray needs --workers N or --address"]),
    (["--workers", "2", "--engine", "local"], ["--engine local"]),
    (["--address", "ray://127.0.0.1:{port}"], ["cannot reach a Ray cluster", "127.0.0.1"]),
    (["--address", "http://x:1"], ["ray://host:port"]),
    (["--device-map", '{"model.layers.1": "meta"}'], ["meta", "model.layers.1"]),
    (["--device-map", "nowhere"], ["--device-map"]),
    (["--max-memory", "cpu=1GiB"], ["--max-memory needs --device-map"]),
])
def test_bad_distribution_and_placement_options(extra, words, tiny_model, tmp_path, capsys):
    out = tmp_path / "store"
    extra = [e.replace("{port}", str(_closed_port())) for e in extra]
    code, line = _main(["cache", "--model", str(tiny_model), "--out", str(out), "--limit", "2", *extra], capsys)
    assert code == 2
    for w in words:
        assert w in line, line
    assert not out.exists()


def test_engine_not_installed(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as on a machine without it
    out = tmp_path / "store"
    code, line = _main(["cache", "--model", str(tiny_model), "--out", str(out), "--workers", "2"], capsys)
    assert code == 2 and "Ray is not installed" in line and "riskscope[ray]" in line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("extra", [[], ["--workers", "2"], ["--device-map", '{"model": "cuda:0"}']])
def test_cuda_without_cuda(extra, tiny_model, tmp_path, capsys):
    out = tmp_path / "store"
    args = ["cache", "--model", str(tiny_model), "--out", str(out), "--limit", "2", *extra]
    if not extra or extra[0] == "--workers":
        args += ["--device", "cuda"]
    code, line = _main(args, capsys)
    assert code == 2 and "CUDA is not available" in line
    assert not out.exists()


def test_unreachable_address_fails_fast():
    with pytest.raises(DistributedError, match="cannot reach"):  # within the timeout, not Ray's minute of retries
        check_reachable("192.0.2.1:6379", timeout=0.5)  # TEST-NET-1: never answers
    assert parse_address("ray://h:1") == ("h", 1) and parse_address("h") == ("h", 6379)
    assert parse_address("ray://h") == ("h", 10001) and parse_address("auto") is None
