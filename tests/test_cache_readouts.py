"""Readouts (last, mean, max, span) cached from one forward, stored per array, read back by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from riskscope.data import CacheConfig, Dataset, Row, Store, cache_activations, verify_store
from riskscope.errors import StoreError
from riskscope.hooks import HookPoint, capture, capture_texts, differing_tokens, run_texts

from conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

_PAIRS = [
    ("the clerk mailed the list home", "the clerk mailed the list to the office"),
    ("kept old keys", "rotated keys"),
    ("ran the attachment", "scanned the attachment first"),
    ("left debug on", "turned debug off"),
]
POINTS = (HookPoint("resid_post", 0), HookPoint("resid_post", 2), HookPoint("mlp_neurons", 1))


def _data() -> Dataset:
    rows = []
    for k, (risky, benign) in enumerate(_PAIRS):
        rows.append(Row(f"p{k}:r", risky, 1, f"p{k}"))
        rows.append(Row(f"p{k}:b", benign, 0, f"p{k}"))
    return Dataset(name="pairs", rows=tuple(rows))


def _tokens(lm, text):
    return lm.tokenizer([text])["input_ids"][0]


def _alone_all(lm, text, point):
    with capture(lm, [point], "all") as got:
        run_texts(lm, [text])
    return got[point][0]  # (T, W)


def test_readouts_equal_each_text_run_alone(tmp_path):
    lm = make_tiny("llama")
    data = _data()
    cfg = CacheConfig(points=POINTS, batch_size=3, chunk_rows=5, readouts=("mean", "max", "span"),
                      readout_hooks=("resid_post",))
    cache_activations(lm, data, tmp_path / "s", cfg)
    store = Store.open(tmp_path / "s")
    assert store.readouts("resid_post.2") == ["last", "mean", "max", "span"]
    assert store.readouts("mlp_neurons.1") == ["last"]
    with pytest.raises(StoreError, match="no readout 'mean' of mlp_neurons.1"):
        store.read(HookPoint("mlp_neurons", 1), readout="mean")
    arrays = json.loads((tmp_path / "s" / "manifest.json").read_text())["arrays"]
    assert arrays["resid_post.2@span"]["readout"] == "span" and arrays["resid_post.2"]["readout"] == "last"
    p = HookPoint("resid_post", 2)
    read = {r: store.read(p, readout=r) for r in ("last", "mean", "max", "span")}
    for i, row in enumerate(data.rows):
        x = _alone_all(lm, row.text, p).float().numpy()
        twin = data.rows[i ^ 1].text
        diff = np.array(differing_tokens(_tokens(lm, row.text), _tokens(lm, twin)))
        want = {"last": x[-1], "mean": x.mean(0), "max": x.max(0), "span": x[diff].mean(0)}
        for r, w in want.items():
            np.testing.assert_allclose(read[r][i], w, rtol=1e-4, atol=1e-5, err_msg=f"{r} row {i}")
    assert verify_store(tmp_path / "s").ok


def test_store_without_extra_readouts_keeps_its_layout(tmp_path):
    lm = make_tiny("llama")
    cache_activations(lm, _data(), tmp_path / "s", CacheConfig(points=POINTS, chunk_rows=5))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert "readouts" not in m and "readouts" not in m["inputs"]
    assert all("readout" not in spec for spec in m["arrays"].values())
    store = Store.open(tmp_path / "s")
    assert store.readouts("resid_post.0") == ["last"]
    np.testing.assert_array_equal(store.read("resid_post.0", readout="last"), store.read("resid_post.0"))


def test_single_text_span_is_the_mean():
    lm = make_tiny("llama")
    texts = [t for pair in _PAIRS for t in pair]
    p = HookPoint("resid_post", 1)
    mean = capture_texts(lm, texts, [p], readout="mean")[p]
    span = capture_texts(lm, texts, [p], readout="span")[p]
    np.testing.assert_array_equal(mean, span)
    x = _alone_all(lm, texts[0], p).float().numpy()
    np.testing.assert_allclose(capture_texts(lm, texts, [p], readout="max")[p][0], x.max(0), rtol=1e-5, atol=1e-6)


def test_mean_leaves_out_special_tokens():
    lm = make_tiny("llama")
    lm.tokenizer.all_special_ids = [1 + (ord("k") % 59)]  # pretend 'k' is a special token
    p = HookPoint("resid_post", 1)
    text = "kept old keys"
    got = capture_texts(lm, [text], [p], readout="mean")[p][0]
    x = _alone_all(lm, text, p).float().numpy()
    keep = np.array([c != "k" for c in text])
    np.testing.assert_allclose(got, x[keep].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,match", [
    (dict(readouts=("median",)), "unknown readout 'median'"),
    (dict(readouts=("mean", "mean")), "distinct"),
    (dict(readouts=("mean",), positions="mean"), "beside positions 'last'"),
])
def test_bad_readouts_are_refused(kw, match):
    with pytest.raises(StoreError, match=match):
        CacheConfig(points=POINTS, **kw)


def test_edited_readouts_field_is_refused(tmp_path):
    lm = make_tiny("llama")
    cache_activations(lm, _data(), tmp_path / "s", CacheConfig(points=POINTS, chunk_rows=5, readouts=("mean",)))
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    m["readouts"] = {"mean": ["resid_post.0"]}
    m.pop("manifest_sha256")
    path.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="readouts"):
        Store.open(tmp_path / "s")


def test_differing_tokens():
    assert differing_tokens([1, 2, 3], None) == [True, True, True]
    assert differing_tokens([1, 2, 3], [1, 2, 3]) == [False, False, False]
    assert differing_tokens([5, 1, 2], [1, 2]) == [True, False, False]
