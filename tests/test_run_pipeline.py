"""`riskscope run` end to end (cache, probes, live-model analyses, report) and `riskscope analyze`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import riskscope.cli._app as cli
from riskscope.pipeline import ANALYSES, parse_skip, run_folds
from riskscope.errors import RiskscopeError
from riskscope.steering import SteeringVector
from riskscope.data import Store

from conftest import make_tiny
from test_neurons import tiny_dataset

LIVE_FILES = {"neurons": "neurons.json", "ask": "ask.json", "traces": "traces.json", "caution": "caution.json"}


def _dataset_file(tmp_path, n_pairs: int) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": r.id, "text": r.text, "label": r.label, "pair_id": r.pair_id,
                                        "category": r.category}) + "\n" for r in tiny_dataset(n_pairs).rows))
    return str(path)


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', html)


@pytest.fixture
def tiny_run_cli(monkeypatch):
    lm = make_tiny("llama")
    monkeypatch.setattr(cli, "_load", lambda *a, **k: lm)
    return lm


def test_parse_skip():
    assert parse_skip("") == ANALYSES
    assert parse_skip("ask, caution") == ("neurons", "effects", "traces", "vectors")
    assert parse_skip("all") == ()
    with pytest.raises(RiskscopeError, match="--skip 'asks': not an analysis; choose from neurons"):
        parse_skip("asks")


def test_run_writes_neurons_vectors_and_their_report_sections(tiny_run_cli, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli.app, ["run", "--dataset", _dataset_file(tmp_path, 10), "--out", str(run), "--folds",
                                     "2", "--n-bootstrap", "20", "--skip", "ask,traces,caution", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert set(summary["analyses"]) == {"neurons", "vector_safetensors", "vector_json", "vector_gguf"}
    neurons = json.loads((run / "neurons.json").read_text())
    assert neurons["effects"]["singles"] and all("control" in s for s in neurons["effects"]["singles"])
    vec = SteeringVector.load(run / "vectors" / "risk_diff_of_means.safetensors")
    assert sorted(vec.layers) == [0, 1, 2]
    # the vector is the class-mean difference of the stored resid_post activations
    store = Store.open(run / "store")
    X = store.read("resid_post.1")
    want = X[store.labels == 1].mean(0) - X[store.labels == 0].mean(0)
    np.testing.assert_allclose(vec.vectors[1].numpy(), want, rtol=1e-5, atol=1e-6)
    assert not (run / "ask.json").exists() and not (run / "caution.json").exists()
    html = (run / "report.html").read_text()
    assert _sections(html).index("errors") < _sections(html).index("neurons") < _sections(html).index("metrics")
    assert "ask" not in _sections(html) and re.search(r"L[0-2]\.N\d+", html)
    folds = run_folds(run, store)
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert folds.tolist() == [p["fold"] for p in preds]


def test_run_rejects_an_unknown_analysis_before_any_work(tiny_run_cli, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli.app, ["run", "--dataset", _dataset_file(tmp_path, 6), "--out", str(run), "--skip",
                                     "neuron"])
    assert r.exit_code != 0
    assert "--skip 'neuron': not an analysis" in str(r.exception)
    assert not run.exists()


def test_run_skip_all_then_analyze(tiny_run_cli, tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(cli.app, ["run", "--dataset", _dataset_file(tmp_path, 8), "--out", str(run), "--folds", "2",
                                "--n-bootstrap", "0", "--skip", "all", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["analyses"] == {}
    assert not any((run / f).exists() for f in LIVE_FILES.values())
    assert "neurons" not in _sections((run / "report.html").read_text())
    r = runner.invoke(cli.app, ["analyze", str(run), "--skip", "ask,traces,caution,effects,vectors", "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["files"]) == {"neurons", "report"}
    data = json.loads((run / "neurons.json").read_text())
    assert data["effects"] is None and data["ranking"]["layers"] == [0, 1, 2]
    assert "neurons" in _sections((run / "report.html").read_text())


def test_report_names_a_broken_analysis_file(tiny_run_cli, tmp_path):
    from riskscope.report import write_report

    run = tmp_path / "run"
    r = CliRunner().invoke(cli.app, ["run", "--dataset", _dataset_file(tmp_path, 8), "--out", str(run), "--folds",
                                     "2", "--n-bootstrap", "0", "--skip", "all"])
    assert r.exit_code == 0, r.output
    (run / "ask.json").write_text('{"results": [\n  {"name": 1,}\n]}')
    with pytest.raises(RiskscopeError, match=r"ask\.json:2: invalid JSON"):
        write_report(run)
    (run / "ask.json").write_text('{"scores": []}')
    with pytest.raises(RiskscopeError, match=r"ask\.json: missing field 'results'"):
        write_report(run)
    (run / "caution.json").write_text('{"steered": {}}')
    (run / "ask.json").unlink()
    with pytest.raises(RiskscopeError, match=r"caution\.json: missing field 'random'"):
        write_report(run)


@pytest.mark.slow
def test_default_model_run_has_every_analysis_in_the_report(default_lm, monkeypatch, tmp_path):
    """The main job on the real model (12 pairs, layers 20-29): every analysis file and report section; the
    demo uses the stored layer nearest 16 (20)."""
    monkeypatch.setattr(cli, "_load", lambda *a, **k: default_lm)
    run = tmp_path / "run"
    r = CliRunner().invoke(cli.app, ["run", "--limit", "12", "--layers", "20-29", "--out", str(run), "--folds", "3",
                                     "--n-bootstrap", "50", "--json"])
    assert r.exit_code == 0, r.output
    for name in (*LIVE_FILES.values(), "vectors/risk_diff_of_means.gguf"):
        assert (run / name).is_file(), name
    ask = json.loads((run / "ask.json").read_text())
    assert len(ask["ids"]) == 24 and {x["name"] for x in ask["results"]} == {"ask:risk_seems", "ask:chat_yes_no"}
    assert all(0.0 <= x["auc"] <= 1.0 for x in ask["results"])
    caution = json.loads((run / "caution.json").read_text())
    assert caution["layers"] == [20] and caution["steered"]["risk_dlogp"] > caution["random"]["risk_dlogp"]
    html = (run / "report.html").read_text()
    assert [s for s in _sections(html) if s in ("ask", "neurons", "traces", "steering")] == \
        ["ask", "neurons", "traces", "steering"]
    assert "on the same 24 texts" in html and "risk_diff_of_means.gguf" in html
