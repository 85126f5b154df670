"""Recipes: chosen by nested grouped CV among readouts x hooks x layers, layer sets and a stack with the
lexical model; saved as a bundle that scores texts the same way; ΔAUC against the lexical model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from typer.testing import CliRunner

import riskscope.cli._common as cli_common
from riskscope.cli import app
from riskscope.errors import RiskscopeError
from riskscope.hooks import HookPoint, capture_texts
from riskscope.probes import (LexicalModel, LinearReadout, Probe, ProbeConfig, RecipeConfig, evaluate_layers,
                              lexical_baseline, select_recipe)

from conftest import make_tiny
from test_run_pipeline import _dataset_file

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = ProbeConfig(folds=4, inner_folds=3, n_bootstrap=100, shuffled_control=False)


def _pairs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([1, 0], n)
    groups = np.repeat(np.arange(n), 2)
    return rng, y, groups


def _texts(y, rng, informative=0.0):
    """Texts whose words say the label only in a share ``informative`` of the rows."""
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]
    out = []
    for i, label in enumerate(y):
        w = list(rng.choice(words, 5))
        if rng.random() < informative:
            w.append("risky" if label else "safe")
        out.append(" ".join(w) + f" row{i}")
    return out


def test_the_readout_with_the_signal_wins_and_the_nested_estimate_is_recorded():
    rng, y, groups = _pairs()
    noise = rng.normal(size=(3, len(y), 6))
    mean = noise + 0.0
    mean[:, :, 0] += 1.5 * y  # the signal lives in the 'mean' readout, every layer
    last = rng.normal(size=(3, len(y), 6))
    texts = _texts(y, rng)
    ev_last = evaluate_layers(last, y, groups, CFG, hook="resid_post", texts=texts)
    ev_mean = evaluate_layers(mean, y, groups, CFG, hook="resid_post", readout="mean")
    assert np.array_equal(ev_last.folds, ev_mean.folds)
    sel = select_recipe([*ev_last.results, *ev_mean.results], y, groups, ev_last.folds, ev_last.lexical,
                        RecipeConfig(n_bootstrap=200))
    assert sel.chosen.parts[0][0] == "mean" and sel.best_activations.parts[0][0] == "mean"
    names = [c.name for c in sel.candidates]
    assert len(names) == len(set(names)) == 6 + 2 + 1  # singles, one layer set per readout, one stack
    assert any(c.kind == "layers" and len(c.parts) == 3 for c in sel.candidates)
    aucs = [c.auc for c in sel.candidates]
    assert aucs == sorted(aucs, reverse=True)
    n = sel.nested
    assert n.auc > 0.8 and n.delta_ci[0] > 0 and n.beats_lexical and n.p_value < 0.05
    assert len(n.chosen_per_fold) == 4 and all("mean" in c for c in n.chosen_per_fold)
    assert n.delta_auc == pytest.approx(n.auc - n.lexical_auc)
    d = json.loads(json.dumps(sel.to_dict()))
    assert d["chosen"]["name"] == sel.chosen.name and len(d["candidates"]) == 9


def test_no_signal_anywhere_does_not_beat_wording():
    rng, y, groups = _pairs()
    X = rng.normal(size=(2, len(y), 6))
    texts = _texts(y, rng, informative=0.6)
    ev = evaluate_layers(X, y, groups, CFG, hook="resid_post", texts=texts)
    sel = select_recipe(ev.results, y, groups, ev.folds, ev.lexical, RecipeConfig(n_bootstrap=200))
    assert not sel.nested_activations.beats_lexical
    assert sel.nested_activations.delta_auc < 0
    assert not sel.best_activations.uses_lexical


def test_select_recipe_needs_inner_scores():
    rng, y, groups = _pairs(20)
    ev = evaluate_layers(rng.normal(size=(1, 40, 3)), y, groups, ProbeConfig(folds=2, inner_folds=2, n_bootstrap=0))
    from dataclasses import replace

    with pytest.raises(RiskscopeError, match="inner-fold scores"):
        select_recipe([replace(ev.results[0], inner_oof=None)], y, groups, ev.folds)


def test_lexical_inner_scores_cover_each_outer_training_set():
    rng, y, groups = _pairs(20)
    res = lexical_baseline(_texts(y, rng, 0.5), y, groups, 4, inner_folds=2)
    from riskscope.probes import group_folds

    fold = group_folds(groups, 4, 0)
    for f in range(4):
        assert np.isfinite(res.inner_oof[f][fold != f]).all() and np.isnan(res.inner_oof[f][fold == f]).all()


def _readout(rng, w):
    return LinearReadout(rng.normal(size=w), 0.1, rng.normal(size=w), np.abs(rng.normal(size=w)) + 0.5)


def test_recipe_bundle_round_trips_and_scores_as_its_parts(tmp_path):
    lm = make_tiny("llama")
    rng = np.random.default_rng(1)
    texts = ["kept old keys", "rotated keys", "left debug on", "turned debug off"]
    lex = LexicalModel(C=10).fit(texts * 3, [1, 0, 1, 0] * 3)
    part = Probe(estimator=_readout(rng, 32), hook="resid_post", layer=2, readout="max")
    combine = {"mean": [0.1, -0.2, 0.0], "scale": [1.5, 2.0, 0.5], "a": 1.3, "b": -0.2}
    probe = Probe(estimator=_readout(rng, 32), hook="resid_post", layer=1, readout="mean", parts=(part,),
                  lexical=lex, combine=combine, model_id="tiny", weight_hash=lm.weight_hash)
    assert probe.recipe == "mean resid_post.{1,2} avg + lexical"
    probe.save(tmp_path / "probe")
    info = json.loads((tmp_path / "probe" / "bundle.json").read_text())
    assert info["format"] == "riskscope-probe/2" and info["readout"] == "mean" and info["lexical"] == "lexical"
    back = Probe.load(tmp_path / "probe")
    got = back.score(texts, lm)
    z = [probe.estimator.decision_function(capture_texts(lm, texts, [HookPoint("resid_post", 1)], readout="mean")
                                           [HookPoint("resid_post", 1)]),
         part.estimator.decision_function(capture_texts(lm, texts, [HookPoint("resid_post", 2)], readout="max")
                                          [HookPoint("resid_post", 2)]),
         lex.decision_function(texts)]
    s = np.mean([(zi - m) / sd for zi, m, sd in zip(z, combine["mean"], combine["scale"])], axis=0)
    np.testing.assert_allclose(got, expit(1.3 * s - 0.2), rtol=1e-5)
    np.testing.assert_allclose(back.score(texts, lm), probe.score(texts, lm), rtol=1e-6)
    probe.save(tmp_path / "probe")  # our own recipe bundle is replaced


def test_recipe_parts_with_one_readout_share_one_forward():
    lm = make_tiny("llama")
    rng = np.random.default_rng(2)
    texts = ["kept old keys", "rotated keys", "left debug on"]
    parts = tuple(Probe(estimator=_readout(rng, 32), hook="resid_post", layer=k, readout="mean") for k in (0, 2))
    combine = {"mean": [0.0, 0.1, -0.1], "scale": [1.0, 2.0, 0.5], "a": 1.0, "b": 0.0}
    probe = Probe(estimator=_readout(rng, 32), hook="resid_post", layer=1, readout="mean", parts=parts,
                  combine=combine, model_id="tiny", weight_hash=lm.weight_hash, positions="mean")
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *a, **k: calls.append(1))
    try:
        got = probe.score(texts, lm, batch_size=8)
    finally:
        handle.remove()
    assert len(calls) == 1  # the three layers come from one forward (the readout, not the positions, counts)
    z = [p.estimator.decision_function(capture_texts(lm, texts, [HookPoint("resid_post", p.layer)], readout="mean")
                                       [HookPoint("resid_post", p.layer)]) for p in (probe, *parts)]
    s = np.mean([(zi - m) / sd for zi, m, sd in zip(z, combine["mean"], combine["scale"])], axis=0)
    np.testing.assert_allclose(got, expit(s), rtol=1e-5)


def test_bundle_without_readout_reads_the_last_token(tmp_path):
    lm = make_tiny("llama")
    rng = np.random.default_rng(2)
    probe = Probe(estimator=_readout(rng, 32), hook="resid_post", layer=1)
    probe.save(tmp_path / "p")
    info = json.loads((tmp_path / "p" / "bundle.json").read_text())
    assert info["format"] == "riskscope-probe/1" and "readout" not in info
    texts = ["kept old keys", "rotated keys"]
    x = capture_texts(lm, texts, [HookPoint("resid_post", 1)], readout="last")[HookPoint("resid_post", 1)]
    np.testing.assert_allclose(Probe.load(tmp_path / "p").score(texts, lm), expit(probe.estimator.decision_function(x)),
                               rtol=1e-5)


@pytest.mark.parametrize("edit,match", [
    ({"readout": "median"}, "field 'readout'"),
    ({"parts": [{"hook": "resid_post", "layer": 1}]}, "field 'parts' item 1"),
    ({"parts": [], "lexical": "words"}, "field 'lexical'"),
    ({"format": "riskscope-probe/9"}, "unknown probe format"),
])
def test_damaged_recipe_bundles_are_refused(tmp_path, edit, match):
    rng = np.random.default_rng(3)
    Probe(estimator=_readout(rng, 32), hook="resid_post", layer=1, readout="mean").save(tmp_path / "p")
    path = tmp_path / "p" / "bundle.json"
    info = json.loads(path.read_text())
    info.update(edit)
    path.write_text(json.dumps(info))
    with pytest.raises(RiskscopeError, match=match):
        Probe.load(tmp_path / "p")


def test_recipe_needs_its_combination():
    rng = np.random.default_rng(4)
    part = Probe(estimator=_readout(rng, 8), hook="resid_post", layer=2)
    with pytest.raises(RiskscopeError, match="needs combine"):
        Probe(estimator=_readout(rng, 8), hook="resid_post", layer=1, parts=(part,))


def test_run_saves_the_recipe_chosen_by_nested_cv(monkeypatch, tmp_path):
    lm = make_tiny("llama")
    monkeypatch.setattr(cli_common, "load_lm", lambda *a, **k: lm)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--dataset", _dataset_file(tmp_path, 12), "--out", str(run), "--folds", "3",
                                 "--n-bootstrap", "30", "--skip", "all", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads((run / "metrics.json").read_text())
    rec = m["recipe"]
    readouts = {p["readout"] for c in rec["candidates"] for p in c["parts"] if "readout" in p}
    assert readouts == {"last", "mean", "span"}  # max only on request (pipeline.DEFAULT_READOUTS)
    assert rec["chosen"]["name"] == rec["candidates"][0]["name"] == m["saved"]["name"]
    assert len(rec["nested"]["chosen_per_fold"]) == 3 and rec["nested"]["delta_ci"][0] <= rec["nested"]["delta_ci"][1]
    probe = Probe.load(run)
    assert probe.recipe.startswith(rec["chosen"]["name"].split(" ")[0])
    store_manifest = json.loads((run / "store" / "manifest.json").read_text())
    assert set(store_manifest["readouts"]) == {"mean", "span"}
    assert all(p.startswith("resid_post") for p in store_manifest["readouts"]["mean"])
    scores = probe.score(["the clerk mailed the list home"], lm)
    assert scores.shape == (1,) and 0 <= scores[0] <= 1
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert all(0 <= p["score"] <= 1 for p in preds)
    html = (run / "report.html").read_text()
    assert rec["chosen"]["name"] in html


def test_run_with_two_models_writes_one_run_each_and_a_comparison(monkeypatch, tmp_path):
    lms = {"tiny-a": make_tiny("llama", seed=0), "tiny-b": make_tiny("qwen2", seed=1)}
    monkeypatch.setattr(cli_common, "load_lm", lambda spec, *a, **k: lms[spec])
    out = tmp_path / "cmp"
    args = ["run", "--dataset", _dataset_file(tmp_path, 10), "--out", str(out), "--model", "tiny-a", "--model",
            "tiny-b", "--folds", "2", "--n-bootstrap", "20", "--skip", "all", "--layers", "1,2", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [m["model"] for m in summary["models"]] == ["tiny-a", "tiny-b"]
    for name in ("tiny-a", "tiny-b"):
        m = json.loads((out / name / "metrics.json").read_text())
        row = next(x for x in summary["models"] if x["model"] == name)
        assert row["recipe"] == m["recipe"]["chosen"]["name"]
        assert row["delta_auc"] == pytest.approx(m["recipe"]["nested"]["delta_auc"])
        assert (out / name / "report.html").is_file()
    html = (out / "comparison.html").read_text()
    assert "tiny-a/report.html" in html and "tiny-b" in html
    (out / "stray.txt").write_text("x")
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "stray.txt" in str(r.exception or r.output)
