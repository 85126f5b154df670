"""Faults while writing a store: a full disk, a file-size limit, ``kill -9`` at random points.

Each leaves the finished chunks verifiable, no temporary file after the next run, and a
resumed store whose arrays equal an uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from riskscope.data import Store, cache_activations, verify_store
from riskscope.errors import StoreError

from conftest import make_tiny
from test_store import _cfg, _chunk_files, _data, _read_all

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TESTS = Path(__file__).parent


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in [*root.glob(".*"), *(root / "chunks").glob(".*")])


def _only_incomplete(root: Path) -> list[str]:
    """verify_store's problems other than "incomplete": a finished chunk that does not verify, a bad manifest."""
    return [p for p in verify_store(root, full=True).problems if "is incomplete" not in p]


def _held_rows(path: Path) -> np.ndarray:
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("row_index").numpy()


def _assert_kept_and_resumable(lm, data, root: Path, clean: dict, kept: int, cfg) -> None:
    assert _leftovers(root) == []
    assert len(_chunk_files(root)) == kept and _only_incomplete(root) == []
    partial = Store.open(root, require_complete=False)
    for path in _chunk_files(root):  # the finished chunks hold exactly the uninterrupted values
        rows = _held_rows(path)
        for key, x in clean.items():
            assert np.array_equal(partial.read(key)[rows], x[rows]), key
    stats = cache_activations(lm, data, root, cfg)
    assert (stats.chunks_done_before, stats.chunks_written) == (kept, 4 - kept)
    resumed = _read_all(Store.open(root))
    assert all(np.array_equal(resumed[k], clean[k]) for k in clean) and verify_store(root).ok


@pytest.mark.parametrize("where", ["safetensors writer", "fsync of a chunk", "fsync of the manifest"])
def test_full_disk_keeps_finished_chunks(tmp_path, monkeypatch, where):
    import safetensors
    import safetensors.torch

    lm, data, cfg = make_tiny("llama"), _data(), _cfg()
    cache_activations(lm, data, tmp_path / "clean", cfg)
    clean = _read_all(Store.open(tmp_path / "clean"))
    root = tmp_path / "s"
    real_save, real_fsync = safetensors.torch.save_file, os.fsync
    saves: list[str] = []

    def save_file(tensors, filename, metadata=None):  # the real writer's error on a full disk, on chunk 2
        saves.append(filename)
        if len(saves) == 3:
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device "
                                              "(os error 28)")
        return real_save(tensors, filename, metadata=metadata)

    def fsync(fd):  # the operating system's error on a full disk, on the chosen file
        name = os.readlink(f"/proc/self/fd/{fd}")
        target = ".000002.safetensors." if where == "fsync of a chunk" else ".manifest.json."
        if target in name and (where == "fsync of a chunk" or len(_chunk_files(root)) == 3):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if where == "safetensors writer":
        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    elif not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fsync is for")
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    target = root / ("manifest.json" if where == "fsync of the manifest" else "chunks/000002.safetensors")
    with pytest.raises(StoreError, match=rf"^{target}: cannot write \(No space left on device\); fix that \(free "
                                         r"some space.*re-run the same `riskscope cache` command: finished chunks "
                                         r"are kept$"):
        cache_activations(lm, data, root, cfg)
    monkeypatch.undo()
    if where == "fsync of the manifest":  # chunk 2 is whole but its record never reached the manifest
        assert len(json.loads((root / "manifest.json").read_text())["chunks"]) == 2
        _assert_kept_and_resumable(lm, data, root, clean, 3, cfg)
    else:
        _assert_kept_and_resumable(lm, data, root, clean, 2, cfg)


_LIMITED = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
from conftest import make_tiny
from test_store import _cfg, _data
from riskscope.data import cache_activations
from riskscope.errors import RiskscopeError
lm, data, cfg = make_tiny("llama"), _data(), _cfg(positions=(0, 1, -1))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    cache_activations(lm, data, {root!r}, cfg)
except RiskscopeError as e:
    print("error:", e)
    sys.exit(2)
"""


@pytest.mark.slow
def test_file_size_limit_fails_the_real_writer_cleanly(tmp_path):
    """No mock: the operating system refuses the real writer's bytes (RLIMIT_FSIZE), in a child process."""
    from test_store import _Crash, _crash_after

    lm, data, cfg = make_tiny("llama"), _data(), _cfg(positions=(0, 1, -1))
    cache_activations(lm, data, tmp_path / "clean", cfg)
    clean = _read_all(Store.open(tmp_path / "clean"))
    root = tmp_path / "s"
    with pytest.raises(_Crash):  # chunk 0 done, killed inside chunk 1
        cache_activations(lm, data, root, cfg, progress=_crash_after(3))
    limit = _chunk_files(tmp_path / "clean")[1].stat().st_size - 1  # chunk 1 cannot be written; the manifest can
    script = _LIMITED.format(tests=str(TESTS), limit=limit, root=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{root / 'chunks' / '000001.safetensors'}: cannot write (File too large)" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr
    _assert_kept_and_resumable(lm, data, root, clean, 1, cfg)


# --- kill -9 of the real CLI on a tiny model saved to a directory -------------------------------------------


def _model_dir(path: Path) -> Path:
    import torch
    import transformers as tf

    from test_datasets import real_tokenizer

    tok = real_tokenizer()
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cache_cmd(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "riskscope.cli", "cache", "--model", str(model), "--limit", "150",
            "--chunk-rows", "4", "--batch-size", "2", "--layers", "all", "--json", "--out", str(out)]


def _kill_when(cmd: list[str], out: Path, chunks_done: int | None, delay: float, log) -> None:
    """Start ``cmd``; once ``chunks_done`` chunk files exist (or at once) wait ``delay`` s, then SIGKILL it."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while chunks_done is not None and len(list((out / "chunks").glob("*.safetensors"))) < chunks_done:
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_cli_refuses_bad_positions_before_creating_anything(tmp_path):
    model, out = _model_dir(tmp_path / "model"), tmp_path / "store"
    base = [sys.executable, "-m", "riskscope.cli", "cache", "--model", str(model), "--limit", "3", "--layers", "0",
            "--out", str(out), "--json"]
    proc = subprocess.run([*base, "--positions", "9999"], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "positions [9999] fall outside row" in last, proc.stderr
    assert not out.exists()
    fixed = subprocess.run([*base, "--positions", "0,-1"], capture_output=True, text=True, env=ENV, timeout=600)
    assert fixed.returncode == 0, fixed.stderr
    assert Store.open(out).read("resid_post.0").shape[:2] == (6, 2)


@pytest.mark.slow
def test_kill_at_random_points_then_resume_gives_identical_arrays(tmp_path):
    model = _model_dir(tmp_path / "model")
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    done = subprocess.run(_cache_cmd(model, clean), capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    n_chunks = json.loads((clean / "manifest.json").read_text())["n_chunks"]
    assert n_chunks == 75
    rng = random.Random(20240611)
    # during start-up (no store yet), then inside ever later chunks, each with a random sub-chunk delay
    points = [(None, rng.uniform(0.5, 4.0))] + sorted(
        ((rng.randrange(1, n_chunks), rng.uniform(0.0, 0.03)) for _ in range(3)), key=lambda p: p[0])
    partial = 0
    with open(tmp_path / "killed.log", "w") as log:
        for chunks_done, delay in points:
            _kill_when(_cache_cmd(model, crashed), crashed, chunks_done, delay, log)
            if (crashed / "manifest.json").is_file():  # whatever was finished verifies; nothing is torn
                assert _only_incomplete(crashed) == []
                partial += 0 < len(_chunk_files(crashed)) < n_chunks
    assert partial >= 2  # the kills landed while chunks were being written
    resumed = subprocess.run(_cache_cmd(model, crashed), capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["chunks_reused"] + summary["chunks_written"] == n_chunks and summary["chunks_reused"] > 0
    assert _leftovers(crashed) == []
    assert verify_store(crashed).ok
    a, b = Store.open(crashed), Store.open(clean)
    assert a.manifest["inputs"] == b.manifest["inputs"] and a.rows == b.rows
    assert len(a.points) == 6
    for p in a.points:
        assert np.array_equal(a.read(p), b.read(p)), p
