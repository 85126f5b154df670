"""The activation store on tiny models: exact values, dtypes, positions, resumption, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from riskscope import __version__
from riskscope.data import Dataset, Row
from riskscope.errors import StoreError
from riskscope.hooks import HookPoint, capture, run_texts
from riskscope.data._store import FORMAT
from riskscope.data import CacheConfig, Store, cache_activations, check_store

from conftest import make_tiny

# Ten pairs of different lengths (the tiny tokenizer is one token per character, context 64).
_PAIRS = [
    ("pasted the typed words into sql", "bound the typed words as params"),
    ("left debug on", "turned debug off"),
    ("shared the admin password in chat", "shared the wiki link in chat"),
    ("disabled tls checks", "pinned the tls cert"),
    ("ran the attachment", "scanned the attachment first"),
    ("opened port 22 to all", "opened port 22 to the vpn only"),
    ("kept old keys", "rotated keys"),
    ("pushed the .env file to a public repo", "added .env to gitignore"),
    ("clicked the reset link from an unknown sender", "typed the bank address by hand"),
    ("root", "user"),
]
POINTS = (HookPoint("resid_post", 0), HookPoint("mlp_neurons", -1), HookPoint("attn_out", 1),
          HookPoint("resid_pre", 2), HookPoint("mlp_out", 1))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _data(n_pairs: int = len(_PAIRS)) -> Dataset:
    rows = []
    for k, (risky, benign) in enumerate(_PAIRS[:n_pairs]):
        cat = ["web", "ops"][k % 2]
        rows.append(Row(f"p{k}:risky", risky, 1, f"p{k}", category=cat, severity=k % 5 + 1))
        rows.append(Row(f"p{k}:benign", benign, 0, f"p{k}", category=cat, severity=0))
    return Dataset(name="tiny-pairs", rows=tuple(rows))


def _cfg(**kw) -> CacheConfig:
    return CacheConfig(**{"points": POINTS, "batch_size": 4, "chunk_rows": 6, **kw})  # 20 rows -> 4 chunks


def _alone(lm, texts, points, how="last") -> dict[str, list[torch.Tensor]]:
    """Each text run by itself: the reference every store must reproduce."""
    out: dict[str, list[torch.Tensor]] = {}
    for text in texts:
        with capture(lm, points, how) as got:
            run_texts(lm, [text])
        for p, x in got.items():
            out.setdefault(str(p), []).append(x[0])
    return out


def _read_all(store: Store) -> dict[str, np.ndarray]:
    return {str(p): store.read(p) for p in store.points}


def _chunk_files(root):
    return sorted((root / "chunks").glob("*.safetensors"))


# --- values ---------------------------------------------------------------------------------------------


def test_store_equals_each_text_run_alone(tiny, tmp_path):
    data = _data()
    stats = cache_activations(tiny, data, tmp_path / "s", _cfg())
    assert (stats.chunks_total, stats.chunks_written, stats.chunks_done_before) == (4, 4, 0)
    store = Store.open(tmp_path / "s")
    assert store.texts == data.texts
    assert np.array_equal(store.labels, data.labels)
    assert store.pair_ids == data.pair_ids
    assert [str(p) for p in store.points] == sorted(str(p.normalised(tiny)) for p in POINTS)
    want = _alone(tiny, data.texts, POINTS)
    for key, x in _read_all(store).items():
        assert x.dtype == np.float32 and x.shape == (len(data), HookPoint.parse(key).width(tiny))
        torch.testing.assert_close(torch.from_numpy(x), torch.stack(want[key]), atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 1e-2)])
def test_half_precision_storage_round_trips(tmp_path, dtype, tol):
    lm, data = make_tiny("llama"), _data()
    cache_activations(lm, data, tmp_path / "f32", _cfg())
    cache_activations(lm, data, tmp_path / dtype, _cfg(dtype=dtype))
    assert Store.open(tmp_path / dtype).manifest["dtype"] == dtype
    with safe_open(str(_chunk_files(tmp_path / dtype)[0]), framework="pt") as f:
        assert f.get_tensor("resid_post.0").dtype == getattr(torch, dtype)
    full, half = _read_all(Store.open(tmp_path / "f32")), _read_all(Store.open(tmp_path / dtype))
    for key in full:
        assert half[key].dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(half[key]), torch.from_numpy(full[key]), rtol=tol, atol=tol)


def test_mean_and_explicit_positions(tmp_path):
    lm, data = make_tiny("gpt2"), _data()
    cache_activations(lm, data, tmp_path / "mean", _cfg(positions="mean"))
    cache_activations(lm, data, tmp_path / "idx", _cfg(positions=(0, 1, -1)))
    mean, idx = Store.open(tmp_path / "mean"), Store.open(tmp_path / "idx")
    assert mean.manifest["positions"] == "mean" and idx.manifest["positions"] == [0, 1, -1]
    want_mean, want_idx = _alone(lm, data.texts, POINTS, "mean"), _alone(lm, data.texts, POINTS, [0, 1, -1])
    for p in mean.points:
        x = mean.read(p)
        assert x.shape == (len(data), p.width(lm))
        torch.testing.assert_close(torch.from_numpy(x), torch.stack(want_mean[str(p)]), atol=1e-5, rtol=0)
        y = idx.read(p)
        assert y.shape == (len(data), 3, p.width(lm))
        torch.testing.assert_close(torch.from_numpy(y), torch.stack(want_idx[str(p)]), atol=1e-5, rtol=0)


def test_all_positions_read_tokens(tmp_path):
    lm, data = make_tiny("qwen3"), _data()
    cache_activations(lm, data, tmp_path / "s", _cfg(positions="all"))
    store = Store.open(tmp_path / "s")
    want = _alone(lm, data.texts, POINTS, "all")
    for p in store.points:
        rows = store.read_tokens(p)
        assert len(rows) == len(data)
        for i, (x, r) in enumerate(zip(rows, store.rows)):
            assert x.shape == (len(data.texts[i]), p.width(lm)) and r["n_tokens"] == len(data.texts[i])
            torch.testing.assert_close(torch.from_numpy(x), want[str(p)][i], atol=1e-5, rtol=0)
    with pytest.raises(StoreError, match="read_tokens"):
        store.read(store.points[0])


def test_manifest_and_rows_describe_the_store(tmp_path):
    lm, data = make_tiny("llama", seed=3), _data()
    cache_activations(lm, data, tmp_path / "s", _cfg(dtype="float16"))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["complete"] is True
    assert m["model"]["weight_hash"] == lm.weight_hash == "tiny-llama-3"
    assert m["inputs"]["model_weight_hash"] == lm.weight_hash
    assert m["dataset"]["digest"] == data.digest() and m["dataset"]["rows"] == 20 and m["dataset"]["pairs"] == 10
    assert m["points"] == ["attn_out.1", "mlp_neurons.2", "mlp_out.1", "resid_post.0", "resid_pre.2"]
    assert m["widths"]["mlp_neurons.2"] == 48 and m["widths"]["resid_post.0"] == 32
    assert m["positions"] == "last" and m["dtype"] == "float16"
    assert m["riskscope_version"] == __version__
    assert (m["n_rows"], m["n_chunks"]) == (20, 4)
    rows = [json.loads(line) for line in (tmp_path / "s" / "rows.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(20))
    assert [r["id"] for r in rows] == data.ids
    assert [r["label"] for r in rows] == data.labels.tolist()
    assert [r["pair_id"] for r in rows] == data.pair_ids
    assert [r["category"] for r in rows] == [r.category for r in data.rows]
    assert [r["severity"] for r in rows] == [r.severity for r in data.rows]
    assert [r["n_tokens"] for r in rows] == [len(t) for t in data.texts]


# --- resumption -------------------------------------------------------------------------------------------


def test_rerunning_a_complete_store_writes_nothing(tmp_path):
    lm, data = make_tiny("llama"), _data()
    cache_activations(lm, data, tmp_path / "s", _cfg())
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in _chunk_files(tmp_path / "s")}
    seen = []
    stats = cache_activations(lm, data, tmp_path / "s", _cfg(), progress=lambda n, total: seen.append((n, total)))
    assert (stats.chunks_written, stats.chunks_done_before) == (0, 4)
    assert sum(n for n, _ in seen) == len(data) and {t for _, t in seen} == {len(data)}
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in _chunk_files(tmp_path / "s")} == before


def test_deleted_chunk_is_recomputed_alone_and_identically(tmp_path):
    lm, data = make_tiny("gemma3_text"), _data()
    root = tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first = _read_all(Store.open(root))
    files = _chunk_files(root)
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    files[2].unlink()
    with pytest.raises(StoreError, match=r"incomplete \(3/4 chunks\).*`riskscope cache`"):
        Store.open(root)
    stats = cache_activations(lm, data, root, _cfg())
    assert (stats.chunks_written, stats.chunks_done_before) == (1, 3)
    after = {p.name: p.stat().st_mtime_ns for p in _chunk_files(root)}
    assert {k for k in after if after[k] != mtimes[k]} == {files[2].name}
    again = _read_all(Store.open(root))
    for key in first:
        assert np.array_equal(again[key], first[key]), key


class _Crash(Exception):
    pass


def _crash_after(n_batches: int):
    calls = []

    def progress(n, total):
        calls.append(n)
        if len(calls) == n_batches:
            raise _Crash

    return progress


def test_interrupted_run_resumes_to_identical_arrays(tmp_path):
    lm, data = make_tiny("phi3"), _data()
    cache_activations(lm, data, tmp_path / "clean", _cfg())
    root = tmp_path / "crashed"
    with pytest.raises(_Crash):  # chunk 0 has batches of 4 + 2 rows: the 3rd batch is inside chunk 1
        cache_activations(lm, data, root, _cfg(), progress=_crash_after(3))
    assert len(_chunk_files(root)) == 1
    assert json.loads((root / "manifest.json").read_text())["complete"] is False
    with pytest.raises(StoreError, match="`riskscope cache`"):
        Store.open(root)
    partial = Store.open(root, require_complete=False)
    assert partial.manifest["n_chunks"] == 4
    # a writer killed mid-chunk leaves a temporary file (and a torn final file can never appear,
    # but a foreign/garbage one is recomputed too)
    (root / "chunks" / ".000001.safetensors.4242.tmp").write_bytes(b"\0" * 100)
    (root / "chunks" / "000002.safetensors").write_bytes(b"not a safetensors file")
    stats = cache_activations(lm, data, root, _cfg())
    assert (stats.chunks_written, stats.chunks_done_before) == (3, 1)
    assert list((root / "chunks").glob(".*")) == []
    clean, resumed = _read_all(Store.open(tmp_path / "clean")), _read_all(Store.open(root))
    for key in clean:
        assert np.array_equal(resumed[key], clean[key]), key


# --- refusals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change,field", [
    ("dataset", "dataset_digest"),
    ("points", "points"),
    ("dtype", "dtype"),
    ("positions", "positions"),
    ("model", "model_weight_hash"),
    ("chunk_rows", "chunk_rows"),
])
def test_store_from_other_inputs_is_refused(tmp_path, change, field):
    lm, data, cfg = make_tiny("llama"), _data(), _cfg()
    cache_activations(lm, data, tmp_path / "s", cfg)
    other = {
        "dataset": (lm, data.limit(9), cfg),
        "points": (lm, data, _cfg(points=POINTS[:2])),
        "dtype": (lm, data, _cfg(dtype="bfloat16")),
        "positions": (lm, data, _cfg(positions="mean")),
        "model": (make_tiny("llama", seed=1), data, cfg),
        "chunk_rows": (lm, data, _cfg(chunk_rows=5)),
    }[change]
    with pytest.raises(StoreError, match=rf"other inputs \(differs in: [^)]*{field}"):
        check_store(*other[:2], tmp_path / "s", other[2])
    calls = []
    with pytest.raises(StoreError, match=rf"other inputs \(differs in: [^)]*{field}"):
        cache_activations(*other[:2], tmp_path / "s", other[2], progress=lambda n, total: calls.append(n))
    assert calls == []  # refused before any progress is reported
    assert Store.open(tmp_path / "s").manifest["inputs"]["chunk_rows"] == 6  # untouched


def test_check_store_says_whether_a_store_of_these_inputs_exists(tmp_path):
    lm, data, cfg = make_tiny("llama"), _data(3), _cfg()
    assert check_store(lm, data, tmp_path / "new", cfg) is False
    assert not (tmp_path / "new").exists()  # checking creates nothing
    cache_activations(lm, data, tmp_path / "new", cfg)
    assert check_store(lm, data, tmp_path / "new", cfg) is True
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not an activation store"):
        check_store(lm, data, tmp_path / "file", cfg)


def test_negative_and_positive_layer_spellings_are_the_same_store(tmp_path):
    lm, data = make_tiny("llama"), _data(3)
    cache_activations(lm, data, tmp_path / "s", _cfg(points=(HookPoint("resid_post", -1),)))
    stats = cache_activations(lm, data, tmp_path / "s", _cfg(points=(HookPoint("resid_post", 2),)))
    assert stats.chunks_written == 0


def test_directory_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an activation store"):
        cache_activations(make_tiny("llama"), _data(2), tmp_path, _cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_open_missing_store_says_how_to_make_one(tmp_path):
    with pytest.raises(StoreError, match="no manifest.json.*`riskscope cache`"):
        Store.open(tmp_path / "nowhere")


def test_unknown_point_is_refused(tmp_path):
    cache_activations(make_tiny("llama"), _data(2), tmp_path / "s", _cfg())
    with pytest.raises(StoreError, match="no point resid_post.1; it holds"):
        Store.open(tmp_path / "s").read("resid_post.1")


def test_text_longer_than_context_needs_truncate(tmp_path):
    lm = make_tiny("llama")  # context 64 tokens = 64 characters
    long = "x" * 50 + "y" * 30
    data = Dataset("long", (Row("a", "short one", 0), Row("b", long, 1)))
    with pytest.raises(StoreError, match=r"row 2 \(id 'b'\) has 80 tokens.*context of 64.*--truncate"):
        cache_activations(lm, data, tmp_path / "s", _cfg())
    cache_activations(lm, data, tmp_path / "t", _cfg(truncate=True))
    store = Store.open(tmp_path / "t")
    assert [r["n_tokens"] for r in store.rows] == [9, 64]
    want = _alone(lm, ["short one", long[:64]], POINTS)
    for p in store.points:
        torch.testing.assert_close(torch.from_numpy(store.read(p)), torch.stack(want[str(p)]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw,match", [
    ({"points": ()}, "no hook points"),
    ({"positions": "first"}, "positions must be"),
    ({"dtype": "int8"}, "store dtype"),
    ({"batch_size": 0}, "batch_size"),
    ({"chunk_rows": 0}, "chunk_rows"),
])
def test_bad_cache_config_is_refused(kw, match):
    with pytest.raises(StoreError, match=match):
        _cfg(**kw)
