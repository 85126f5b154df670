"""Neuron ranking, direct logit attribution and batched clamping effects (tiny models; slow: the default one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from riskscope.data import Dataset, Row
from riskscope.effects import run_effects
from riskscope.errors import RiskscopeError, StoreError
from riskscope.hooks import Ablate, Add, Clamp, HookPoint, Scale, Set
from riskscope.probes import LinearReadout, Probe
from riskscope.neurons import (
    EffectsConfig, direct_logit_attribution, neuron_effects, rank_neurons, validation_rows,
)
from riskscope.data import CacheConfig, Store, cache_activations

from conftest import make_tiny

TEXTS = ["hello world", "ab", "the quick brown fox", "risk", "xyz abc de", "q"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def tiny_dataset(n_pairs: int = 12) -> Dataset:
    """Pairs whose risky member carries extra '!' characters (a signal a char-level model can see)."""
    words = ["door", "file", "mail", "code", "key", "wifi", "disk", "card", "port", "user", "app", "log", "box",
             "cam", "lan", "vpn"]
    rows = []
    for i in range(n_pairs):
        w = words[i % len(words)] + str(i)
        rows.append(Row(f"p{i}:risky", f"the {w} was open !!!", 1, f"p{i}", "cat"))
        rows.append(Row(f"p{i}:benign", f"the {w} was shut", 0, f"p{i}", "cat"))
    return Dataset("tiny", tuple(rows))


def make_store(lm, root, hooks=("resid_post", "mlp_neurons"), n_pairs: int = 12) -> Store:
    points = tuple(HookPoint(h, i) for h in hooks for i in range(lm.n_layers))
    cache_activations(lm, tiny_dataset(n_pairs), root, CacheConfig(points=points, batch_size=8))
    return Store.open(root)


def hooks_left(lm) -> list[str]:
    return [name or "<root>" for name, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


@pytest.fixture(scope="module")
def llama_store(tmp_path_factory):
    lm = make_tiny("llama")
    return lm, make_store(lm, tmp_path_factory.mktemp("store") / "s")


# --- ranking ---------------------------------------------------------------------------------------


def test_rank_neurons_orders_by_weight_and_effect(llama_store):
    lm, store = llama_store
    r = rank_neurons(store, top_k=5, heat_k=7)
    assert r.layers == (0, 1, 2)
    X = store.read("mlp_neurons.1")
    y = store.labels
    for s in r.top[1]:
        rm, bm = X[y == 1, s.neuron].mean(), X[y == 0, s.neuron].mean()
        sd = np.sqrt((X[y == 1, s.neuron].var(ddof=1) + X[y == 0, s.neuron].var(ddof=1)) / 2)  # equal class sizes
        np.testing.assert_allclose([s.risky_mean, s.benign_mean, s.effect_size], [rm, bm, (rm - bm) / sd], rtol=1e-4)
    w = [abs(s.weight) for s in r.top[1]]
    assert w == sorted(w, reverse=True) and np.isclose(w[0], np.abs(r.coef_LW[1]).max())
    assert r.heat_neurons_LK.shape == r.heat_diff_LK.shape == (3, 7)
    d = np.abs(r.heat_d_LK)
    assert np.all(d[:, :-1] >= d[:, 1:] - 1e-12)  # each heatmap row ordered by |d|
    by_d = rank_neurons(store, [2], top_k=4, by="effect")
    assert [abs(s.effect_size) for s in by_d.top[2]] == sorted((abs(s.effect_size) for s in by_d.top[2]), reverse=True)
    json.dumps(r.to_dict())
    assert r.pick_layers(2) == sorted(r.pick_layers(2)) and len(r.pick_layers(2)) == 2


def test_ranking_probe_scores_like_its_weights(llama_store):
    lm, store = llama_store
    r = rank_neurons(store, [1])
    X = store.read("mlp_neurons.1")
    z = r.probe(1).logit(X)
    assert np.corrcoef(z, store.labels)[0, 1] > 0.5  # the signal is learnable on training rows


def test_rank_neurons_errors(llama_store, tmp_path):
    lm, store = llama_store
    with pytest.raises(StoreError, match="no mlp_neurons at layer"):
        rank_neurons(store, [7])
    only_resid = make_store(lm, tmp_path / "r", hooks=("resid_post",), n_pairs=4)
    with pytest.raises(StoreError, match="holds no mlp_neurons"):
        rank_neurons(only_resid)
    with pytest.raises(RiskscopeError, match="by must be"):
        rank_neurons(store, by="size")


# --- direct logit attribution ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_direct_logit_attribution_matches_the_weights(family):
    lm = make_tiny(family)
    (a,) = direct_logit_attribution(lm, 1, [5], k=61)
    down = lm.layout.mlp_down[1].weight.detach()
    col = down[:, 5] if family != "gpt2" else down[5, :]
    norm = lm.layout.final_norm
    if family == "gpt2":
        col = col - col.mean()
        gain = norm.weight.detach()
    elif family == "gemma2":
        gain = 1 + norm.weight.detach()  # Gemma RMSNorm scales by (1 + w)
    else:
        gain = norm.weight.detach()
    want = (col * gain) @ lm.layout.unembed.weight.detach().T
    got = dict(a.boosts)
    top = int(torch.argmax(want))
    assert a.boosts[0][0] == f"<{top}>"
    np.testing.assert_allclose(got[f"<{top}>"], float(want[top]), rtol=1e-4)
    (neg,) = direct_logit_attribution(lm, 1, [5], k=3, signs=[-1.0])
    assert neg.boosts[0][0] == a.suppresses[0][0]


def test_bad_neuron_and_layer_indices_raise():
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="neuron index 48 is out of range"):
        direct_logit_attribution(lm, 0, [48])
    with pytest.raises(RiskscopeError, match="layer 5 does not exist"):
        direct_logit_attribution(lm, 5, [0])
    with pytest.raises(RiskscopeError, match="unit index out of range"):
        run_effects(lm, TEXTS, {"bad": [Clamp(HookPoint("mlp_neurons", 0), indices=(99,), value=1.0)]})
    assert hooks_left(lm) == []  # the failing intervention's hooks were removed


# --- batched effects ------------------------------------------------------------------------------


def _probe(lm, hook="resid_post", layer=2, seed=0):
    rng = np.random.default_rng(seed)
    w = HookPoint(hook, layer).width(lm)
    return Probe(estimator=LinearReadout(rng.normal(size=w), 0.1, np.zeros(w), np.ones(w)), hook=hook, layer=layer)


ALL_OPS = {
    "clamp": [Clamp(HookPoint("mlp_neurons", 1), indices=(3, 5), value=2.0)],
    "clamp_last": [Clamp(HookPoint("mlp_neurons", 1), indices=(3,), value=torch.tensor([-1.5]), positions="last")],
    "scale": [Scale(HookPoint("mlp_neurons", 2), indices=(0, 1), factor=3.0)],
    "ablate": [Ablate(HookPoint("mlp_neurons", 0), indices=(4,))],
    "add": [Add(HookPoint("resid_post", 0), vector=torch.ones(32), scale=0.5)],
    "set": [Set(HookPoint("resid_pre", 2), value=torch.zeros(32), positions=(0,))],
}


def test_batched_replay_equals_full_forwards_and_single_texts(tiny):
    probes = [_probe(tiny), _probe(tiny, "mlp_neurons", 0)]
    kw = dict(probes=probes, risk_words=[" r", "x"], top_tokens=5)
    fast = run_effects(tiny, TEXTS, ALL_OPS, batch_size=4, **kw)
    full = run_effects(tiny, TEXTS, ALL_OPS, batch_size=4, replay=False, **kw)
    one = run_effects(tiny, TEXTS, ALL_OPS, batch_size=1, replay=False, **kw)
    for name in ALL_OPS:
        for other in (full, one):
            a, b = fast[name], other[name]
            np.testing.assert_allclose(a.kl_N, b.kl_N, atol=1e-5)
            np.testing.assert_allclose(a.risk_dlogp_N, b.risk_dlogp_N, atol=1e-4)
            for k in a.probe_delta:
                np.testing.assert_allclose(a.probe_delta[k], b.probe_delta[k], atol=1e-4)
        np.testing.assert_allclose([t.mean_dlogp for t in fast[name].boosts],
                                   [t.mean_dlogp for t in one[name].boosts], atol=1e-4)
    assert np.all(fast["clamp"].probe_delta["mlp_neurons.0"] == 0)  # upstream of the clamp: untouched
    assert hooks_left(tiny) == []  # every intervention's hooks were removed


def test_effects_replay_is_used_and_verified(tiny):
    """The batch's block replay reproduces its clean forward on every family, so it is not silently replaced
    by full forwards."""
    from riskscope.effects._measure import _Batch
    from riskscope.hooks import pad_batch, tokenize

    input_ids, mask = pad_batch(tokenize(tiny, TEXTS), 0, "left")
    with torch.inference_mode():
        batch = _Batch(tiny, input_ids, mask, [_probe(tiny)], replay=True)
        assert batch.replay and batch.blocks.layers == list(range(tiny.n_layers))
        lp, scores = batch.run([Scale(HookPoint("mlp_neurons", 2), indices=(0,), factor=1.0)])
    torch.testing.assert_close(lp, batch.clean_lp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores["resid_post.2"], batch.clean_scores["resid_post.2"], atol=1e-5)
    assert hooks_left(tiny) == []


def test_identity_interventions_change_nothing():
    lm = make_tiny("qwen2")
    res = run_effects(lm, TEXTS, {"none": [], "scale1": [Scale(HookPoint("mlp_neurons", 1), indices=(2,), factor=1.0)],
                                  "add0": [Add(HookPoint("resid_post", 1), vector=torch.zeros(32))]},
                      probes=[_probe(lm)], risk_words=["a"])
    for e in res.values():
        np.testing.assert_allclose(e.kl_N, 0, atol=1e-6)
        np.testing.assert_allclose(e.probe_delta["resid_post.2"], 0, atol=1e-5)
        assert all(abs(t.mean_dlogp) < 1e-5 for t in e.boosts)


def test_effect_counts_texts_where_it_holds():
    lm = make_tiny("llama")
    e = run_effects(lm, TEXTS, {"c": [Clamp(HookPoint("mlp_neurons", 2), indices=tuple(range(20)), value=5.0)]},
                    min_prob=0.0)["c"]
    assert e.kl > 0
    assert all(0 <= t.n_texts <= len(TEXTS) for t in (*e.boosts, *e.suppresses))
    assert e.boosts[0].mean_dlogp > 0 > e.suppresses[0].mean_dlogp
    d = e.to_dict()
    assert d["n_texts"] == len(TEXTS) and len(d["boosts"]) == 12


def test_neuron_effects_have_random_controls(llama_store):
    lm, store = llama_store
    ranking = rank_neurons(store, top_k=6)
    cfg = EffectsConfig(n_texts=8, singles=2, group=4, batch_size=4)
    ne = neuron_effects(lm, store, ranking, [1, 2], config=cfg, probe=_probe(lm))
    assert [r.label for r in ne.singles] == [f"L{x}.N{n}" for x in (1, 2) for n in ranking.neurons(x, 2)]
    assert [len(g.neurons) for g in ne.groups] == [4, 4]
    for r in (*ne.singles, *ne.groups):
        assert len(r.control_neurons) == len(r.neurons)
        assert not set(r.control_neurons) & set(ranking.neurons(r.layer, 4))  # controls exclude the top
        assert r.control.n_texts == r.effect.n_texts == 8
    again = neuron_effects(lm, store, ranking, [1, 2], config=cfg)
    assert [r.control_neurons for r in again.groups] == [r.control_neurons for r in ne.groups]  # seeded
    s = ne.summary()
    assert set(s) == {"singles", "groups"} and s["groups"]["n"] == 2
    assert set(ne.probes) == {"mlp_neurons.1", "mlp_neurons.2", "resid_post.2"}
    data = json.loads(json.dumps(ne.to_dict()))
    assert data["lines"][0].startswith(f"L1.N{ranking.neurons(1)[0]} boosts [")
    assert len(ne.dla) == 12 and len(ne.text_rows) == 8
    assert hooks_left(lm) == []


def test_clamp_modes_and_validation_rows(llama_store):
    lm, store = llama_store
    rm, bm, sd = np.array([0.5, -0.2]), np.array([0.1, 0.3]), np.array([0.1, 0.2])
    np.testing.assert_allclose(EffectsConfig(mode="sd", k=2).values(rm, bm, sd), [0.7, -0.6])
    np.testing.assert_allclose(EffectsConfig(mode="risky_mean", k=3).values(rm, bm, sd), [1.5, -0.6])
    np.testing.assert_allclose(EffectsConfig(mode="value", value=2).values(rm, bm, sd), [2, 2])
    np.testing.assert_allclose(EffectsConfig(mode="zero").values(rm, bm, sd), [0, 0])
    with pytest.raises(RiskscopeError, match="mode must be"):
        EffectsConfig(mode="max")
    rows = validation_rows(store, 6, seed=1)
    pairs = [store.rows[i]["pair_id"] for i in rows]
    assert len(rows) == 6 and all(pairs.count(p) == 2 for p in pairs)


def test_neuron_effects_refuses_another_model(llama_store):
    _, store = llama_store
    other = make_tiny("llama", seed=1)
    ranking = rank_neurons(store, [1], top_k=3)
    with pytest.raises(RiskscopeError, match="was made with model"):
        neuron_effects(other, store, ranking, [1], config=EffectsConfig(n_texts=4, singles=1, group=0))


# --- slow: the default model ------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_replay_matches_full_forward(default_lm):
    ops = {"clamp": [Clamp(HookPoint("mlp_neurons", 20), indices=(5, 9), value=2.0)],
           "add": [Add(HookPoint("resid_post", 12), vector=torch.ones(576) * 0.05)]}
    texts = ["The intern pasted the password into the public chat.", "The intern locked the laptop."]
    fast = run_effects(default_lm, texts, ops, batch_size=2)
    full = run_effects(default_lm, texts, ops, batch_size=1, replay=False)
    for k in ops:
        np.testing.assert_allclose(fast[k].kl_N, full[k].kl_N, atol=1e-4, rtol=1e-3)
        assert [t.token_id for t in fast[k].boosts[:5]] == [t.token_id for t in full[k].boosts[:5]]
    (a,) = direct_logit_attribution(default_lm, 20, [5])
    assert len(a.boosts) == 12 and all(isinstance(t, str) for t, _ in a.boosts)
