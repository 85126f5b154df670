"""Feature universality: the streamed correlations, pairing, junk rules, paired-decoder nulls, tiny SAEs, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import TinyTokenizer, make_tiny

from riskscope.compare import (FeatureCompareConfig, FeatureComparison, LatentStats, best_matches, compare_features,
                               junk_reasons, open_sae, paired_rsa, paired_svcca)
from riskscope.errors import RiskscopeError
from riskscope.sae import SparseAutoencoder, save_saelens

HOOK = "blocks.1.hook_resid_post"
TEXTS = [f"text {i}: " + " ".join(w * (1 + i % 3) for w in "abcdefghij"[i % 5:]) + f" end {i * 7}" for i in range(24)]
LENIENT = dict(min_fires=1, max_density=1.0, max_token_share=1.0, max_first_share=1.0, max_row_share=1.0)


class OtherTokenizer(TinyTokenizer):
    """Another tokenizer (other ids for the same characters)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[1 + (ord(c) * 7 % 53) for c in t] for t in texts]}


def _other(lm):
    return dataclasses.replace(lm, tokenizer=OtherTokenizer(), model_id="tiny-other")


def _sae(seed=0, d_in=32, d_sae=64):
    """A random ReLU SAE (on a tiny model's few distinct tokens a TopK one leaves most latents silent)."""
    sae = SparseAutoencoder(d_in, d_sae, "relu", seed=seed)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=torch.Generator().manual_seed(seed + 100)) * 0.1)
    return sae


def _save(sae, path, model="tiny-llama", hook=HOOK):
    save_saelens(sae, path, {"model_name": model, "hook_name": hook})
    return path


def _permuted(sae, perm):
    out = _sae(seed=99, d_in=sae.d_in, d_sae=sae.d_sae)
    with torch.no_grad():
        out.W_dec.copy_(sae.W_dec[perm])
        out.W_enc.copy_(sae.W_enc[:, perm])
        out.b_enc.copy_(sae.b_enc[perm])
        out.b_dec.copy_(sae.b_dec)
    return out


@pytest.fixture(scope="module")
def lm():
    return make_tiny("llama")


# --- streamed statistics ------------------------------------------------------------------------------------------


def test_streamed_correlations_equal_direct_computation():
    rng = np.random.default_rng(0)
    za = np.maximum(rng.normal(size=(300, 12)) - 0.8, 0)
    zb = np.maximum(za[:, rng.permutation(12)] + 0.3 * rng.normal(size=(300, 12)) - 0.5, 0)
    zb = np.concatenate([zb, np.maximum(rng.normal(size=(300, 5)) - 1, 0)], 1)
    st = LatentStats(12, 17, contexts=3)
    for s in range(0, 300, 37):  # uneven minibatches
        st.update(torch.from_numpy(za[s:s + 37]).float(), torch.from_numpy(zb[s:s + 37]).float())
    ref = np.corrcoef(za.T, zb.T)[:12, 12:]
    np.testing.assert_allclose(st.correlations(np.arange(12)), ref, atol=1e-5)
    best, corr, mutual = best_matches(st, chunk=5)
    np.testing.assert_array_equal(best, ref.argmax(1))
    np.testing.assert_allclose(corr, ref.max(1), atol=1e-5)
    np.testing.assert_array_equal(st.fires_a, (za > 0).sum(0))
    top = np.sort(za.astype(np.float32), 0)[::-1][:3].T
    np.testing.assert_allclose(st.top_val_a, top, rtol=1e-6)
    np.testing.assert_array_equal(st.top_row_a[:, 0], za.argmax(0))
    assert mutual.dtype == bool


def test_junk_rules():
    z = np.zeros((100, 5))
    z[::2, 0] = 1.0     # dense: half the rows
    z[:3, 1] = 1.0      # rare: 3 firings
    z[10:40, 2] = 1.0   # single token id (ids below)
    z[::10, 3] = 1.0    # first positions
    z[5:35:3, 4] = np.arange(10)  # fine
    z[50, 4] = 30.0  # ... but for one outlier row holding most of its squared activation
    ids = np.arange(100) % 50
    ids[10:40] = 7
    first = np.arange(100) % 10 == 0
    st = LatentStats(5, 5)
    st.update(torch.from_numpy(z).float(), torch.from_numpy(z).float(), ids, first)
    j = junk_reasons(st, "a", FeatureCompareConfig(min_fires=5, max_density=0.4))
    assert j["dense"].tolist() == [True, False, False, False, False]
    assert j["rare"].tolist() == [False, True, False, False, False]  # latent 4 fires 10 times (one value is 0, one outlier)
    assert st.fires_a[4] == 10
    assert j["single_token"][2] and not j["single_token"][4]
    assert j["first_position"].tolist() == [False, False, False, True, False]
    assert j["one_row"].tolist() == [False, False, False, False, True]
    assert not junk_reasons(st, "a", FeatureCompareConfig(max_row_share=1.0))["one_row"].any()


def test_paired_decoder_tests_identity_and_shuffles():
    rng = np.random.default_rng(1)
    D = rng.normal(size=(80, 16))
    Q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    sv = paired_svcca(D, 3 * D @ Q, n_shuffles=30, seed=0)
    assert sv.value == pytest.approx(1.0, abs=1e-9) and sv.p == pytest.approx(1 / 31) and sv.null_mean < 0.9
    rs = paired_rsa(D, 2 * D + 1, n_shuffles=30, seed=0)
    assert rs.value == pytest.approx(1.0, abs=1e-9) and rs.p == pytest.approx(1 / 31)
    # unrelated rows: p-values of a valid null are about uniform, so few of 10 fall below 0.05
    ps = [(paired_svcca(D, o, n_shuffles=20, seed=s).p, paired_rsa(D, o, n_shuffles=20, seed=s).p)
          for s, o in enumerate(rng.normal(size=(10, 80, 16)))]
    assert sum(p < 0.05 for p, _ in ps) <= 3 and sum(p < 0.05 for _, p in ps) <= 3
    with pytest.raises(RiskscopeError, match="at least 10 pairs"):
        paired_svcca(D[:5], D[:5])


def test_independent_latents_are_near_the_null():
    rng = np.random.default_rng(2)
    st = LatentStats(40, 40)
    for _ in range(4):
        st.update(torch.from_numpy(np.maximum(rng.normal(size=(200, 40)) - 1, 0)).float(),
                  torch.from_numpy(np.maximum(rng.normal(size=(200, 40)) - 1, 0)).float())
    from riskscope.compare import pair_features

    pr = pair_features(st, rng.normal(size=(40, 16)), rng.normal(size=(40, 16)),
                       FeatureCompareConfig(n_shuffles=50, **LENIENT))
    assert np.nanmax(pr.corr) < 0.3
    assert pr.svcca.p > 0.05 and pr.rsa.p > 0.05


# --- tiny models and SAE folders ----------------------------------------------------------------------------------


def test_identical_saes_pair_perfectly(lm, tmp_path, one_thread):
    a = open_sae(_save(_sae(0), tmp_path / "a"))
    res = compare_features(a, lm, a, lm, FeatureCompareConfig(n_shuffles=20, **LENIENT), texts=TEXTS)
    kept = res.pairing.kept_a
    assert kept.sum() >= 20
    np.testing.assert_array_equal(res.pairing.best_b[kept], np.nonzero(kept)[0])
    np.testing.assert_allclose(res.pairing.corr[kept], 1.0, atol=1e-6)
    assert res.pairing.mutual[kept].all()
    assert res.pairing.svcca.value == pytest.approx(1.0, abs=1e-6) and res.pairing.svcca.p == pytest.approx(1 / 21)
    assert res.pairing.rsa.value == pytest.approx(1.0, abs=1e-6)
    t = res.top[0]
    assert t["contexts_a"] == t["contexts_b"] and "[[" in t["contexts_a"][0]
    assert res.info["same_tokenizer"] and res.mode == "tokens" and res.pairing.n_rows == sum(len(x) for x in TEXTS)


def test_permuted_copy_is_matched_by_the_permutation(lm, tmp_path, one_thread):
    sae = _sae(0)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    a = open_sae(_save(sae, tmp_path / "a"))
    b = open_sae(_save(_permuted(sae, perm), tmp_path / "b"))
    res = compare_features(a, lm, b, lm, FeatureCompareConfig(n_shuffles=10, **LENIENT), texts=TEXTS)
    kept = res.pairing.kept_a
    inv = torch.argsort(perm).numpy()  # latent i of A is latent inv[i] of B
    np.testing.assert_array_equal(res.pairing.best_b[kept], inv[kept])
    assert res.pairing.svcca.value == pytest.approx(1.0, abs=1e-6)
    back = FeatureComparison.from_dict(json.loads(json.dumps(res.to_dict())))
    np.testing.assert_array_equal(back.pairing.best_b, res.pairing.best_b)
    assert back.summary() == res.summary()


def test_per_text_mode_across_tokenizers(tmp_path, one_thread):
    lm_a, lm_b = make_tiny("llama"), _other(make_tiny("llama", seed=1))
    a = open_sae(_save(_sae(0), tmp_path / "a"))
    b = open_sae(_save(_sae(1), tmp_path / "b"))
    with pytest.raises(RiskscopeError, match="different tokenizers.*--per-text"):
        compare_features(a, lm_a, b, lm_b, FeatureCompareConfig(), texts=TEXTS)
    res = compare_features(a, lm_a, b, lm_b, FeatureCompareConfig(per_text=True, n_shuffles=5, min_fires=2,
                                                                     max_density=1.0, max_row_share=1.0), texts=TEXTS)
    assert res.mode == "per_text" and res.pairing.n_rows == len(TEXTS)
    assert "single_token" not in res.pairing.junk_a and not res.info["same_tokenizer"]


def test_width_mismatch_refused(lm, tmp_path):
    a = open_sae(_save(_sae(0), tmp_path / "a"))
    b = open_sae(_save(_sae(0, d_in=16), tmp_path / "b"))
    with pytest.raises(RiskscopeError, match="16-wide"):
        compare_features(a, lm, b, lm, FeatureCompareConfig(), texts=TEXTS)


# --- CLI ----------------------------------------------------------------------------------------------------------


def _cli(capsys, *args):
    from riskscope.cli import app
    from riskscope.cli._common import invoke

    rc = invoke(app, list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def tiny_models(monkeypatch):
    """Model names of the tiny SAE folders load tiny models (another tokenizer for ``tiny-other``)."""
    from riskscope.cli import _common as cli_common

    loads = []

    def load(name, *a, **k):
        loads.append(name)
        return _other(make_tiny("llama", seed=1)) if name == "tiny-other" else make_tiny("llama")

    monkeypatch.setattr(cli_common, "load_lm", load)
    return loads


def test_cli_writes_json_and_offline_report(tmp_path, capsys, tiny_models, one_thread):
    a = _save(_sae(0), tmp_path / "a")
    out = tmp_path / "out"
    rc, stdout, err = _cli(capsys, "compare", "features", str(a), str(a), "--out", str(out), "--dataset",
                           "cyber_risk_pairs", "--limit", "8", "--shuffles", "5", "--min-fires", "1", "--max-density", "1",
                           "--max-token-share", "1", "--max-first-share", "1", "--max-row-share", "1",
                           "--json")
    assert rc == 0, err
    assert tiny_models == ["tiny-llama"]  # one model for two SAEs on it
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["mean_corr"] == pytest.approx(1.0, abs=1e-6) and summary["svcca"]["value"] == pytest.approx(1.0)
    res = FeatureComparison.load(out / "features.json")
    assert res.config.n_shuffles == 5
    html = (out / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "Best-matched latents" in html and "shuffled pairings" in html


@pytest.mark.parametrize("case,words", [
    ("missing", "no such SAE folder"),
    ("tokenizers", "different tokenizers"),
    ("width", "16-wide"),
    ("both", "not both"),
])
def test_cli_bad_input_one_line_nothing_written(case, words, tmp_path, capsys, tiny_models):
    a = _save(_sae(0), tmp_path / "a")
    b = {"missing": tmp_path / "nope",
         "tokenizers": tmp_path / "b",
         "width": tmp_path / "b",
         "both": a}[case]
    if case == "tokenizers":
        _save(_sae(1), b, model="tiny-other")
    if case == "width":
        _save(_sae(0, d_in=16), b)
    extra = ["--dataset", "cyber_risk_pairs", "--corpus", "pydocs"] if case == "both" else []
    out = tmp_path / "o"
    rc, _, err = _cli(capsys, "compare", "features", str(a), str(b), "--out", str(out), *extra)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err
    assert not out.exists()
