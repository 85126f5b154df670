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
from riskscope.data import CacheConfig, Store, cache_activations, check_store, verify_store

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


# --- the manifest records and seals every chunk ----------------------------------------------------------


def _manifest(root) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _write_raw_manifest(root, m: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(m, indent=1))


def _corrupt(path, n_bytes: int = 1000, key: str = "resid_post.0", seed: int = 0) -> None:
    """Change ``n_bytes`` random bytes of one tensor's data in a chunk file (the header left intact)."""
    blob = np.frombuffer(path.read_bytes(), np.uint8).copy()
    size = int.from_bytes(blob[:8].tobytes(), "little")
    begin, end = json.loads(blob[8:8 + size].tobytes())[key]["data_offsets"]
    rng = np.random.default_rng(seed)
    at = 8 + size + rng.choice(np.arange(begin, end), size=min(n_bytes, end - begin), replace=False)
    blob[at] ^= rng.integers(1, 256, size=len(at), dtype=np.uint8)  # every chosen byte changes
    path.write_bytes(blob.tobytes())


def _mtimes(root) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in _chunk_files(root)}


@pytest.mark.parametrize("positions", ["last", "all"])
def test_manifest_records_every_chunk_and_is_sealed(tmp_path, positions):
    from riskscope._io import file_sha256
    from riskscope.data._manifest import manifest_digest

    lm, data = make_tiny("llama"), _data()
    cache_activations(lm, data, tmp_path / "s", _cfg(positions=positions))
    m = _manifest(tmp_path / "s")
    assert m["manifest_sha256"] == manifest_digest(m)
    assert [r["file"] for r in m["chunks"]] == [p.name for p in _chunk_files(tmp_path / "s")]
    assert [r["rows"] for r in m["chunks"]] == [[0, 6], [6, 12], [12, 18], [18, 20]]
    for rec in m["chunks"]:
        path = tmp_path / "s" / "chunks" / rec["file"]
        assert rec["sha256"] == file_sha256(path) and rec["bytes"] == path.stat().st_size
        with safe_open(str(path), framework="pt") as f:
            assert set(f.keys()) == set(m["arrays"])
            for key, spec in m["arrays"].items():
                assert f.get_slice(key).get_dtype() == spec["dtype"]
                n = rec["rows"][1] - rec["rows"][0]
                sizes = {"n": n, "n+1": n + 1, "tokens": rec.get("tokens")}
                assert tuple(f.get_slice(key).get_shape()) == tuple(sizes.get(d, d) for d in spec["shape"])
    if positions == "all":
        assert sum(r["tokens"] for r in m["chunks"]) == sum(len(t) for t in data.texts)
    assert verify_store(tmp_path / "s").ok


def test_chunk_replaced_by_another_is_refused_and_recomputed(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first, mtimes = _read_all(Store.open(root)), _mtimes(root)
    files = _chunk_files(root)
    files[2].write_bytes(files[1].read_bytes())  # same size: only the rows it holds betray it
    with pytest.raises(StoreError, match=r"held by 2 chunks \(000001.safetensors, 000002.safetensors\).*"
                                         r"re-run `riskscope cache` with the same arguments"):
        Store.open(root)
    report = verify_store(root)
    assert not report.ok and any("000002.safetensors: sha256" in p for p in report.problems)
    stats = cache_activations(lm, data, root, _cfg())
    assert (stats.chunks_written, stats.chunks_done_before) == (1, 3)
    after = _mtimes(root)
    assert {k for k in after if after[k] != mtimes[k]} == {files[2].name}
    again = _read_all(Store.open(root))
    assert all(np.array_equal(again[k], first[k]) for k in first)


def test_corrupted_bytes_are_refused_on_read_and_recomputed(tmp_path):
    lm, data, root = make_tiny("qwen2"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first, mtimes = _read_all(Store.open(root)), _mtimes(root)
    bad = _chunk_files(root)[1]
    _corrupt(bad)
    store = Store.open(root)  # the header is whole: the open is cheap and passes
    with pytest.raises(StoreError, match=rf"{bad}: sha256 .* differs from the manifest.*re-run `riskscope cache` "
                                         r"with the same arguments to recompute it"):
        store.read(store.points[0])
    assert [p for p in verify_store(root, full=False).problems] == []  # structure only
    assert any(str(bad) in p for p in verify_store(root).problems)
    stats = cache_activations(lm, data, root, _cfg())
    assert (stats.chunks_written, stats.chunks_done_before) == (1, 3)
    assert {k for k, v in _mtimes(root).items() if v != mtimes[k]} == {bad.name}
    again = _read_all(Store.open(root))
    assert all(np.array_equal(again[k], first[k]) for k in first)


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage", "wrong dtype"])
def test_torn_or_foreign_chunk_is_refused_on_open_and_recomputed(tmp_path, damage):
    from safetensors.torch import save_file

    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first = _read_all(Store.open(root))
    bad = _chunk_files(root)[3]
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-100])
    elif damage == "foreign":
        save_file({"weight": torch.zeros(3, 3)}, str(bad))
    elif damage == "garbage":
        bad.write_bytes(b"\x08" + bytes(range(256)) * 4)
    else:
        with safe_open(str(bad), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file({k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}, str(bad))
    with pytest.raises(StoreError, match=rf"^{bad}: .*; re-run `riskscope cache` with the same arguments"):
        Store.open(root)
    assert not verify_store(root, full=False).ok
    stats = cache_activations(lm, data, root, _cfg())
    assert (stats.chunks_written, stats.chunks_done_before) == (1, 3)
    again = _read_all(Store.open(root))
    assert all(np.array_equal(again[k], first[k]) for k in first)


def test_partial_store_reads_missing_rows_as_nan(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    with pytest.raises(_Crash):
        cache_activations(lm, data, root, _cfg(), progress=_crash_after(3))
    store = Store.open(root, require_complete=False)
    held = np.zeros(len(data), bool)
    with safe_open(str(_chunk_files(root)[0]), framework="pt") as f:
        held[f.get_tensor("row_index").numpy()] = True
    x = store.read(store.points[0])
    assert np.isfinite(x[held]).all() and np.isnan(x[~held]).all()


@pytest.mark.parametrize("edit", ["weight_hash", "weight_hash everywhere", "n_chunks", "complete", "dataset name",
                                  "chunk sha256", "points"])
def test_edited_manifest_is_refused(tmp_path, edit):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    m = _manifest(root)
    if edit == "weight_hash":
        m["model"]["weight_hash"] = "0" * 64
    elif edit == "weight_hash everywhere":  # a careful forger: both copies and the fingerprint
        from riskscope.data._manifest import fingerprint_of

        m["model"]["weight_hash"] = m["inputs"]["model_weight_hash"] = "0" * 64
        m["fingerprint"] = fingerprint_of(m["inputs"])
    elif edit == "n_chunks":
        m["n_chunks"] = 3
    elif edit == "complete":
        m["complete"] = not m["complete"]
    elif edit == "dataset name":
        m["dataset"]["name"] = "other"
    elif edit == "chunk sha256":
        m["chunks"][0]["sha256"] = "0" * 64
    else:
        m["points"] = m["points"][:2]
    _write_raw_manifest(root, m)
    with pytest.raises(StoreError, match=r"manifest.json: the manifest was edited after riskscope wrote it"):
        Store.open(root)
    assert not verify_store(root).ok
    with pytest.raises(StoreError, match="edited"):  # the writer does not build on an edited manifest either
        cache_activations(lm, data, root, _cfg())


def _as_legacy(root) -> dict:
    """Turn a store into what riskscope wrote before per-chunk records (same keys, minus the new ones)."""
    m = _manifest(root)
    for key in ("chunks", "arrays", "manifest_sha256"):
        del m[key]
    _write_raw_manifest(root, m)
    return m


def test_store_written_before_chunk_records_still_opens_and_gains_them(tmp_path):
    lm, data, root = make_tiny("gpt2"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first, mtimes = _read_all(Store.open(root)), _mtimes(root)
    legacy = _as_legacy(root)
    assert all(np.array_equal(x, first[k]) for k, x in _read_all(Store.open(root)).items())
    report = verify_store(root)
    assert report.ok and report.chunks == 4 and report.rows == 20
    assert any("before per-chunk hashes" in n for n in report.notes)
    # what can be checked without hashes still is: a chunk from another place, NaN values, an edited field
    stats = cache_activations(lm, data, root, _cfg())  # the same command adds the records, computes nothing
    assert (stats.chunks_written, stats.chunks_done_before) == (0, 4) and _mtimes(root) == mtimes
    assert len(_manifest(root)["chunks"]) == 4 and verify_store(root).notes == ()
    _write_raw_manifest(root, {**legacy, "n_chunks": 3})
    with pytest.raises(StoreError, match="'n_chunks' disagrees"):
        Store.open(root)


def test_legacy_store_with_nan_chunk_is_refused_on_read_and_recomputed(tmp_path):
    from safetensors.torch import save_file

    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    first = _read_all(Store.open(root))
    _as_legacy(root)
    bad = _chunk_files(root)[0]
    with safe_open(str(bad), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["resid_post.0"][1, 3] = float("nan")
    save_file(tensors, str(bad))
    store = Store.open(root)
    with pytest.raises(StoreError, match=rf"{bad}: tensor 'resid_post.0' holds 1 non-finite"):
        store.read("resid_post.0")
    assert cache_activations(lm, data, root, _cfg()).chunks_written == 1
    again = _read_all(Store.open(root))
    assert all(np.array_equal(again[k], first[k]) for k in first)


def test_edited_rows_are_refused_and_rewritten(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    cache_activations(lm, data, root, _cfg())
    path = root / "rows.jsonl"
    good = path.read_bytes()
    rows = [json.loads(line) for line in good.decode().splitlines()]
    rows[4]["label"] = 1 - rows[4]["label"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(StoreError, match=r"rows.jsonl: the rows do not match the dataset digest.*rewrite it"):
        Store.open(root)
    assert cache_activations(lm, data, root, _cfg()).chunks_written == 0
    assert path.read_bytes() == good and Store.open(root).labels.tolist() == data.labels.tolist()


def test_text_with_line_separator_survives_the_store(tmp_path):
    lm = make_tiny("llama")
    data = Dataset("seps", (Row("a", "one\u2028two", 1), Row("b", "three\x85four", 0)))
    cache_activations(lm, data, tmp_path / "s", _cfg())
    assert Store.open(tmp_path / "s").texts == data.texts


# --- leftovers, refusals before anything exists, replaceable skeletons ----------------------------------------


def test_resume_deletes_only_riskscopes_own_temp_files(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    with pytest.raises(_Crash):
        cache_activations(lm, data, root, _cfg(), progress=_crash_after(3))
    ours = [root / "chunks" / ".tmpAb3dE9", root / "chunks" / ".000001.safetensors.4242.tmp",
            root / ".manifest.json.77.tmp", root / ".rows.jsonl.77.tmp"]
    theirs = [root / "chunks" / "notes.txt", root / "chunks" / ".tmpfoo", root / "chunks" / ".tmpAb3dE9x",
              root / "chunks" / ".other.safetensors.1.tmp", root / "mine.tmp", root / ".manifest.json.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"\0" * 10)
    assert any("temporary" in n for n in verify_store(root).notes)
    cache_activations(lm, data, root, _cfg())
    assert [p for p in ours if p.exists()] == [] and all(p.exists() for p in theirs)
    Store.open(root)


def test_bad_positions_are_refused_before_anything_is_created(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    shortest = min(range(len(data)), key=lambda i: len(data.texts[i]))
    for positions in [(9999,), (0, -5)]:
        for call in (check_store, cache_activations):
            with pytest.raises(StoreError, match=rf"positions \[{positions[-1] if positions[0] == 0 else 9999}\] fall "
                                                 rf"outside row {shortest + 1} \(id '{data.ids[shortest]}'\), which "
                                                 rf"has 4 tokens"):
                call(lm, data, root, _cfg(positions=positions))
            assert not root.exists()
    cache_activations(lm, data, root, _cfg(positions=(0, -1)))  # the corrected command
    assert Store.open(root).read("resid_post.0").shape == (20, 2, 32)


def test_store_whose_first_chunk_never_finished_is_replaced_by_another_command(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    with pytest.raises(_Crash):  # a failure inside the first chunk (an out-of-memory, a ^C)
        cache_activations(lm, data, root, _cfg(batch_size=6), progress=_crash_after(1))
    assert (root / "manifest.json").is_file() and _chunk_files(root) == []
    (root / "chunks" / ".tmpZZ12ab").write_bytes(b"half")
    assert check_store(lm, data, root, _cfg()) is False  # another command: no refusal
    stats = cache_activations(lm, data, root, _cfg())
    assert stats.chunks_written == 4
    assert Store.open(root).manifest["inputs"]["batch_size"] == 4
    assert list((root / "chunks").glob(".*")) == []


def test_directory_with_only_leftover_temp_files_is_usable(tmp_path):
    root = tmp_path / "s"
    (root / "chunks").mkdir(parents=True)
    (root / ".manifest.json.12.tmp").write_text("{")
    (root / "chunks" / ".tmpQwErTy").write_bytes(b"x")
    cache_activations(make_tiny("llama"), _data(2), root, _cfg())
    assert sorted(p.name for p in root.rglob("*")) == ["000000.safetensors", "chunks", "manifest.json", "rows.jsonl"]


def test_verify_store_reports_instead_of_raising(tmp_path):
    lm, data, root = make_tiny("llama"), _data(), tmp_path / "s"
    missing = verify_store(tmp_path / "nowhere")
    assert (missing.ok, missing.chunks, missing.rows) == (False, 0, 0) and "no manifest.json" in missing.problems[0]
    cache_activations(lm, data, root, _cfg())
    good = verify_store(root)
    assert good.ok and (good.chunks, good.rows, good.problems) == (4, 20, ())
    assert json.loads(json.dumps(good.to_dict())) == {"path": str(root), "ok": True, "problems": [], "chunks": 4,
                                                      "rows": 20, "notes": []}
    files = _chunk_files(root)
    files[0].unlink()
    _corrupt(files[2])
    files[3].write_bytes(b"junk")
    report = verify_store(root)
    assert not report.ok and report.chunks == 3
    named = " ".join(report.problems)
    assert "incomplete (3/4 chunks)" in named and str(files[2]) in named and str(files[3]) in named
    assert all("riskscope cache" in p for p in report.problems)


def test_text_that_cannot_fit_is_refused_before_it_is_tokenised(tmp_path, monkeypatch):
    import dataclasses

    from riskscope.errors import DatasetError

    from test_datasets import real_tokenizer

    lm = dataclasses.replace(make_tiny("llama"), tokenizer=real_tokenizer())  # context 64 tokens
    data = Dataset("long", (Row("a", "short one", 0), Row("b", "risky " * 100_000, 1)))

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised")

    monkeypatch.setattr(type(lm.tokenizer), "__call__", no_tokenising)
    for call in (check_store, cache_activations):
        with pytest.raises(DatasetError, match=r"^dataset long: row 2 \(id 'b'\) has 600,000 characters, so at least "
                                               r".*more than the model context of 64; shorten it or pass --truncate"):
            call(lm, data, tmp_path / "s", _cfg())
    assert not (tmp_path / "s").exists()
