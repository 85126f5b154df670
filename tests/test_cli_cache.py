"""``riskscope cache`` as users run it: real subprocesses on the real default model, including kill -9."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from riskscope.data import cache_activations, load_dataset
from riskscope.pipeline import cache_config, parse_layers, parse_positions
from riskscope.errors import RiskscopeError
from riskscope.hooks import capture, run_texts
from riskscope.data import Store

# One torch thread in the children: on a busy 2-CPU machine OpenMP spin-waiting makes two threads
# ~10x slower. Same setting for every run, so interrupted and clean runs stay bit-comparable.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "riskscope.cli"]
SMALL = ["cache", "--limit", "5", "--layers", "0,-1", "--json"]
CRASH = ["cache", "--limit", "20", "--chunk-rows", "4", "--batch-size", "2", "--layers", "0-29", "--json"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """A non-zero exit whose stderr ends in exactly one ``error:`` line, with no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr
    assert sum(line.startswith("error") for line in lines) == 1, proc.stderr
    for w in words:
        assert w in lines[-1], lines[-1]
    return lines[-1]


# --- fast: argument parsing ------------------------------------------------------------------------


@pytest.mark.parametrize("text,layers", [("all", [0, 1, 2, 3]), ("0,-1", [0, -1]), ("1-3", [1, 2, 3]),
                                         ("0, 2-3", [0, 2, 3]), ("-2--1", [-2, -1]), ("-3", [-3])])
def test_parse_layers(text, layers):
    assert parse_layers(text, 4) == layers


@pytest.mark.parametrize("text", ["x", "1-a", "", "0,,1"])
def test_parse_layers_rejects(text):
    with pytest.raises(RiskscopeError, match="--layers"):
        parse_layers(text, 4)


def test_parse_positions():
    assert parse_positions("last") == "last" and parse_positions("all") == "all"
    assert parse_positions("0,-1") == (0, -1)
    with pytest.raises(RiskscopeError, match="--positions"):
        parse_positions("first")


# --- slow: subprocesses, the real default model ---------------------------------------------------------


@pytest.mark.slow
def test_bad_dataset_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": "other", "label": "perhaps"}\n')
    proc = _cli("cache", "--dataset", str(bad), "--out", str(tmp_path / "store"), timeout=120)
    _assert_one_line_error(proc, f"{bad}:2", "field 'label'", "perhaps")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "store"
    summary = _ok(_cli(*SMALL, "--out", str(out)))
    return out, summary


@pytest.mark.slow
def test_cache_command_writes_a_store_that_reopens(small_store, default_lm):
    out, summary = small_store
    assert summary["rows"] == 10 and summary["chunks_written"] == 1 and summary["chunks_reused"] == 0
    assert summary["points"] == ["mlp_neurons.0", "mlp_neurons.29", "resid_post.0", "resid_post.29"]
    store = Store.open(out)
    assert store.manifest["model"]["weight_hash"] == default_lm.weight_hash
    assert store.manifest["dataset"]["name"] == "cyber_risk_pairs" and store.manifest["dataset"]["pairs"] == 5
    assert store.labels.tolist() == [1, 0] * 5
    points = store.points
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, text in enumerate(store.texts):  # the CLI's batched values are each text's own values
            with torch.inference_mode(), capture(default_lm, points) as got:
                run_texts(default_lm, [text])
            for p in points:
                want = got[p][0]
                assert store.read(p).shape == (10, p.width(default_lm))
                torch.testing.assert_close(torch.from_numpy(store.read(p)[i]), want, rtol=0,
                                           atol=1e-5 * max(1.0, float(want.abs().max())))
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_rerunning_a_complete_store_is_a_noop(small_store):
    out, _ = small_store
    chunk = out / "chunks" / "000000.safetensors"
    before = (chunk.stat().st_mtime_ns, (out / "manifest.json").read_bytes())
    summary = _ok(_cli(*SMALL, "--out", str(out)))
    assert (summary["chunks_written"], summary["chunks_reused"]) == (0, 1)
    assert (chunk.stat().st_mtime_ns, (out / "manifest.json").read_bytes()) == before


@pytest.mark.slow
def test_store_from_other_inputs_is_refused(small_store):
    out, _ = small_store
    before = sorted(p.name for p in (out / "chunks").iterdir())
    proc = _cli("cache", "--limit", "5", "--layers", "0", "--out", str(out))
    _assert_one_line_error(proc, str(out), "other inputs", "points", "--out")
    assert "caching activations" not in proc.stderr  # refused before any progress bar
    assert sorted(p.name for p in (out / "chunks").iterdir()) == before
    Store.open(out)


def _snapshot(path) -> str:
    """The built-in dataset frozen into a file, so edits to it cannot land between two runs of a test."""
    rows = load_dataset("cyber_risk_pairs").rows
    path.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_killed_cache_resumes_to_identical_arrays(tmp_path, default_lm):
    data_file = _snapshot(tmp_path / "pairs.jsonl")
    cmd = [*CLI, *CRASH, "--dataset", data_file]  # 40 texts, 10 chunks of 4, all 30 layers
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    chunks = crashed / "chunks"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([*cmd, "--out", str(crashed)], stdout=log, stderr=log, env=ENV)
        try:
            deadline = time.monotonic() + 240
            while not (chunks.is_dir() and any(chunks.glob("*.safetensors"))):
                assert proc.poll() is None, f"cache exited ({proc.returncode}) before any chunk was written"
                assert time.monotonic() < deadline, "no chunk written within 240 s"
                time.sleep(0.02)
            assert proc.poll() is None, "cache finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((crashed / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["n_chunks"] == 10
    done = len(list(chunks.glob("*.safetensors")))
    assert 1 <= done < 10
    with pytest.raises(RiskscopeError, match="incomplete.*riskscope cache"):
        Store.open(crashed)

    resumed = subprocess.run([*cmd, "--out", str(crashed)], capture_output=True, text=True, env=ENV, timeout=300)
    resumed = _ok(resumed)
    assert resumed["chunks_reused"] >= done and resumed["chunks_reused"] > 0
    assert resumed["chunks_written"] == 10 - resumed["chunks_reused"] > 0
    assert list(chunks.glob(".*")) == []  # no temporary file survives

    # the uninterrupted reference: the same command's code path, in this process (same single thread)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = cache_config(default_lm, "0-29", "resid_post,mlp_neurons", "last", "float32", batch_size=2,
                           chunk_rows=4)
        cache_activations(default_lm, load_dataset(data_file).limit(20), clean, cfg)
    finally:
        torch.set_num_threads(n)

    a, b = Store.open(crashed), Store.open(clean)
    assert a.manifest["inputs"] == b.manifest["inputs"] and a.rows == b.rows
    assert len(a.points) == 60
    for p in a.points:
        x, y = a.read(p), b.read(p)
        assert x.shape == (40, a.manifest["widths"][str(p)])
        assert np.array_equal(x, y), p


def test_datasets_lists_each_builtin_with_its_version():
    from riskscope.data import list_builtins

    proc = _cli("datasets")
    assert proc.returncode == 0, proc.stderr
    assert "version" in proc.stdout
    rows = json.loads(_cli("datasets", "--json").stdout)
    assert {r["name"] for r in rows} == set(list_builtins())
    for r in rows:
        line = next(ln for ln in proc.stdout.splitlines() if r["name"] in ln)
        assert f" {r['version']} " in line and f" {r['pairs']} " in line
