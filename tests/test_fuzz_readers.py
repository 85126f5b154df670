"""Fuzzing the readers: whatever the bytes, they return or raise riskscope's own error, nothing else.

Dataset files (JSONL and CSV), ``iter_jsonl``, a store's ``manifest.json`` and ``rows.jsonl``
(random JSON, random bytes, a real manifest with one field replaced, sealed again or not) and
chunk files of random bytes or random safetensors headers. Bounded and derandomised in the
fast tier; ``RISKSCOPE_FUZZ_EXAMPLES=5000 RISKSCOPE_FUZZ_RANDOM=1`` explores further.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskscope._io import iter_jsonl
from riskscope.data import CacheConfig, Dataset, Row, Store, cache_activations, load_dataset, verify_store
from riskscope.errors import RiskscopeError
from riskscope.hooks import HookPoint

from conftest import make_tiny

_EXAMPLES = int(os.environ.get("RISKSCOPE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=_EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("RISKSCOPE_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
FUZZ_STORE = settings(FUZZ, max_examples=max(1, _EXAMPLES // 2))  # x2 stores (last, all): 200 examples a reader

scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=-2 ** 70, max_value=2 ** 70) \
    | st.floats() | st.text(max_size=12) | st.sampled_from(["", " ", "1", "0", "risky", "2.7", "3.0", "NaN", "\ud800"])
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=4), max_leaves=16)
FIELDS = ["text", "label", "pair_id", "category", "severity", "id", "split", "risky", "benign"]
records = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4),
                          json_values | st.sampled_from([1, 0, True, "benign", "high", 3, 2.7, 1.0]) | st.text(min_size=1),
                          max_size=8)


def _dump(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "{}"


def _lines(draw_records: list, junk: list[str]) -> str:
    return "\n".join([_dump(r) for r in draw_records] + junk)


def _check_dataset(data: Dataset) -> None:
    """What a loaded dataset promises whatever the file held."""
    assert len(data) >= 1
    for r in data.rows:
        assert isinstance(r.text, str) and r.text.strip() and r.label in (0, 1)
        assert r.severity is None or (isinstance(r.severity, int) and not isinstance(r.severity, bool))
    data.digest()
    data.summary()


def _load(tmp: Path, name: str, content: bytes) -> None:
    path = tmp / name
    path.write_bytes(content)
    try:
        _check_dataset(load_dataset(str(path)))
    except RiskscopeError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)


# --- datasets ------------------------------------------------------------------------------------------


@FUZZ
@given(recs=st.lists(records, max_size=6), junk=st.lists(st.text(max_size=20), max_size=2))
def test_jsonl_dataset_records(recs, junk):
    with tempfile.TemporaryDirectory() as tmp:
        _load(Path(tmp), "d.jsonl", _lines(recs, junk).encode("utf-8", "surrogatepass"))


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from(["d.jsonl", "d.csv"]))
def test_dataset_random_bytes(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        _load(Path(tmp), suffix, content)


cells = st.text(max_size=10) | st.sampled_from(["1", "0", "risky", "2.7", "3", "p1", "", '"', "a,b", "x\ny", "\r"])


@FUZZ
@given(header=st.lists(st.sampled_from(FIELDS) | st.text(max_size=4), min_size=1, max_size=6),
       rows=st.lists(st.lists(cells, max_size=7), max_size=6), raw=st.text(alphabet='ab,"\n\r 01\x00', max_size=80))
def test_csv_dataset(header, rows, raw):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        _load(Path(tmp), "d.csv", (buf.getvalue() + raw).encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=st.text(max_size=200) | st.builds(_lines, st.lists(json_values, max_size=4), st.just([])),
       objects=st.booleans())
def test_iter_jsonl(text, objects):
    try:
        for n, value in iter_jsonl(text, "f.jsonl", objects=objects):
            assert n >= 1 and (not objects or isinstance(value, dict))
    except RiskscopeError as e:
        assert str(e).startswith("f.jsonl:")


# --- the store ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["last", "all"])
def base_store(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "store"
    rows = tuple(Row(f"r{i}", f"text number {i}" + "!" * i, i % 2, f"p{i // 2}", severity=i % 3) for i in range(6))
    cfg = CacheConfig(points=(HookPoint("resid_post", 0), HookPoint("mlp_neurons", 1)), positions=request.param,
                      batch_size=2, chunk_rows=2)
    cache_activations(make_tiny("llama"), Dataset("fuzz", rows), root, cfg)
    return root


def _exercise(root: Path) -> None:
    """Open, read everything and verify: only StoreError (a RiskscopeError) may come out."""
    report = verify_store(root, full=True)  # never raises
    assert isinstance(report.ok, bool) and all(isinstance(p, str) for p in report.problems)
    json.dumps(report.to_dict())
    for complete in (True, False):
        try:
            store = Store.open(root, require_complete=complete)
            for p in store.manifest["points"]:
                if store.manifest["positions"] == "all":
                    got = store.read_tokens(p)
                    assert all(x is None or np.isfinite(x).all() for x in got)
                else:
                    x = store.read(p)
                    assert complete is False or np.isfinite(x).all()
            store.labels, store.texts, store.pair_ids, store.points
        except RiskscopeError:
            pass


def _copy(base: Path, tmp: str) -> Path:
    root = Path(tmp) / "store"
    shutil.copytree(base, root)
    return root


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    out = dict(value) if isinstance(value, dict) else list(value)
    out[path[0]] = _replace(value[path[0]], path[1:], new)
    return out


@FUZZ_STORE
@given(data=st.data())
def test_manifest(base_store, data):
    from riskscope.data._manifest import manifest_digest

    manifest = json.loads((base_store / "manifest.json").read_text())
    kind = data.draw(st.sampled_from(["random json", "random bytes", "one field", "one field, resealed"]))
    if kind == "random json":
        content = _dump(data.draw(json_values)).encode("utf-8", "surrogatepass")
    elif kind == "random bytes":
        content = data.draw(st.binary(max_size=300))
    else:
        paths = [p for p in _paths(manifest) if p]
        m = _replace(manifest, data.draw(st.sampled_from(paths)), data.draw(json_values))
        if kind.endswith("resealed") and isinstance(m, dict):
            m["manifest_sha256"] = manifest_digest(m) if data.draw(st.booleans()) else m.pop("manifest_sha256", 0)
        content = _dump(m).encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base_store, tmp)
        (root / "manifest.json").write_bytes(content)
        _exercise(root)


@FUZZ_STORE
@given(data=st.data())
def test_rows(base_store, data):
    lines = (base_store / "rows.jsonl").read_text().splitlines()
    kind = data.draw(st.sampled_from(["random lines", "random bytes", "one field"]))
    if kind == "random lines":
        content = _lines(data.draw(st.lists(json_values, max_size=8)), []).encode("utf-8", "surrogatepass")
    elif kind == "random bytes":
        content = data.draw(st.binary(max_size=300))
    else:
        i = data.draw(st.integers(0, len(lines) - 1))
        row = json.loads(lines[i])
        row[data.draw(st.sampled_from(sorted(row)) | st.text(max_size=4))] = data.draw(json_values)
        lines[i] = _dump(row)
        content = "\n".join(lines).encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base_store, tmp)
        (root / "rows.jsonl").write_bytes(content)
        _exercise(root)


tensor_specs = st.dictionaries(
    st.sampled_from(["row_index", "resid_post.0", "mlp_neurons.1", "token_offsets", "__metadata__"]) | st.text(max_size=5),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "I64", "BF16", "F16", "U8", "BOOL", "X"]),
                           "shape": st.lists(st.integers(-2, 40), max_size=3),
                           "data_offsets": st.lists(st.integers(-4, 4000), min_size=2, max_size=2)}) | json_values,
    max_size=5)


@FUZZ_STORE
@given(data=st.data())
def test_chunk_file(base_store, data):
    kind = data.draw(st.sampled_from(["random bytes", "random header", "random header, unrecorded"]))
    if kind == "random bytes":
        content = data.draw(st.binary(max_size=400))
    else:
        header = _dump(data.draw(tensor_specs)).encode("utf-8", "surrogatepass")
        content = struct.pack("<Q", len(header)) + header + data.draw(st.binary(max_size=400))
    which = data.draw(st.integers(0, 2))
    with tempfile.TemporaryDirectory() as tmp:
        root = _copy(base_store, tmp)
        (root / "chunks" / f"{which:06d}.safetensors").write_bytes(content)
        if kind.endswith("unrecorded"):  # as a store written before per-chunk records: the header is parsed
            m = json.loads((root / "manifest.json").read_text())
            for key in ("chunks", "arrays", "manifest_sha256"):
                m.pop(key)
            (root / "manifest.json").write_text(json.dumps(m))
        _exercise(root)
