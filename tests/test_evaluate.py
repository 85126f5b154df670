"""``riskscope evaluate`` and the external set ``cyber_risk_heldout``: fast, on a tiny model saved to disk.

A tiny run is trained once per module through the real CLI; evaluate then scores a small external set
(held-out pairs, one text longer than the model's context, one category the run never saw). Bad inputs
follow the house contract: exit 2, one stderr line, the workspace unchanged, and data errors raised before
the model loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from riskscope._io import MANIFEST
from riskscope.pipeline import EVAL_FILES
from tinyhf import build_tiny_hf

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eval_heldout_checks", ROOT / "bench" / "eval_heldout_checks.py")
hc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hc)


def _rows(name: str, n: int, cut: int = 160) -> list[dict]:
    from riskscope.data import load_dataset

    rows = load_dataset(name).rows[: 2 * n]
    return [{"id": r.id, "text": r.text[:cut], "label": r.label, "pair_id": r.pair_id, "category": r.category,
             "severity": r.severity} for r in rows]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from riskscope.cli import main

    old = sys.argv
    sys.argv = ["riskscope", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def world(tmp_path_factory, module_home):
    """A tiny model, another tiny model (other weights), a 10-pair run and a small external set."""
    root = tmp_path_factory.mktemp("evaluate_world")
    model = build_tiny_hf(root / "model")
    other = build_tiny_hf(root / "other", seed=1)
    train = root / "train.jsonl"
    train.write_text(_jsonl(_rows("cyber_risk_pairs", 10)))
    run = root / "run"
    from riskscope.cli import main

    old = sys.argv
    sys.argv = ["riskscope", "run", "--model", str(model), "--dataset", str(train), "--out", str(run), "--folds", "2",
                "--n-bootstrap", "20", "--skip", "all", "--no-report"]
    try:
        main()
    except SystemExit as e:
        assert not e.code, "building the evaluate world failed"
    finally:
        sys.argv = old
    ext = _rows("cyber_risk_heldout", 8)
    ext[0]["text"] = ext[0]["text"] + " " + " ".join(["The plan was reviewed again."] * 200)  # > 256 tokens
    ext[2]["category"] = ext[3]["category"] = "novel_category"
    external = root / "external.jsonl"
    external.write_text(_jsonl(ext))
    yield {"model": model, "other": other, "run": run, "external": external, "root": root}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if "__pycache__" not in str(p)}


# --- the good path -----------------------------------------------------------------------------------------


def test_evaluate_cli_writes_consistent_outputs(world, capsys, tmp_path):
    out = tmp_path / "ev"
    code, stdout, stderr = _cli(["evaluate", "--probe", str(world["run"]), "--dataset", str(world["external"]),
                                 "--out", str(out), "--n-bootstrap", "50"], capsys)
    assert code == 0, stderr
    assert "warning: 1 of 16 texts" in stderr  # the long text was cut, and said so
    assert sorted(p.name for p in out.iterdir()) == sorted([*EVAL_FILES, MANIFEST])
    r = json.loads((out / "evaluation.json").read_text())
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    y = np.array([s["label"] for s in scores])
    p = np.array([s["score"] for s in scores])
    lex = np.array([s["lexical_score"] for s in scores])
    pm = r["probe_metrics"]
    assert r["probe"]["hook"] in r["probe"]["recipe"]  # the whole recipe in words (the table title)
    # one definition of each figure: the JSON agrees with the per-text scores it wrote
    assert pm["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-5)
    assert r["lexical"]["auc"] == pytest.approx(roc_auc_score(y, lex), abs=1e-5)
    assert r["delta_auc"]["value"] == pytest.approx(pm["auc"] - r["lexical"]["auc"], abs=1e-5)
    assert pm["pair_accuracy"] == pytest.approx(np.mean(np.sign(p[0::2] - p[1::2]) * 0.5 + 0.5), abs=1e-9)
    assert pm["tp"] + pm["fn"] == 8 and pm["tn"] + pm["fp"] == 8 and pm["n_pairs"] == 8
    for key in ("auc", "pair_accuracy", "f1", "accuracy"):
        lo, hi = pm[f"{key}_ci"]
        assert 0 <= lo <= hi <= 1
    assert 0 < r["delta_auc"]["p_value"] <= 1
    assert r["truncated"]["count"] == 1 and r["truncated"]["ids"] == [scores[0]["id"]] and scores[0]["truncated"]
    assert r["categories"]["unseen"] == ["novel_category"]
    unseen = [c for c in r["by_category"] if c["value"] == "novel_category"]
    assert unseen and unseen[0]["seen_in_training"] is False and unseen[0]["n_pairs"] == 1
    cal = r["calibration"]
    assert sum(b["n"] for b in cal["bins"]) == 16 and 0 <= cal["ece"] <= 1
    assert r["lexical_misses"]["n_pairs"] == int(np.sum(lex[0::2] <= lex[1::2]))
    assert r["cv"] is not None and r["cv"]["probe_auc"] is not None
    html = (out / "evaluation.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "novel_category" in html and "ΔAUC" in html


def test_python_api_matches_probe_score_and_warns(world):
    from riskscope.data import load_dataset
    from riskscope.pipeline import EvaluateConfig, evaluate
    from riskscope.probes import Probe

    cfg = EvaluateConfig(probe=world["run"], dataset=str(world["external"]), n_bootstrap=20, lexical=False)
    with pytest.warns(UserWarning, match="cut to fit"):
        ev = evaluate(cfg)
    probe = Probe.load(world["run"])
    texts = load_dataset(str(world["external"])).texts
    np.testing.assert_allclose(ev.scores, probe.score(texts, truncate=True), atol=1e-6)
    assert ev.files == {} and ev.result["lexical"] is None and ev.truncated == (0,)
    assert "lexical baseline not asked for" in ev.result["notes"]


def test_single_labelled_texts_without_pairs(world, tmp_path):
    from riskscope.pipeline import EvaluateConfig, evaluate

    rows = [{"text": r["text"], "label": r["label"]} for r in _rows("cyber_risk_heldout", 6)]
    path = tmp_path / "singles.jsonl"
    path.write_text(_jsonl(rows))
    ev = evaluate(EvaluateConfig(probe=world["run"] / "probe", dataset=str(path), n_bootstrap=20))
    m = ev.result["probe_metrics"]
    assert m["n_pairs"] == 0 and m["pair_accuracy"] is None and m["auc"] is not None
    assert ev.result["by_category"] == [] and ev.result["lexical"] is not None


# --- bad input -------------------------------------------------------------------------------------------


def _one_class(ws: Path, world) -> list[str]:
    rows = [r for r in _rows("cyber_risk_heldout", 4) if r["label"] == 1]
    for r in rows:
        r.pop("pair_id")
    (ws / "risky.jsonl").write_text(_jsonl(rows))
    # a model that does not exist: the data error must come first
    return ["--dataset", str(ws / "risky.jsonl"), "--model", str(ws / "no-such-model")]


def _other_model(ws: Path, world) -> list[str]:
    return ["--dataset", str(world["external"]), "--model", str(world["other"]), "--out", str(ws / "ev")]


def _out_is_file(ws: Path, world) -> list[str]:
    (ws / "taken").write_text("mine")
    return ["--dataset", str(world["external"]), "--out", str(ws / "taken"), "--model", str(ws / "no-such-model")]


def _foreign_file(ws: Path, world) -> list[str]:
    (ws / "ev").mkdir()
    (ws / "ev" / "evaluation.json").write_text("{}")
    return ["--dataset", str(world["external"]), "--out", str(ws / "ev"), "--model", str(ws / "no-such-model")]


def _no_dataset(ws: Path, world) -> list[str]:
    return ["--dataset", str(ws / "missing.jsonl"), "--model", str(ws / "no-such-model")]


def _not_a_bundle(ws: Path, world) -> list[str]:
    (ws / "empty").mkdir()
    return ["--probe", str(ws / "empty"), "--dataset", str(world["external"])]


CASES = {"one-class": (_one_class, "every row is risky"), "other-model": (_other_model, "trained on weights"),
         "out-is-file": (_out_is_file, "is an existing file"), "foreign-file": (_foreign_file, "did not write it"),
         "no-dataset": (_no_dataset, "no such dataset"), "not-a-bundle": (_not_a_bundle, "not a probe bundle")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(world, capsys, tmp_path, case):
    setup, words = CASES[case]
    args = setup(tmp_path, world)
    if "--probe" not in args:
        args = ["--probe", str(world["run"]), *args]
    before, run_before = _snapshot(tmp_path), _snapshot(world["run"])
    code, stdout, stderr = _cli(["evaluate", *args, "--n-bootstrap", "10"], capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], stderr
    assert "Traceback" not in stderr
    assert _snapshot(tmp_path) == before and _snapshot(world["run"]) == run_before


# --- metric helpers: invariants -----------------------------------------------------------------------------


def test_metric_invariants():
    from riskscope.pipeline import binary_metrics, delta_auc, reliability

    rng = np.random.default_rng(0)
    y = np.tile([1, 0], 50)
    g = np.repeat(np.arange(50), 2)
    s = rng.random(100)
    same = delta_auc(y, s, s, g, n_boot=200, seed=0)
    assert same["value"] == 0 and same["ci"] == [0, 0] and same["p_value"] == 1
    better = delta_auc(y, np.where(y == 1, 0.9, 0.1), s, g, n_boot=200, seed=0)
    assert better["ci"][0] > 0 and better["p_value"] < 0.05
    perfect = binary_metrics(y, np.where(y == 1, 0.9, 0.1), g, threshold=0.5, n_boot=100, seed=0)
    assert perfect["auc"] == perfect["pair_accuracy"] == perfect["f1"] == perfect["accuracy"] == 1
    assert perfect["auc_ci"] == perfect["pair_accuracy_ci"] == [1, 1]
    # a calibrated constant: every bin's share equals its score, so ECE is 0
    cal = reliability(np.full(10, 0.35), (np.arange(10) < 4).astype(int))
    assert cal["ece"] == pytest.approx(0.05, abs=1e-6)
    assert reliability(np.tile([0.25, 0.75], 4), np.array([0, 0, 0, 1, 1, 1, 0, 1]))["ece"] == pytest.approx(0.0)


# --- the external set ---------------------------------------------------------------------------------------


def test_heldout_dataset_follows_the_rules():
    from riskscope.data import list_builtins, load_dataset

    assert "cyber_risk_heldout" in list_builtins()
    ds = load_dataset("cyber_risk_heldout")
    held, built = hc.load("cyber_risk_heldout"), hc.load("cyber_risk_pairs")
    assert ds.n_pairs == len(held) >= 120 and len(ds) == 2 * len(held)
    assert {p["category"] for p in held} == {p["category"] for p in built}
    assert hc.rule_problems(held) == []
    assert {p["severity"] for p in held} == {1, 2, 3, 4, 5} and all(r.split == "test" for r in ds)
    comp = hc.composition(held)
    assert 0.3 <= comp["risky_longer"] <= 0.6 and abs(comp["mean_words"]["risky"] - comp["mean_words"]["benign"]) < 1
    ov = hc.overlap(held, built)
    assert ov["max_jaccard"] < 0.5 and ov["max_cosine"] < 0.5 and ov["max_jaccard_within"] < 0.5
    texts = {" ".join(t.lower().split()) for p in built for t in (p["risky"], p["benign"])}
    assert not texts & {" ".join(t.lower().split()) for p in held for t in (p["risky"], p["benign"])}


def test_heldout_datasheet_figures_are_current():
    held, built = hc.load("cyber_risk_heldout"), hc.load("cyber_risk_pairs")
    sheet = (ROOT / "docs" / "datasets" / "cyber_risk_heldout.md").read_text()
    lex = hc.lexical_transfer(built, held)
    ov = hc.overlap(held, built)
    assert f"**{lex['auc']:.3f}**" in sheet and f"**{lex['pair_accuracy']:.3f}**" in sheet
    assert f"{ov['max_jaccard']:.3f}" in sheet and f"{ov['max_cosine']:.3f}" in sheet
