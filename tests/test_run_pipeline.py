"""`riskscope run` end to end (cache, probes, live-model analyses, report) and `riskscope analyze`."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import riskscope.cli._common as cli_common
from riskscope.cli import app
from riskscope.pipeline import ANALYSES, parse_skip, run_folds
from riskscope.errors import RiskscopeError
from riskscope.steering import SteeringVector
from riskscope.data import Store

from conftest import make_tiny
from test_neurons import hooks_left, tiny_dataset

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
    monkeypatch.setattr(cli_common, "load_lm", lambda *a, **k: lm)
    return lm


def test_parse_skip():
    assert parse_skip("") == ANALYSES
    assert parse_skip("ask, caution") == ("neurons", "effects", "traces", "vectors")
    assert parse_skip("all") == ()
    with pytest.raises(RiskscopeError, match="--skip 'asks': not an analysis; choose from neurons"):
        parse_skip("asks")


def test_run_writes_neurons_vectors_and_their_report_sections(tiny_run_cli, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--dataset", _dataset_file(tmp_path, 10), "--out", str(run), "--folds",
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
    r = CliRunner().invoke(app, ["run", "--dataset", _dataset_file(tmp_path, 6), "--out", str(run), "--skip",
                                     "neuron"])
    assert r.exit_code != 0
    assert "--skip 'neuron': not an analysis" in str(r.exception)
    assert not run.exists()


def test_run_skip_all_then_analyze(tiny_run_cli, tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--dataset", _dataset_file(tmp_path, 8), "--out", str(run), "--folds", "2",
                                "--n-bootstrap", "0", "--skip", "all", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["analyses"] == {}
    assert not any((run / f).exists() for f in LIVE_FILES.values())
    assert "neurons" not in _sections((run / "report.html").read_text())
    r = runner.invoke(app, ["analyze", str(run), "--skip", "ask,traces,caution,effects,vectors", "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["files"]) == {"neurons", "report"}
    data = json.loads((run / "neurons.json").read_text())
    assert data["effects"] is None and data["ranking"]["layers"] == [0, 1, 2]
    assert "neurons" in _sections((run / "report.html").read_text())


def test_report_names_a_broken_analysis_file(tiny_run_cli, tmp_path):
    from riskscope.report import write_report

    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--dataset", _dataset_file(tmp_path, 8), "--out", str(run), "--folds",
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
    monkeypatch.setattr(cli_common, "load_lm", lambda *a, **k: default_lm)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--limit", "12", "--layers", "20-29", "--out", str(run), "--folds", "3",
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


# --- the Python API: rs.run(RunConfig(...)) ----------------------------------------------------------------

_LOG: list | None = None
"""File events while a test records them: ("write" | "read" | "rename" | "status", path or message)."""


def _audit(event: str, args: tuple) -> None:
    log = _LOG
    if log is None:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writing = any(ch in mode for ch in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
        log.append(("write" if writing else "read", os.path.abspath(os.fsdecode(args[0]))))
    elif event == "os.rename":
        log.append(("rename", os.path.abspath(os.fsdecode(args[1]))))


sys.addaudithook(_audit)


@pytest.fixture
def file_events():
    global _LOG
    _LOG = []
    try:
        yield _LOG
    finally:
        _LOG = None


def _run_entry(path: str, run) -> str | None:
    """``path`` relative to the run folder, or None for temporary files, the store and paths elsewhere."""
    try:
        rel = Path(path).relative_to(run)
    except ValueError:
        return None
    if rel.parts[0] == "store" or any(p.startswith(".") for p in rel.parts):
        return None
    return rel.parts[0] if rel.parts[0] == "probe" else str(rel)


def _model_state(lm) -> tuple:
    m = lm.model
    return ({k: v.clone() for k, v in m.state_dict().items()}, m.training,
            [p.requires_grad for p in m.parameters()])


API_ANALYSES = ("neurons", "effects", "traces", "vectors")  # ask and caution need a real tokenizer and context


def test_rs_run_writes_each_file_once_from_memory_and_matches_the_cli(tiny_run_cli, tmp_path, file_events,
                                                                       one_thread):
    import riskscope as rs
    from riskscope.pipeline import ProbeRunConfig
    from riskscope.probes import Probe

    lm = tiny_run_cli
    data = _dataset_file(tmp_path, 10)
    before = _model_state(lm)
    run = tmp_path / "api"
    cfg = rs.RunConfig(out=run, dataset=data, analyses=API_ANALYSES, probe=ProbeRunConfig(folds=2, n_bootstrap=20))
    res = rs.run(cfg, lm=lm, status=lambda msg: file_events.append(("status", msg)))
    events = list(file_events)

    # each file written once (through a temporary name), the manifest last
    written = [e for kind, p in events if kind in ("write", "rename") and (e := _run_entry(p, run))]
    assert sorted(written) == sorted(set(written)), written
    assert written[-1] == "manifest.json"
    want = {"probe", "predictions.jsonl", "metrics.json", "neurons.json", "traces.json", "report.html",
            "manifest.json", "vectors/risk_diff_of_means.safetensors", "vectors/risk_diff_of_means.json",
            "vectors/risk_diff_of_means.gguf"}
    assert set(written) == want
    # nothing the run wrote is read back before the report renders the folder
    report_at = events.index(("status", "writing report"))
    reread = [e for kind, p in events[:report_at] if kind == "read" and (e := _run_entry(p, run))]
    assert reread == []

    # the result objects are the files' contents
    assert json.loads((run / "metrics.json").read_text()) == res.metrics
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert [p["fold"] for p in preds] == res.evaluation.folds.tolist()
    assert [p["id"] for p in preds] == [r["id"] for r in res.store.rows]
    saved = Probe.load(run)
    np.testing.assert_array_equal(saved.estimator.coef_, res.probe.estimator.coef_)
    assert (saved.hook, saved.layer) == (res.best.hook, res.best.layer) == tuple(res.metrics["best"].values())
    vec = SteeringVector.load(run / "vectors" / "risk_diff_of_means.safetensors")
    assert vec.layers == res.analyses.vector.layers
    for k in vec.layers:
        assert torch.equal(vec.vectors[k], res.analyses.vector.vectors[k])
    neurons = json.loads((run / "neurons.json").read_text())
    assert neurons == json.loads(json.dumps({"ranking": res.analyses.ranking.to_dict(),
                                             "effects": res.analyses.effects.to_dict()}, default=str))
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["files"]) == set(res.files) - {"manifest"}
    assert manifest["analyses"] == list(API_ANALYSES) and manifest["notes"] == [] == list(res.notes)
    assert set(res.seconds) == {"load_model", "cache", "probes", "analyses", "report"}
    assert res.cache.chunks_written == 1 and res.report == run / "report.html"

    # the caller's model is untouched
    state, training, grads = _model_state(lm)
    assert training == before[1] and grads == before[2] and hooks_left(lm) == []
    assert all(torch.equal(state[k], before[0][k]) for k in state)

    # the CLI's run of the same config writes the same metrics.json
    r = CliRunner().invoke(app, ["run", "--dataset", data, "--out", str(tmp_path / "cli"), "--folds", "2",
                                 "--n-bootstrap", "20", "--skip", "ask,caution", "--no-report"])
    assert r.exit_code == 0, r.output
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert {k: v for k, v in cli_metrics.items() if k != "seconds"} == \
        {k: v for k, v in res.metrics.items() if k != "seconds"}

    # the same config again resumes: the store is reused, every other file written again
    res2 = rs.run(cfg, lm=lm)
    assert (res2.cache.chunks_written, res2.cache.chunks_done_before) == (0, 1)
    assert {k: v for k, v in res2.metrics.items() if k != "seconds"} == \
        {k: v for k, v in res.metrics.items() if k != "seconds"}


def test_run_config_checks_everything_cheap_when_built(tmp_path):
    from riskscope.pipeline import ProbeRunConfig, RunConfig

    data = _dataset_file(tmp_path, 6)
    one_class = tmp_path / "one.jsonl"
    one_class.write_text("".join(json.dumps({"id": f"r{i}", "text": f"text {i}", "label": 1}) + "\n"
                                 for i in range(8)))
    out = tmp_path / "run"
    bad = [
        (dict(dataset=str(tmp_path / "missing.jsonl")), "no such dataset file"),
        (dict(dataset=str(one_class)), "every row is risky"),
        (dict(dataset=data, probe=ProbeRunConfig(folds=7)), "6 pairs are fewer than --folds 7"),
        (dict(dataset=data, probe=ProbeRunConfig(target="severity")), "needs severities"),
        (dict(dataset=data, hooks="resid_post,mlp"), "unknown hook 'mlp'"),
        (dict(dataset=data, positions="all"), "one row per text"),
        (dict(dataset=data, positions="first"), "--positions"),
        (dict(dataset=data, layers="1-x"), "--layers"),
        (dict(dataset=data, module_paths="blocks"), "--module-paths"),
        (dict(dataset=data, analyses=("neuron",)), "unknown analysis 'neuron'"),
        (dict(dataset=data, store_dtype="int8"), "--store-dtype"),
        (dict(dataset=data, limit=0), "--limit"),
    ]
    for kwargs, match in bad:
        with pytest.raises(RiskscopeError, match=match):
            RunConfig(out=out, **kwargs)
    with pytest.raises(RiskscopeError, match="folds must be >= 2"):
        ProbeRunConfig(folds=1)
    assert not out.exists()

    cfg = RunConfig(out=out, dataset=data, layers="0, 2", hooks="resid_post", positions="0,-1",
                    module_paths="blocks=model.layers")
    assert (cfg.layers, cfg.hooks, cfg.positions) == ((0, 2), ("resid_post",), (0, -1))
    assert cfg.module_paths == {"blocks": "model.layers"} and cfg.analyses == ANALYSES
    assert json.loads(json.dumps(cfg.to_dict()))["out"] == str(out) and hash(cfg) == hash(RunConfig(**vars(cfg)))

    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RiskscopeError, match="is not a run folder"):
        RunConfig(out=out, dataset=data)
    (out / "notes.txt").unlink()
    (out / "manifest.json").write_text(json.dumps({"inputs": {**cfg.inputs(cfg.load_data()), "model": "other"}}))
    with pytest.raises(RiskscopeError, match=r"other inputs \(differs in: model\)"):
        RunConfig(out=out, dataset=data, layers="0, 2", hooks="resid_post", positions="0,-1",
                  module_paths="blocks=model.layers")
    assert (out / "manifest.json").is_file()  # refused, not touched
