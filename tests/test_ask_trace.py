"""Ask-the-model baselines, per-token traces with gradient x input, the CLI commands (their report sections:
tests/test_report.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from riskscope.scorers import AskTemplate, ask_baseline, ask_scores, load_templates
from riskscope.scorers._ask import _evaluate
from riskscope.cli._analysis import register
from riskscope.errors import RiskscopeError
from riskscope.hooks import HookPoint, capture, run_texts
from riskscope.neurons import EffectsConfig, neuron_effects, rank_neurons
from riskscope.probes import Probe
from riskscope.scorers import pick_trace_texts, token_traces

from conftest import make_tiny
from test_neurons import _probe, hooks_left, make_store, tiny_dataset

TEMPLATE = AskTemplate("bang", "{text} so", positive=("!",), negative=("?",))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    lm = make_tiny("llama")
    return lm, make_store(lm, tmp_path_factory.mktemp("store") / "s", n_pairs=8)


# --- ask -------------------------------------------------------------------------------------------


def test_ask_scores_are_log_odds_and_batch_independent():
    lm = make_tiny("llama")
    texts = ["the door", "ab", "risky thing here"]
    s = ask_scores(lm, texts, TEMPLATE, batch_size=3)
    one = np.concatenate([ask_scores(lm, [t], TEMPLATE) for t in texts])
    np.testing.assert_allclose(s, one, atol=1e-5)
    out, mask = run_texts(lm, ["the door so"])
    lp = torch.log_softmax(out.logits[0, -1], -1)
    pos, neg = TEMPLATE.answer_ids(lm)
    np.testing.assert_allclose(s[0], float(lp[pos[0]] - lp[neg[0]]), atol=1e-5)


def test_ask_baseline_has_the_probe_metrics():
    lm = make_tiny("llama")
    data = tiny_dataset(10)
    ev = ask_baseline(lm, data.texts, data.labels, data.pair_ids, [TEMPLATE], folds=3, n_bootstrap=50)
    (r,) = ev.results
    d = r.to_dict()
    for key in ("auc", "auc_ci", "f1", "accuracy", "pair_accuracy", "zero_shot_accuracy", "shuffled_auc", "fold_auc"):
        assert key in d
    assert 0 <= r.auc <= 1 and 0 <= r.pair_accuracy <= 1 and len(r.fold_auc) == 3
    assert d["hook"] == "ask" and r.name == "ask:bang"
    assert len(json.loads(json.dumps(ev.to_dict(arrays=True)))["results"][0]["scores"]) == len(data)
    fixed = ask_baseline(lm, data.texts, data.labels, data.pair_ids, [TEMPLATE], folds=ev.folds, n_bootstrap=0)
    np.testing.assert_allclose(fixed.results[0].scores, r.scores)


def test_ask_metrics_on_perfect_and_reversed_scores():
    y = np.tile([1, 0], 10)
    groups = np.repeat(np.arange(10), 2)
    fold = np.repeat(np.arange(5), 4)
    good = _evaluate(TEMPLATE, {}, y * 2.0 - 1.0, y, groups, fold, 100, 0.95, 0)
    assert good.auc == 1.0 and good.pair_accuracy == 1.0 and good.zero_shot_accuracy == 1.0 and good.f1 == 1.0
    bad = _evaluate(TEMPLATE, {}, 1.0 - y * 2.0, y, groups, fold, 0, 0.95, 0)
    assert bad.auc == 0.0 and bad.pair_accuracy == 0.0


def test_default_ask_templates_leave_out_chat_for_a_tokenizer_without_one():
    from riskscope.scorers import DEFAULT_TEMPLATES, ask_templates

    lm = make_tiny("llama")  # its tokenizer has no chat template
    kept = ask_templates(lm, DEFAULT_TEMPLATES)
    assert kept and all(not t.chat for t in kept) and len(kept) == sum(not t.chat for t in DEFAULT_TEMPLATES)
    mine = (AskTemplate("x", "{text}", chat=True), TEMPLATE)
    assert ask_templates(lm, mine) == mine  # a user's choice is kept and fails in one line when rendered


def test_ask_template_errors(tmp_path):
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="placeholder"):
        AskTemplate("x", "no slot")
    with pytest.raises(RiskscopeError, match="share a first token"):
        AskTemplate("x", "{text}", (" high",), (" hi",)).answer_ids(lm)
    with pytest.raises(RiskscopeError, match="has none"):
        AskTemplate("x", "{text}", chat=True).render(lm, "a")
    with pytest.raises(RiskscopeError, match="both classes"):
        ask_baseline(lm, ["a", "b"], [1, 1], ["p", "p"], [TEMPLATE])
    (tmp_path / "t.json").write_text(json.dumps([{"name": "n", "prompt": "{text} is", "positive": " a",
                                                  "negative": [" b"], "extra": 1}]))
    (t,) = load_templates(tmp_path / "t.json")
    assert t.positive == (" a",) and t.negative == (" b",)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RiskscopeError, match="invalid JSON"):
        load_templates(tmp_path / "bad.json")


# --- traces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_token_traces_apply_the_probe_at_every_position(family):
    lm = make_tiny(family)
    probe = _probe(lm, "resid_post", 1)
    texts = ["hello world", "ab"]
    tr = token_traces(lm, probe, texts, [1, 0], batch_size=2)
    assert tr.probe == "resid_post.1" and [len(t.tokens) for t in tr.traces] == [11, 2]
    with torch.inference_mode(), capture(lm, [HookPoint("resid_post", 1)], reduce="all") as got:
        run_texts(lm, ["hello world"])
    want = probe.logit(next(iter(got.values()))[0].numpy())
    np.testing.assert_allclose(tr.traces[0].logit, want, atol=1e-4)
    np.testing.assert_allclose(tr.traces[0].prob, 1 / (1 + np.exp(-want)), atol=1e-5)
    alone = token_traces(lm, probe, ["ab"], attribution=True)
    np.testing.assert_allclose(tr.traces[1].attribution, alone.traces[0].attribution, atol=1e-5)  # batch-independent
    assert np.isfinite(tr.traces[0].attribution).all() and np.abs(tr.traces[0].attribution).sum() > 0
    assert hooks_left(lm) == []
    json.dumps(tr.to_dict())


def test_attribution_is_gradient_times_input():
    lm = make_tiny("llama")
    probe = _probe(lm, "resid_post", 2)
    (t,) = token_traces(lm, probe, ["abc"]).traces
    ids = torch.tensor([[1 + (ord(c) % 59) for c in "abc"]])
    emb = lm.layout.embed(ids).detach().requires_grad_(True)
    got = {}
    handle = lm.layout.blocks[2].register_forward_hook(
        lambda m, a, o: got.setdefault("x", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.enable_grad():
            lm.model(inputs_embeds=emb)
            (got["x"][0, -1] @ torch.as_tensor(probe.direction(), dtype=torch.float32)).backward()
    finally:
        handle.remove()
    want = (emb.grad * emb).sum(-1)[0].detach().numpy()
    np.testing.assert_allclose(t.attribution, want, rtol=1e-4, atol=1e-6)


def test_trace_errors(store):
    lm, st = store
    with pytest.raises(RiskscopeError, match="expects 32 features but the model's mlp_neurons width is 48"):
        token_traces(lm, Probe(estimator=_probe(lm).estimator, hook="mlp_neurons", layer=1), ["a"])
    with pytest.raises(RiskscopeError, match="labels for"):
        token_traces(lm, _probe(lm), ["a", "b"], [1])
    texts, labels = pick_trace_texts(st, 2, seed=0)
    assert len(texts) == 4 and labels == [1, 0, 1, 0]


# --- CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    register(a)

    @a.callback()
    def _root() -> None:  # a group, so sub-command names are required as in riskscope
        pass

    return a


def test_cli_vector_build_export_import(app, store, tmp_path):
    lm, st = store
    runner = CliRunner()
    r = runner.invoke(app, ["vector", "build", str(st.root), "--out", str(tmp_path / "v"), "--gguf", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layers"] == [0, 1, 2]
    r = runner.invoke(app, ["vector", "export", str(tmp_path / "v.safetensors"), "--out", str(tmp_path / "x.gguf")])
    assert isinstance(r.exception, RiskscopeError) and "direction.0" in str(r.exception)
    r = runner.invoke(app, ["vector", "export", str(tmp_path / "v.safetensors"), "--out", str(tmp_path / "x.gguf"),
                            "--drop-layer0", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["vector", "import", str(tmp_path / "x.gguf"), "--out", str(tmp_path / "back"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["layers"] == [1, 2]
    r = runner.invoke(app, ["vector", "import", str(st.root / "manifest.json"), "--out", str(tmp_path / "z")])
    assert isinstance(r.exception, RiskscopeError)


def test_cli_neurons_without_effects(app, store, tmp_path):
    _, st = store
    r = CliRunner().invoke(app, ["neurons", str(st.root), "--no-effects", "--top-k", "3", "--json",
                                 "--out", str(tmp_path / "n.json")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "n.json").read_text())
    assert len(data["ranking"]["top"]["1"]) == 3


@pytest.fixture
def tiny_cli(app, store, monkeypatch):
    """The CLI with model loading answered by the tiny model the store was made with."""
    import riskscope.cli._common as cli_common

    lm, st = store
    monkeypatch.setattr(cli_common, "load_lm", lambda *a, **k: lm)
    return app, lm, st


def test_cli_model_commands(tiny_cli, tmp_path):
    app, lm, st = tiny_cli
    runner = CliRunner()
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": r.text, "label": r.label, "pair_id": r.pair_id}) + "\n"
                            for r in tiny_dataset(8).rows))
    r = runner.invoke(app, ["ask", "--dataset", str(data), "--prompt", "{text} so", "--positive", "!", "--negative",
                            "?", "--limit", "6", "--folds", "2", "--n-bootstrap", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["name"] == "ask:custom"
    r = runner.invoke(app, ["neurons", str(st.root), "--effect-layers", "2", "--n-texts", "4", "--singles", "1",
                            "--group", "2", "--out", str(tmp_path / "n.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n.json").read_text())["effects"]["singles"][0]["layer"] == 2
    runner.invoke(app, ["vector", "build", str(st.root), "--out", str(tmp_path / "v")])
    r = runner.invoke(app, ["steer", "hello", "--vector", str(tmp_path / "v.safetensors"), "--layers", "1",
                            "--no-chat", "--max-new-tokens", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layers"] == [1]
    r = runner.invoke(app, ["trace", "the door", "--run", str(st.root), "--hook", "resid_post", "--layer", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["trace", "--run", str(st.root), "--pairs", "1", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["traces"]) == 2
    r = runner.invoke(app, ["steer", "hi", "--vector", str(tmp_path / "v.safetensors"), "--layers", "9"])
    assert isinstance(r.exception, RiskscopeError) and "has no layer(s) [9]" in str(r.exception)
    r = runner.invoke(app, ["neurons", str(tmp_path), "--no-effects"])
    assert isinstance(r.exception, RiskscopeError) and "neither a run folder" in str(r.exception)


# --- slow: the default model ------------------------------------------------------------------------

SCENARIOS = ["The intern pasted the admin password into the public team chat.",
             "The intern stored the admin password in the company's password manager.",
             "The bakery posted its new opening hours."]


@pytest.mark.slow
def test_default_model_templates_render_and_score_batch_independently(default_lm):
    from riskscope.scorers import DEFAULT_TEMPLATES

    tok = default_lm.tokenizer
    for t in DEFAULT_TEMPLATES:
        text = tok.decode(t.render(default_lm, SCENARIOS[0]))
        assert SCENARIOS[0] in text
        if t.chat:
            assert text.rstrip().endswith("assistant")
        pos, neg = t.answer_ids(default_lm)
        assert all(len(tok([w], add_special_tokens=False)["input_ids"][0]) == 1 for w in t.positive + t.negative)
        batched = ask_scores(default_lm, SCENARIOS, t, batch_size=3)
        single = np.concatenate([ask_scores(default_lm, [s], t) for s in SCENARIOS])
        np.testing.assert_allclose(batched, single, atol=2e-3)


@pytest.mark.slow
def test_default_model_traces_end_at_the_last_token_score(default_lm):
    from riskscope.hooks import capture_texts

    probe = _probe(default_lm, "resid_post", 10)
    tr = token_traces(default_lm, probe, SCENARIOS[:2], [1, 0])
    last = capture_texts(default_lm, SCENARIOS[:2], [HookPoint("resid_post", 10)])[HookPoint("resid_post", 10)]
    np.testing.assert_allclose([t.logit[-1] for t in tr.traces], probe.logit(last), rtol=1e-3, atol=1e-3)
    for t, s in zip(tr.traces, SCENARIOS):
        assert "".join(t.tokens).strip() == s and np.isfinite(t.attribution).all()
