"""The HTML report: built from a fabricated run folder; one file, no external resources, escaped texts."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from riskscope.errors import RiskscopeError
from riskscope.report import load_run, render, write_report

CATEGORIES = ["code_vulnerability", "credential_exposure", "phishing", "physical_access", "supply_chain"]
MALICIOUS = "<script>alert(1)</script> see https://evil.example/x.png"
BAD_ID = '"><img src=x onerror=alert(2)>'


def _curve(y, s) -> dict:
    fpr, tpr, _ = roc_curve(y, s)
    return {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist()}


def make_run(root: Path, *, hooks=("resid_post", "mlp_neurons"), n_layers: int = 12, pairs_per_cat: int = 16,
             seed: int = 0) -> Path:
    """A realistic run folder from synthetic data: AUC peaks mid-depth, controls near their expected values."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir()
    rows = []
    for c, cat in enumerate(CATEGORIES):
        for k in range(pairs_per_cat):
            pid, sev = f"{cat}-{k:03d}", int(rng.integers(1, 6))
            for label in (1, 0):
                rows.append({"id": f"{pid}:{'risky' if label else 'benign'}", "pair_id": pid, "category": cat,
                             "severity": sev if label else 0, "label": label,
                             "text": f"The {cat.replace('_', ' ')} scenario {k}, {'risky' if label else 'benign'}."})
    y = np.array([r["label"] for r in rows])
    sev = np.array([r["severity"] for r in rows])
    cat_shift = np.array([CATEGORIES.index(r["category"]) for r in rows]) * 0.25
    logit = (y * (1.2 + 0.25 * sev - cat_shift)) - 0.9 + rng.normal(0, 1.0, len(y))
    score = 1 / (1 + np.exp(-logit))
    rows[0]["text"], rows[0]["id"] = MALICIOUS, BAD_ID  # a risky text ...
    score[0] = 0.01                                     # ... the probe misses badly, so it is shown
    for i, r in enumerate(rows):
        r["score"], r["fold"] = round(float(score[i]), 6), i % 5
    with open(run / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)

    results = []
    for h, hook in enumerate(hooks):
        for layer in range(n_layers):
            strength = 2.2 * math.exp(-((layer - 0.65 * n_layers) / (0.3 * n_layers)) ** 2) - 0.2 * h
            s = y * strength + rng.normal(0, 1, len(y))
            auc = float(roc_auc_score(y, s))
            results.append({"hook": hook, "layer": layer, "auc": auc, "auc_ci": [auc - 0.04, min(1.0, auc + 0.035)],
                            "f1": auc - 0.08, "accuracy": auc - 0.06, "pair_accuracy": min(1.0, auc + 0.02),
                            "shuffled_auc": 0.5 + float(rng.normal(0, 0.02)), "roc": _curve(y, s),
                            "n_features": 64, "C": 0.1})
    best = max(results, key=lambda r: r["auc"])
    lex = y * 0.5 + rng.normal(0, 1, len(y))
    metrics = {"model": "tiny-llama", "dataset": "cyber_risk_pairs", "target": "label", "folds": 5,
               "results": results, "best": {"hook": best["hook"], "layer": best["layer"]},
               "lexical": {"auc": float(roc_auc_score(y, lex)), "pair_accuracy": 0.6, "roc": _curve(y, lex)},
               "ask": {"unknown": "ignored"}}
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    manifest = {"riskscope_version": "0.1.0", "created": "2025-05-04T09:30:00Z",
                "model": {"model": "tiny-llama", "weight_hash": "ab12cd34", "family": "llama", "n_layers": n_layers,
                          "d_model": 32, "d_mlp": 48, "dtype": "float32"},
                "dataset": {"name": "cyber_risk_pairs", "rows": len(rows), "pairs": len(rows) // 2,
                            "risky": int(y.sum()), "benign": int(len(y) - y.sum()),
                            "categories": {c: 2 * pairs_per_cat for c in CATEGORIES}},
                "config": {"probe": {"C": [0.01, 0.1, 1.0], "penalty": "l2"}, "note": "<b>not bold</b>"},
                "store": "store"}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A shared run folder: tests that use it must not change it."""
    return make_run(tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="module")
def report(run_dir) -> str:
    return write_report(run_dir).read_text(encoding="utf-8")


@pytest.fixture
def fresh_run(tmp_path) -> Path:
    return make_run(tmp_path, n_layers=4, pairs_per_cat=4)


def test_writes_one_file_at_the_default_path(fresh_run):
    before = set(fresh_run.iterdir())
    out = write_report(fresh_run)
    assert out == fresh_run / "report.html" and out.is_file()
    assert set(fresh_run.iterdir()) - before == {out}


def test_custom_path_and_deterministic_output(fresh_run, tmp_path):
    a = write_report(fresh_run, tmp_path / "a" / "r.html")
    b = write_report(fresh_run, tmp_path / "b.html")
    assert a == tmp_path / "a" / "r.html"
    assert a.read_bytes() == b.read_bytes()


def test_sections_in_order(report):
    titles = ["Tacit cyber-risk probe report", "Dataset", "Probe quality per layer", "ROC curves",
              "Per-category results", "Score by severity", "Confusion matrix at threshold 0.5",
              "Most confident mistakes", "All per-layer metrics", "Run configuration"]
    positions = [report.find(f">{t}</h") for t in titles]
    assert -1 not in positions, dict(zip(titles, positions))
    assert positions == sorted(positions)
    assert report.count("<svg") == 2 + 1 + 1  # one chart per hook, ROC, severity
    assert "<h3>resid_post</h3>" in report and "<h3>mlp_neurons</h3>" in report


def test_verdict_and_tables_carry_the_numbers(run_dir, report):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    b = next(r for r in metrics["results"]
             if (r["hook"], r["layer"]) == (metrics["best"]["hook"], metrics["best"]["layer"]))
    lo, hi = b["auc_ci"]
    assert (f"Best layer {b['hook']}.{b['layer']}: AUC {b['auc']:.2f} [{lo:.2f}, {hi:.2f}] vs lexical baseline "
            f"{metrics['lexical']['auc']:.2f} and shuffled-label control {b['shuffled_auc']:.2f}.") in report
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    y, s = np.array([p["label"] for p in preds]), np.array([p["score"] for p in preds])
    cat = np.array([p["category"] for p in preds])
    for c in CATEGORIES:
        assert f"<td>{c}</td>" in report
        assert f"<td class=num>{roc_auc_score(y[cat == c], s[cat == c]):.3f}</td>" in report
    tp, fp = int(((s >= 0.5) & (y == 1)).sum()), int(((s >= 0.5) & (y == 0)).sum())
    assert f"catches {tp} of {int(y.sum())} risky texts and wrongly flags {fp} of {int((y == 0).sum())}" in report
    assert f"<td class=num>{(tp + int(((s < 0.5) & (y == 0)).sum())) / len(y):.3f}</td>" in report  # accuracy
    assert "<th class=num scope=\"col\">n_features</th>" in report  # extra result keys become columns
    assert 'class="best"' in report


def test_no_external_resources(report, run_dir):
    for bad in ('src="http', "src='http", 'href="http', "<link", "<script", "@import", "url(http", "<iframe"):
        assert bad not in report.lower(), bad
    # Outside escaped user texts there is no URL at all (SVG namespaces are stripped too).
    texts = [json.loads(line)["text"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    stripped = report
    for t in texts:
        stripped = stripped.replace(html.escape(t), "")
    assert "http://" not in stripped and "https://" not in stripped
    assert "default-src 'none'" in report  # the browser is also told to fetch nothing


def test_user_text_is_escaped(report):
    assert "<script>" not in report and "<img src=x" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert html.escape(BAD_ID) in report                      # ids go into title attributes
    assert "&lt;b&gt;not bold&lt;/b&gt;" in report            # config values too


def test_svg_ids_are_unique(report):
    ids = re.findall(r'\bid="([^"]+)"', report)
    assert len(ids) == len(set(ids))


def test_minimal_single_hook_run_with_nans(tmp_path):
    run = tmp_path / "minimal"
    run.mkdir()
    results = [{"hook": "resid_post", "layer": 3, "auc": float("nan"), "f1": None},
               {"hook": "resid_post", "layer": 4, "auc": 0.71, "auc_ci": [0.6, float("nan")]}]
    (run / "metrics.json").write_text(json.dumps({"results": results}))
    text = write_report(run).read_text()
    assert "Best layer resid_post.4: AUC 0.71." in text
    assert "n/a" in text and "NaN" not in text.replace("NaN,", "")  # NaN only inside the JSON dumps, if at all
    assert text.count("predictions.jsonl is missing") == 4 and "No per-category counts" in text
    assert "manifest.json is missing" in text
    assert "no lexical baseline" in text and "holds no ROC curves" in text
    assert "names no best probe" in text
    assert text.count("<svg") == 1


def test_predictions_without_pairs_or_severity(fresh_run):
    lines = (fresh_run / "predictions.jsonl").read_text().splitlines()
    recs = [{k: v for k, v in json.loads(line).items() if k not in ("pair_id", "severity")} for line in lines]
    (fresh_run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = write_report(fresh_run).read_text()
    assert "has no severity values" in text
    assert "<td>phishing</td><td class=num>4</td><td class=num>4</td><td class=num>0</td>" in text  # no pairs
    assert "0.00–1.00" not in text  # 4 pairs per category: too few for a bootstrap interval


def test_single_result_run(tmp_path):
    run = make_run(tmp_path, hooks=("attn_out",), n_layers=1, pairs_per_cat=3)
    text = write_report(run).read_text()
    assert "Best layer attn_out.0" in text and "1 layer probed" in text
    assert text.count("<svg") == 3


def test_leaky_control_turns_the_verdict_into_a_warning(fresh_run):
    metrics = json.loads((fresh_run / "metrics.json").read_text())
    for r in metrics["results"]:
        r["shuffled_auc"] = 0.74
    (fresh_run / "metrics.json").write_text(json.dumps(metrics))
    text = write_report(fresh_run).read_text()
    assert 'class="verdict warning"' in text and "shuffled-label control scored 0.74" in text


@pytest.mark.parametrize("content, message", [
    ('{"label": 1, "score": 0.3}\n{"label": 2, "score": 0.1}\n', ":2: field 'label'"),
    ('{"label": 1, "score": 0.3}\n\n{"label": 0, "score": "x"}\n', ":3: field 'score'"),
    ('{"label": 1, "score": 0.3}\n{oops\n', ":2: invalid JSON"),
])
def test_bad_predictions_name_line_and_field(fresh_run, content, message):
    (fresh_run / "predictions.jsonl").write_text(content)
    with pytest.raises(RiskscopeError, match=re.escape(message)):
        load_run(fresh_run)


def test_missing_or_bad_metrics(tmp_path):
    with pytest.raises(RiskscopeError, match="run folder not found"):
        write_report(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(RiskscopeError, match=r"metrics\.json: not found"):
        write_report(tmp_path / "r")
    (tmp_path / "r" / "metrics.json").write_text('{"results": [{"hook": "resid_post"}]}')
    with pytest.raises(RiskscopeError, match=r"results\[0\]: missing field 'layer'"):
        render(load_run(tmp_path / "r"))


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.slow
def test_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    out = write_report(run_dir, tmp_path / "report.html")
    png = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,4000",
                    out.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)
    assert len(data) > 50_000  # a blank page compresses to a few kB
