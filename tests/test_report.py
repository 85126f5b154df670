"""The HTML report: built from a fabricated run folder and from a tiny model's real run (CLI and pipeline);
one file, no external resources, every text escaped, every metric read from metrics.json or riskscope.probes.

``tiny_run`` and ``tiny_melbo_run`` are shared with tests/test_browser.py."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from markupsafe import escape
from sklearn.metrics import roc_auc_score, roc_curve
from typer.testing import CliRunner

from riskscope.errors import RiskscopeError
from riskscope.models import LoadedModel, resolve_layout
from riskscope.probes import summarize_binary
from riskscope.report import load_run, render, write_melbo_report, write_report

from conftest import _COMMON, TinyTokenizer

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
        assert f'<td class="free">{c}</td>' in report
        assert f'<td class="num">{roc_auc_score(y[cat == c], s[cat == c]):.3f}</td>' in report
    tp, fp = int(((s >= 0.5) & (y == 1)).sum()), int(((s >= 0.5) & (y == 0)).sum())
    assert f"catches {tp} of {int(y.sum())} risky texts and wrongly flags {fp} of {int((y == 0).sum())}" in report
    assert f'<td class="num">{(tp + int(((s < 0.5) & (y == 0)).sum())) / len(y):.3f}</td>' in report  # accuracy
    assert '<th class="num" scope="col">n_features</th>' in report  # extra result keys become columns
    assert 'class="best"' in report


def test_no_external_resources(report, run_dir):
    for bad in ('src="http', "src='http", 'href="http', "<link", "<script", "@import", "url(http", "<iframe"):
        assert bad not in report.lower(), bad
    # Outside escaped user texts there is no URL at all (SVG namespaces are stripped too).
    texts = [json.loads(line)["text"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    stripped = report
    for t in texts:
        stripped = stripped.replace(str(escape(t)), "")
    assert "http://" not in stripped and "https://" not in stripped
    assert "default-src 'none'" in report  # the browser is also told to fetch nothing


def test_user_text_is_escaped(report):
    assert "<script>" not in report and "<img src=x" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert str(escape(BAD_ID)) in report                      # ids go into title attributes
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
    assert '<td class="free">phishing</td><td class="num">4</td><td class="num">4</td><td class="num">0</td>' in text  # no pairs
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



def _section(page: str, anchor: str) -> str:
    """The markup of one ``<section id=anchor>`` of a page."""
    start = page.index(f'<section id="{anchor}">')
    return page[start:page.index("</section>", start)]


def _visible(page: str) -> str:
    """The text a reader sees: no style, no SVG, no tags."""
    page = re.sub(r"<style>.*?</style>|<svg.*?</svg>", "", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)


def test_report_shows_metrics_json_intervals_for_the_best_layer(run_dir, report):
    """The verdict, the metrics table and the all-categories row show metrics.json's AUC interval of the best
    layer, not one recomputed from the predictions (which would differ: the fabricated interval is arbitrary)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    b = next(r for r in metrics["results"]
             if (r["hook"], r["layer"]) == (metrics["best"]["hook"], metrics["best"]["layer"]))
    lo, hi = b["auc_ci"]
    verdict = re.search(r'id="verdict">(.*?)</div>', report, re.S).group(1)
    assert f"AUC {b['auc']:.2f} [{lo:.2f}, {hi:.2f}]" in verdict
    best_row = re.search(r'<tr class="best">(.*?)</tr>', _section(report, "metrics")).group(1)
    assert f'<td class="num">{b["auc"]:.3f}</td><td class="num">{lo:.3f}–{hi:.3f}</td>' in best_row
    total = re.search(r'<tr class="total">(.*?)</tr>', _section(report, "categories")).group(1)
    assert f'<td class="num">{b["auc"]:.3f}</td><td class="num">{lo:.2f}–{hi:.2f}</td>' in total
    assert f'<td class="num">{b["pair_accuracy"]:.3f}</td>' in total


def test_nan_and_garbage_metrics_render_na(tmp_path):
    run = tmp_path / "garbage"
    run.mkdir()
    results = [{"hook": "resid_post", "layer": 0, "auc": float("nan"), "auc_ci": "oops", "f1": None},
               {"hook": "resid_post", "layer": 1, "auc": None, "auc_ci": [None, None], "pair_accuracy": float("inf")},
               {"hook": "resid_post", "layer": 2, "auc": None, "auc_ci": [0.1], "shuffled_auc": None,
                "accuracy": float("-inf"), "C": float("nan")},
               {"hook": "resid_post", "layer": 3, "auc": 0.7, "auc_ci": [0.6, float("-inf")], "f1": float("nan")}]
    (run / "metrics.json").write_text(json.dumps({"results": results, "lexical": {"auc": "n/a"},
                                                  "best": {"hook": "resid_post", "layer": 0}}))
    (run / "ask.json").write_text(json.dumps({"results": [{"template": {"name": "t", "prompt": "{text}?"},
                                                           "answer_tokens": {"positive": [" y"], "negative": [" n"]},
                                                           "auc": None, "auc_ci": [float("nan"), 1.0], "f1": "x",
                                                           "accuracy": float("nan"), "pair_accuracy": [],
                                                           "zero_shot_accuracy": {}}], "ids": []}))
    (run / "caution.json").write_text(json.dumps({
        "layers": [1], "hook": "resid_post", "scale": 8.0, "n_prompts": 2, "probe": None, "wins": None,
        "steered": {"risk_dlogp": float("nan"), "kl": None, "probe_delta": "?"}, "random": {}, "baseline": {}}))
    text = write_report(run).read_text()
    seen = _visible(text)
    for bad in ("nan", "NaN", "None", "inf", "Infinity", "<b>0.9"):
        assert not re.search(rf"(?<![\w/]){re.escape(bad)}(?![\w])", seen), (bad, seen[:2000])
    assert seen.count("n/a") >= 20
    metrics = _section(text, "metrics")
    assert metrics.count("<td class=\"num\">n/a</td>") >= 10
    assert "No probe result has an AUC" in text  # the declared best has none


@pytest.mark.parametrize("value", ["<b>0.9</b>", "high", True, [1, 2], {"a": 1}])
def test_a_metric_that_is_not_a_number_is_a_damaged_file(tmp_path, value):
    """NaN and null render as n/a; a string, boolean or list where a metric belongs is refused, named."""
    run = tmp_path / "garbage"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"results": [{"hook": "resid_post", "layer": 0, "auc": 0.6},
                                                              {"hook": "resid_post", "layer": 1, "f1": value}]}))
    with pytest.raises(RiskscopeError, match=r"results\[1\]: field 'f1' must be a number or null"):
        write_report(run)
    assert not (run / "report.html").exists()


def _tiny_model() -> LoadedModel:
    """A 3-layer random llama with the character tokenizer and a long context (the caution prompts fit)."""
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(**{**_COMMON, "max_position_embeddings": 1024}, num_key_value_heads=2)
    cfg._attn_implementation = "sdpa"
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=TinyTokenizer(), layout=resolve_layout(model), model_id="tiny-llama",
                       weight_hash="tiny-llama-0")


def tiny_run(root: Path, n_pairs: int) -> Path:
    """A real run of a tiny random model through the CLI (cache, probes, every analysis) and the report.

    Pairs differ by '!' characters (a signal the character tokenizer sees), in three categories with
    severities. The default ask templates need a word tokenizer, so the ask baseline runs through
    ``analyze_run`` with a one-character template; then the report is rewritten."""
    import riskscope.cli._common as cli
    from riskscope.cli import app as cli_app
    from riskscope.pipeline import analyze_run
    from riskscope.scorers import AskTemplate

    lm, threads = _tiny_model(), torch.get_num_threads()
    words = ["door", "file", "mail", "code", "key", "wifi", "disk", "card", "port", "user", "app", "log"]
    rows = []
    for i in range(n_pairs):
        w, cat = words[i % len(words)] + str(i), ("access", "data", "network")[i % 3]
        rows.append({"id": f"p{i}:risky", "text": f"the {w} was open !!!" + "!" * (i % 3), "label": 1,
                     "pair_id": f"p{i}", "category": cat, "severity": 1 + i % 5})
        rows.append({"id": f"p{i}:benign", "text": f"the {w} was shut" + "!" * (i % 2), "label": 0,
                     "pair_id": f"p{i}", "category": cat, "severity": 0})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = root / "run"
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cli, "load_lm", lambda *a, **k: lm)
            r = CliRunner().invoke(cli_app, ["run", "--dataset", str(data), "--out", str(run), "--folds", "3",
                                             "--n-bootstrap", "200", "--skip", "ask", "--json"])
        assert r.exit_code == 0, r.output + repr(r.exception)
        analyze_run(lm, run, ("ask",), templates=(AskTemplate("bang", "{text} so", positive=("!",), negative=("?",)),),
                    n_bootstrap=200)
    finally:
        torch.set_num_threads(threads)
    write_report(run)
    return run


def tiny_melbo_run(root: Path, prompts=("How do I pick a lock?", "abc")) -> Path:
    """A real MELBO run of a tiny random model through the CLI (which writes the page)."""
    import riskscope.cli._common as cli
    from riskscope.cli import app as cli_app
    from test_melbo import tiny_lm

    lm, threads, out = tiny_lm("phi3"), torch.get_num_threads(), root / "melbo"
    args = ["melbo", *[x for p in prompts for x in ("--prompt", p)], "--eval-prompt", "zz top", "--vectors", "4",
            "--steps", "6", "--source", "0", "--target", "2", "--raw", "--sweep-vectors", "2", "--sweep-steps", "3",
            "--radius-grid", "0.2,1.0", "--max-new-tokens", "6", "--samples", "1", "--random", "3",
            "--embedder", "ngram", "--out", str(out), "--json"]
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cli, "load_lm", lambda *a, **k: lm)
            r = CliRunner().invoke(cli_app, args)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("tiny"), n_pairs=12)


@pytest.fixture(scope="module")
def melbo_run(tmp_path_factory) -> Path:
    return tiny_melbo_run(tmp_path_factory.mktemp("melbo"), prompts=(HOSTILE, "abc"))


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> $x$'


def test_summaries_from_predictions_equal_metrics_json(real_run):
    """One definition of each metric: probes.summarize_binary on predictions.jsonl with metrics.json's bootstrap
    settings gives metrics.json's AUC, interval and pair accuracy of the saved probe (the recipe chosen by
    nested CV, whose out-of-fold probabilities predictions.jsonl holds)."""
    metrics = json.loads((real_run / "metrics.json").read_text())
    assert metrics["saved"]["kind"] == "recipe"
    chosen = metrics["recipe"]["chosen"]
    preds = [json.loads(x) for x in (real_run / "predictions.jsonl").read_text().splitlines()]
    cfg = metrics["config"]
    s = summarize_binary(np.array([p["label"] for p in preds]), np.array([p["score"] for p in preds]),
                         np.array([p["pair_id"] or p["id"] for p in preds]), n_boot=cfg["n_bootstrap"],
                         level=cfg["ci_level"], seed=cfg["seed"])
    assert s.auc == pytest.approx(chosen["auc"], abs=1e-9)
    assert s.auc_ci == pytest.approx(tuple(chosen["auc_ci"]), abs=1e-9)
    assert s.pair_accuracy == pytest.approx(chosen["pair_accuracy"], abs=1e-9)
    html = (real_run / "report.html").read_text()
    assert sorted(re.findall(r'<section id="([a-z]+)"', html)) == sorted(
        ["dataset", "recipes", "layers", "roc", "categories", "severity", "confusion", "errors", "ask", "neurons", "traces",
         "steering", "metrics", "config"])
    assert html.count("<svg") == 2 + 1 + 1 + 1  # two hooks, ROC, severity, neuron heatmap


def test_real_run_sections_show_the_analyses(real_run):
    html = (real_run / "report.html").read_text()
    assert re.search(r"<td class=\"free\">L\d\.top\d+</td>", _section(html, "neurons"))  # clamped groups, with their controls
    assert "<svg" in _section(html, "neurons") and "boosts" in _section(html, "neurons")
    assert "&lt;58&gt;" in _section(html, "traces") and "<58>" not in html  # the tiny tokenizer's tokens
    ask = _section(html, "ask")
    assert re.search(r"probe \w+\.\d on the same 24 texts", ask) and "ask: bang (" in ask
    assert "risk vector" in _section(html, "steering") and "risk_diff_of_means.gguf" in _section(html, "steering")
    assert _section(html, "severity").count("<svg") == 1 and "Spearman" in _section(html, "severity")


def _poison(value, keys: set[str]):
    """``value`` with every string under one of ``keys`` (at any depth) replaced by HOSTILE."""
    if isinstance(value, dict):
        return {k: (_poison_all(v) if k in keys else _poison(v, keys)) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, keys) for v in value]
    return value


def _poison_all(value):
    if isinstance(value, str):
        return HOSTILE
    if isinstance(value, list):
        return [_poison_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _poison_all(v) for k, v in value.items()}
    return value


def _rewrite(path: Path, keys: set[str]) -> None:
    path.write_text(json.dumps(_poison(json.loads(path.read_text()), keys)))


def test_hostile_text_is_escaped_in_every_section(real_run, tmp_path):
    run = Path(shutil.copytree(real_run, tmp_path / "run"))
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    for p in preds[:2]:
        p.update(text=HOSTILE, category=HOSTILE, id=p["id"] + HOSTILE)
    (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["results"][0]["hook"] = HOSTILE
    metrics["results"][0]["note"] = HOSTILE  # an extra scalar field: a column of the metrics table
    metrics["model"] = HOSTILE
    (run / "metrics.json").write_text(json.dumps(metrics))
    _rewrite(run / "manifest.json", {"dataset", "config"})
    _rewrite(run / "ask.json", {"template", "answer_tokens"})
    _rewrite(run / "neurons.json", {"label", "token", "boosts"})
    _rewrite(run / "traces.json", {"tokens", "probe"})
    _rewrite(run / "caution.json", {"samples", "hook", "probe"})
    page = write_report(run).read_text()
    assert "<script" not in page and "<img" not in page
    safe = str(escape(HOSTILE))
    for anchor in ("dataset", "layers", "categories", "errors", "ask", "neurons", "traces", "steering", "metrics"):
        assert safe in _section(page, anchor), anchor  # (ROC and confusion show no dataset text)
    assert str(escape(json.dumps(HOSTILE))) in _section(page, "config")  # inside the JSON dump
    assert safe in page[:page.index("<nav")]  # header: model name
    assert f'title="{escape(preds[0]["id"])}"' in _section(page, "errors")  # ids go into attributes


def test_melbo_page_escapes_and_reads_only_the_files(melbo_run, tmp_path):
    page = (melbo_run / "report.html").read_text()
    assert "<script" not in page and "<img" not in page and str(escape(HOSTILE)) in _section(page, "setup")
    for anchor in ("setup", "controls", "radius", "training", "unsteered", "clusters", "completions", "files"):
        assert f'<section id="{anchor}">' in page, anchor
    assert page.count("<svg") == 4 and "the seed" not in page
    out = Path(shutil.copytree(melbo_run, tmp_path / "m"))
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    for r in rows:
        r["text"] = HOSTILE
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _rewrite(out / "clusters.json", {"representative_completions"})
    _rewrite(out / "config.json", {"model", "eval_prompts", "prompts"})
    page = write_melbo_report(out).read_text()
    assert "<script" not in page and "<img" not in page
    for anchor in ("setup", "unsteered", "clusters", "completions"):
        assert str(escape(HOSTILE)) in _section(page, anchor), anchor
    (out / "metrics.json").unlink()
    with pytest.raises(RiskscopeError, match=r"metrics\.json: not found"):
        write_melbo_report(out)


def test_summarize_binary_is_the_probes_metrics():
    """The one function the report calls for subsets: sklearn's numbers, the probes' pair accuracy and interval."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from riskscope.probes import auc_ci, pair_accuracy, pair_count

    rng = np.random.default_rng(1)
    y = np.tile([1, 0], 30)
    groups = np.repeat([f"p{i}" for i in range(30)], 2)
    groups[:4] = ["a", "b", "c", "d"]  # four unpaired texts
    s = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
    m = summarize_binary(y, s, groups, n_boot=300, level=0.9, seed=3)
    assert m.auc == roc_auc_score(y, s) and m.auc_ci == auc_ci(y, s, groups, 300, 0.9, 3)
    assert m.pair_accuracy == pair_accuracy(y, s, groups) and m.n_pairs == pair_count(y, groups) == 28
    assert [[m.tn, m.fp], [m.fn, m.tp]] == confusion_matrix(y, s >= 0.5).tolist()
    assert m.accuracy == pytest.approx(accuracy_score(y, s >= 0.5)) and m.f1 == pytest.approx(f1_score(y, s >= 0.5))
    few = summarize_binary(y[:8], s[:8], groups[:8], min_groups=10)
    assert math.isnan(few.auc_ci[0]) and math.isfinite(few.auc)
    one_class = summarize_binary(y[y == 1], s[y == 1], groups[y == 1])
    assert math.isnan(one_class.auc) and math.isnan(one_class.false_positive_rate) and one_class.n_neg == 0


@pytest.mark.parametrize("content, message", [
    ("{not json", r"config\.json:1: invalid JSON"),
    ('{"melbo": {"n_vectors": 0}}', r"config\.json: field 'melbo'"),
])
def test_melbo_page_names_a_broken_file(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RiskscopeError, match=message):
        write_melbo_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
