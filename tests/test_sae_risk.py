"""Risk features: the statistics against scipy and planted effects, the analysis end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats as st

from conftest import make_tiny
from riskscope.cli import main
from riskscope.data import load_dataset
from riskscope.hooks import HookPoint, intervene, run_batch, capture, pad_batch
from riskscope.sae import (
    FeatureAblation, RiskConfig, SparseAutoencoder, benjamini_hochberg, cosine_null, grouped_probe_auc,
    paired_feature_stats, risk_features, sae_point, save_saelens, signed_rank_test,
)


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(0).uniform(size=200) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), st.false_discovery_control(p), rtol=1e-12)


def test_signed_rank_matches_scipy_normal_approximation():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1, size=(40, 5))
    d[:7, 2] = 0.0  # zeros are dropped, as with zero_method="wilcox"
    _, p = signed_rank_test(d)
    for j in range(5):
        ref = st.wilcoxon(d[:, j], zero_method="wilcox", correction=True, method="approx").pvalue
        assert p[j] == pytest.approx(ref, rel=1e-9)


def test_planted_latent_is_found_and_nulls_are_controlled():
    rng = np.random.default_rng(2)
    P, F = 120, 300
    benign = rng.exponential(1.0, size=(P, F)) * (rng.uniform(size=(P, F)) < 0.3)
    risky = rng.exponential(1.0, size=(P, F)) * (rng.uniform(size=(P, F)) < 0.3)
    risky[:, 7] += 1.0  # one latent is reliably higher on the risky twin
    s = paired_feature_stats(risky, benign, n_boot=300, seed=0)
    assert s["q"][7] < 1e-6 and s["ci_low"][7] > 0
    assert (s["q"][np.arange(F) != 7] <= 0.05).sum() <= 3  # FDR 5 %: a few false calls at most
    assert np.all(s["ci_low"] <= s["mean_diff"] + 1e-12) and np.all(s["mean_diff"] <= s["ci_high"] + 1e-12)


def test_cosine_null_finds_a_planted_row():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(500, 64))
    v = W[42] + 0.05 * rng.normal(size=64)
    c = cosine_null(W, v, n_random=200)
    assert int(np.argmax(np.abs(c["cos_F"]))) == 42 and c["p_max"] < 0.01
    null = cosine_null(W, rng.normal(size=64), n_random=200)
    assert null["max_abs_cos"] < 0.99 and null["p_max"] > 0.001


def test_sparse_probe_on_an_informative_latent_matches_the_dense_probe():
    rng = np.random.default_rng(4)
    P = 80
    groups = np.repeat(np.arange(P), 2)
    y = np.tile([1, 0], P)
    X = rng.normal(size=(2 * P, 10)) + y[:, None] * np.r_[1.5, np.zeros(9)]
    Z = np.abs(rng.normal(size=(2 * P, 40)))
    Z[:, 3] = np.maximum(X[:, 0], 0)
    r = grouped_probe_auc(X, Z, y, groups, ks=(1, 4), n_folds=4, n_boot=200)["probes"]
    assert r["dense"]["auc"] > 0.8 and r["sae_top1"]["auc"] > 0.75 and r["sae_random1"]["auc"] < 0.7
    assert all(fold == [3] for fold in r["sae_top1"]["latents_per_fold"])
    lo, hi = r["sae_top1"]["ci"]
    assert lo <= r["sae_top1"]["auc"] <= hi


def test_feature_ablation_removes_exactly_that_latents_contribution():
    lm = make_tiny("llama")
    sae = SparseAutoencoder(32, 64, "relu", seed=1).requires_grad_(False)
    point = HookPoint("resid_post", 1)
    ids, mask = pad_batch([[3, 4, 5, 6, 7], [8, 9, 10]], 0, "right", lm.device)
    with torch.no_grad(), capture(lm, [point], "all") as clean:
        run_batch(lm, ids, mask)
    x = clean[point.normalised(lm)].reshape(-1, 32)
    f = int(sae.encode(x).sum(0).argmax())
    op = FeatureAblation(point, sae, f)
    edited = op(x)
    expect = x - sae.encode(x)[:, f:f + 1] * sae.W_dec[f]
    torch.testing.assert_close(edited, expect)
    assert float(sae.encode(edited)[:, f].abs().max()) < float(sae.encode(x)[:, f].max())
    with torch.no_grad(), intervene(lm, [op]):  # usable as a scoped hook operation
        run_batch(lm, ids, mask)


@pytest.fixture(scope="module")
def tiny_risk():
    torch.set_num_threads(1)
    lm = make_tiny("llama")
    sae = SparseAutoencoder(32, 128, "topk", k=8, seed=0).requires_grad_(False)
    ds = load_dataset("cyber_risk_pairs").limit(24)
    cfg = RiskConfig(n_boot=100, effect_texts=6, n_random_features=2, n_random_directions=100, ks=(1, 4), folds=3)
    return lm, sae, risk_features(lm, sae, HookPoint("resid_post", 1), ds, cfg)


def test_risk_features_end_to_end_is_complete_and_json_ready(tiny_risk):
    _, _, res = tiny_risk
    s = json.loads(json.dumps(res.to_dict()))
    assert s["pairs"] == 24 and s["d_sae"] == 128
    assert set(s["sparse_probe"]["probes"]) == {"dense", "sae_top1", "sae_top4", "sae_random1", "sae_random4"}
    assert all(-1 <= r["cos_probe"] <= 1 for r in s["paired"]["up"] + s["probe_direction"]["top_by_cos"])
    assert res.stats["q"].shape == (128,) and np.all(res.stats["q"] >= res.stats["p"] - 1e-12)
    cl = s["clamp"]
    assert cl["top_feature"] == s["paired"]["up"][0]["feature"] and len(cl["random_features"]) == 2
    assert cl["top_feature"] not in cl["random_features"]
    assert all(k >= 0 for k in [cl["add"]["kl"]["top"], *cl["add"]["kl"]["random"]])
    assert cl["add"]["kl"]["top"] > 0  # adding a direction moves the next token
    assert len(s["reading"]) == 5 and all(isinstance(x, str) and x for x in s["reading"])


def test_risk_features_refuse_unpaired_data(tiny_risk):
    from riskscope.data import Dataset, Row
    lm, sae, _ = tiny_risk
    ds = Dataset("x", tuple(Row(id=str(i), text=f"text number {i}", label=i % 2) for i in range(30)))
    with pytest.raises(Exception, match="pairs"):
        risk_features(lm, sae, HookPoint("resid_post", 1), ds)


def test_sae_point_reads_riskscope_and_transformerlens_names(tmp_path):
    assert sae_point({"metadata": {"riskscope": {"point": "mlp_out.3"}}}) == HookPoint("mlp_out", 3)
    assert sae_point({"metadata": {"hook_name": "blocks.7.hook_resid_post"}}) == HookPoint("resid_post", 7)
    with pytest.raises(Exception, match="hook_name"):
        sae_point({"metadata": {"hook_name": "blocks.7.attn.hook_z"}})


def test_cli_risk_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    sae = SparseAutoencoder(32, 64, "topk", k=4)
    save_saelens(sae, tmp_path / "s", {"hook_name": "blocks.1.hook_resid_post"})
    code, text = _cli(["sae", "risk", str(tmp_path / "s"), "--ks", "a,b"], capsys)
    assert code == 2 and "--ks" in text and "Traceback" not in text
    assert not (tmp_path / "s" / "risk.json").exists()


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    got = capsys.readouterr()
    return e.value.code, got.out + got.err
