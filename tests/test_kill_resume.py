"""kill -9 of real `riskscope probe` and `riskscope melbo` processes at random points, then the same command again:
the results equal an uninterrupted run's, and no temporary file is left behind.

(`riskscope cache` has its own kill tests in tests/test_store_faults.py and tests/test_cli_cache.py.)
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyhf import build_tiny_hf

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "riskscope.cli"]
TEMP = re.compile(r"(^\..+\.\d+\.tmp$)|(^\.tmp[A-Za-z0-9]{6}$)|(^\..+\.[a-z0-9_]{8}\.(tmp|old)$)")


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _kill_at_random(args: list[str], rng: random.Random, tries: int, longest: float) -> int:
    """Start the command ``tries`` times, each killed with SIGKILL after a random delay; returns how many
    were still running when killed."""
    killed = 0
    for _ in range(tries):
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(0.5, longest))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    return killed


def _temps(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMP.match(p.name))


def _metrics(path: Path) -> dict:
    m = json.loads(path.read_text())
    m.pop("seconds", None)
    return m


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    model = build_tiny_hf(root / "model")
    _run(["cache", "--model", str(model), "--out", str(root / "store"), "--limit", "24", "--chunk-rows", "8"])
    return model, root / "store"


def test_probe_killed_then_rerun_equals_an_uninterrupted_run(tiny_store, tmp_path):
    _, store = tiny_store
    args = [str(store), "--folds", "3", "--n-bootstrap", "200"]
    _run(["probe", *args, "--out", str(tmp_path / "ref")])
    started = time.perf_counter()
    _run(["probe", *args, "--out", str(tmp_path / "timing")])
    longest = time.perf_counter() - started
    out = tmp_path / "killed"
    killed = _kill_at_random(["probe", *args, "--out", str(out)], random.Random(7), 4, longest)
    assert killed >= 1
    _run(["probe", *args, "--out", str(out)])
    ref = tmp_path / "ref"
    assert _metrics(out / "metrics.json") == _metrics(ref / "metrics.json")
    assert (out / "predictions.jsonl").read_bytes() == (ref / "predictions.jsonl").read_bytes()
    assert (out / "probe" / "weights.safetensors").read_bytes() == (ref / "probe" / "weights.safetensors").read_bytes()
    assert _temps(out) == []


def test_melbo_killed_then_rerun_equals_an_uninterrupted_run(tiny_store, tmp_path):
    model, _ = tiny_store
    args = ["--model", str(model), "--prompt", "Tell me about the weather today.", "--prompt", "Write a short poem.",
            "--vectors", "3", "--steps", "20", "--radius", "2.0", "--max-new-tokens", "6", "--random", "2",
            "--embedder", "ngram", "--raw", "--seed", "3"]
    _run(["melbo", *args, "--out", str(tmp_path / "ref")])
    started = time.perf_counter()
    _run(["melbo", *args, "--out", str(tmp_path / "timing")])
    longest = time.perf_counter() - started
    out = tmp_path / "killed"
    killed = _kill_at_random(["melbo", *args, "--out", str(out)], random.Random(11), 4, longest)
    assert killed >= 1
    _run(["melbo", *args, "--out", str(out)])
    ref = tmp_path / "ref"
    from safetensors.torch import load_file
    import torch

    for name in ("vectors/vector_000.safetensors", "vectors/vector_002.safetensors",
                 "random_vectors/random_vector_001.safetensors"):
        got, want = load_file(str(out / name)), load_file(str(ref / name))
        assert got.keys() == want.keys(), name
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{name}:{k}")
    assert [r["text"] for r in map(json.loads, (out / "completions.jsonl").read_text().splitlines())] == \
        [r["text"] for r in map(json.loads, (ref / "completions.jsonl").read_text().splitlines())]
    assert sorted(json.loads((out / "files.json").read_text())["files"]) == \
        sorted(json.loads((ref / "files.json").read_text())["files"])
    assert _temps(out) == []
