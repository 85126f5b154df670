"""The one probe value: reading activations, checks, the saved bundle (old and new), and the run's probe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from riskscope.errors import ModelError, RiskscopeError
from riskscope.hooks import HookPoint
from riskscope.probes import PROBE_FORMAT, LinearReadout, LogisticProbe, Probe, fit_probe, probe_for_run

from conftest import make_tiny
from test_neurons import make_store

DATA = Path(__file__).parent / "data"
TEXTS = ["the door was open !!!", "the door was shut", "mail", "a key !!"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def llama_store(tmp_path_factory):
    lm = make_tiny("llama")
    return lm, make_store(lm, tmp_path_factory.mktemp("store") / "s", hooks=("resid_post",))


def _readout(width: int, seed: int = 0) -> LinearReadout:
    rng = np.random.default_rng(seed)
    return LinearReadout(rng.normal(size=width), 0.2, rng.normal(size=width), rng.uniform(0.5, 2, size=width))


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the value --------------------------------------------------------------------------------------


def test_probe_reads_rows_like_its_estimator():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    est = LogisticProbe(C=1.0).fit(X, (X[:, 0] > 0).astype(int))
    p = Probe(estimator=est, hook="resid_post", layer=1)
    assert (p.name, p.point, p.positions, p.model_id, p.weight_hash) == ("resid_post.1", HookPoint("resid_post", 1),
                                                                         "last", None, None)
    np.testing.assert_array_equal(p.logit(X), est.decision_function(X))
    np.testing.assert_array_equal(p.predict_proba(X), est.predict_proba(X)[:, 1])
    np.testing.assert_allclose(X @ p.direction() + (est.intercept_ - est.mean_ / est.scale_ @ est.coef_[0]),
                               p.logit(X), atol=1e-10)  # raw-space weights
    r = Probe(estimator=_readout(8), hook="mlp_neurons", layer=0)
    np.testing.assert_allclose(r.predict_proba(X), 1 / (1 + np.exp(-r.logit(X))), rtol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(hook="resid_mid"), "unknown hook 'resid_mid'"),
    (dict(positions="all"), "positions must be 'last', 'mean' or token indices"),
    (dict(positions=()), "must not be empty"),
    (dict(estimator=object()), "needs a fitted estimator with decision_function; object has none"),
])
def test_bad_probe_values(kwargs, match):
    with pytest.raises(RiskscopeError, match=match):
        Probe(**{"estimator": _readout(4), "hook": "resid_post", "layer": 0, **kwargs})
    with pytest.raises(RiskscopeError, match="expected a riskscope Probe, got dict"):
        Probe.of({"hook": "resid_post"})


def test_check_names_weights_layer_and_width():
    lm = make_tiny("llama")
    Probe(estimator=_readout(32), hook="resid_post", layer=2, weight_hash=lm.weight_hash).check(lm)
    with pytest.raises(ModelError, match="trained on weights other-hash"):
        Probe(estimator=_readout(32), hook="resid_post", layer=2, weight_hash="other-hash").check(lm)
    with pytest.raises(ModelError, match="layer 5 does not exist"):
        Probe(estimator=_readout(32), hook="resid_post", layer=5).check(lm)
    with pytest.raises(RiskscopeError, match="expects 32 features but the model's mlp_neurons width is 48"):
        Probe(estimator=_readout(32), hook="mlp_neurons", layer=0).check(lm)


# --- the bundle ---------------------------------------------------------------------------------------


def test_saved_and_loaded_probe_scores_identically(llama_store, tmp_path):
    lm, store = llama_store
    p = fit_probe(store, "resid_post", 1)
    assert (p.model_id, p.weight_hash) == (lm.model_id, lm.weight_hash)
    before = p.score(TEXTS, lm)
    p.save(tmp_path / "run" / "probe")
    back = Probe.load(tmp_path / "run")  # a run folder finds its probe/
    assert (back.hook, back.layer, back.positions, back.model_id, back.weight_hash, back.threshold) == \
        (p.hook, p.layer, p.positions, p.model_id, p.weight_hash, p.threshold)
    np.testing.assert_array_equal(back.score(TEXTS, lm), before)
    assert 0 < before.min() and before.max() < 1
    readout = Probe(estimator=_readout(32), hook="resid_post", layer=2, positions="mean", meta={"why": "test"})
    readout.save(tmp_path / "r")
    again = Probe.load(tmp_path / "r")
    assert isinstance(again.estimator, LinearReadout) and again.meta == {"why": "test"}
    np.testing.assert_array_equal(again.score(TEXTS, lm), readout.score(TEXTS, lm))


def test_bundle_written_by_the_first_format_loads():
    """``tests/data/probe_bundle_v1`` was written by the bundle writer that came before the one probe type."""
    p = Probe.load(DATA / "probe_bundle_v1")
    want = json.loads((DATA / "probe_bundle_v1_expected.json").read_text())
    assert json.loads((DATA / "probe_bundle_v1" / "bundle.json").read_text())["format"] == PROBE_FORMAT
    assert isinstance(p.estimator, LogisticProbe)
    assert (p.hook, p.layer, p.positions, p.model_id, p.weight_hash, p.threshold) == \
        ("resid_post", 2, "last", "tiny-llama", "tiny-llama-0", 0.4)
    assert p.meta == {"dataset": {"name": "fixture"}, "C": 0.5}
    np.testing.assert_allclose(p.logit(np.asarray(want["X"])), want["decision"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.predict_proba(np.asarray(want["X"])), want["proba"], rtol=1e-12, atol=1e-12)
    lm = make_tiny("llama")  # weights "tiny-llama-0": the bundle's
    assert p.score(TEXTS, lm).shape == (len(TEXTS),)


def test_save_never_replaces_a_folder_it_did_not_write(tmp_path):
    p = Probe(estimator=_readout(32), hook="resid_post", layer=2)
    target = tmp_path / "probe"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(RiskscopeError, match=f"^{target} holds files that are not a riskscope probe bundle") as e:
        p.save(target)
    assert "\n" not in str(e.value)
    assert (target / "notes.txt").read_text() == "mine" and _entries(target) == ["notes.txt"]
    assert _entries(tmp_path) == ["probe"]  # nothing written beside it either
    p.save(tmp_path / "ok")  # a bundle with a user file added is not ours to replace either
    (tmp_path / "ok" / "extra.csv").write_text("a,b")
    with pytest.raises(RiskscopeError, match="holds files that are not a riskscope probe bundle"):
        p.save(tmp_path / "ok")
    assert (tmp_path / "ok" / "extra.csv").read_text() == "a,b"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RiskscopeError, match="exists and is not a probe bundle folder"):
        p.save(tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "bundle.json").write_text(json.dumps({"format": "someone-else/1"}))
    with pytest.raises(RiskscopeError, match="holds files that are not a riskscope probe bundle"):
        p.save(other)


def test_save_replaces_its_own_bundle_atomically(tmp_path):
    first = Probe(estimator=_readout(32, seed=0), hook="resid_post", layer=2)
    second = Probe(estimator=_readout(32, seed=1), hook="resid_post", layer=1, threshold=0.7)
    first.save(tmp_path / "probe")
    second.save(tmp_path / "probe")
    assert _entries(tmp_path) == ["probe"]  # no temporary or set-aside folders left
    assert _entries(tmp_path / "probe") == ["bundle.json", "config.json", "weights.safetensors"]
    back = Probe.load(tmp_path / "probe")
    assert (back.layer, back.threshold) == (1, 0.7)
    np.testing.assert_array_equal(back.estimator.coef_, second.estimator.coef_)
    (tmp_path / "empty").mkdir()
    first.save(tmp_path / "empty")  # an empty folder holds nothing to lose
    assert Probe.load(tmp_path / "empty").layer == 2


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(RiskscopeError, match="is not a probe bundle \\(no bundle.json\\)"):
        Probe.load(tmp_path)
    shutil.copytree(DATA / "probe_bundle_v1", tmp_path / "b")
    info = tmp_path / "b" / "bundle.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "format": "riskscope-probe/9"}))
    with pytest.raises(RiskscopeError, match=r"bundle.json: unknown probe format 'riskscope-probe/9'"):
        Probe.load(tmp_path / "b")
    info.write_text("{not json")
    with pytest.raises(RiskscopeError, match=r"bundle.json:1: invalid JSON"):
        Probe.load(tmp_path / "b")


# --- the run's probe ----------------------------------------------------------------------------------


def test_probe_for_run_picks_the_bundle_then_the_best_layer_then_two_thirds_depth(llama_store, tmp_path):
    lm, store = llama_store
    run = tmp_path / "run"
    run.mkdir()
    deep = probe_for_run(run, store)  # nothing in the run: 2/3 depth of the store's resid_post layers (0, 1, 2)
    assert (deep.hook, deep.layer) == ("resid_post", 2) and deep.weight_hash == lm.weight_hash
    (run / "metrics.json").write_text(json.dumps({"best": {"hook": "resid_post", "layer": 0}}))
    assert probe_for_run(run, store).layer == 0  # the run's best point
    assert probe_for_run(run, store, metrics={"best": {"hook": "resid_post", "layer": 1}}).layer == 1
    bundle = Probe(estimator=_readout(32), hook="resid_post", layer=1, threshold=0.3)
    bundle.save(run / "probe")
    got = probe_for_run(run, store)
    assert isinstance(got.estimator, LinearReadout) and got.threshold == 0.3  # the bundle itself
    asked = probe_for_run(run, store, layer=2)  # a point asked for: fitted there, bundle or not
    assert isinstance(asked.estimator, LogisticProbe) and asked.layer == 2
    np.testing.assert_array_equal(asked.logit(store.read(HookPoint("resid_post", 2))),
                                  fit_probe(store, "resid_post", 2).logit(store.read(HookPoint("resid_post", 2))))
    with pytest.raises(RiskscopeError, match="holds no mlp_out points"):
        probe_for_run(run, store, hook="mlp_out")
    with pytest.raises(RiskscopeError, match=r"has no resid_post at layer 7; it holds \[0, 1, 2\]"):
        probe_for_run(run, store, layer=7)
