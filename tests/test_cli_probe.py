"""CLI commands on run folders: probe tables per target, the run's model settings reused by the analysis
commands, the note when a target leaves the analyses out, and ``riskscope verify``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import riskscope.cli._common as cli_common
from riskscope.cli import app
from riskscope.cli._probe import TABLE_COLUMNS
from riskscope.pipeline import parse_module_paths
from riskscope.probes import CategoryLayerResult, LayerResult, SeverityLayerResult

from conftest import make_tiny
from test_neurons import tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread

CATEGORIES = ("net", "mail", "disk")


def labelled_dataset(path, n_pairs: int = 12) -> str:
    """The tiny pairs with three categories and a severity on each risky text."""
    lines = []
    for r in tiny_dataset(n_pairs).rows:
        i = int(r.pair_id[1:])
        lines.append({"id": r.id, "text": r.text, "label": r.label, "pair_id": r.pair_id,
                      "category": CATEGORIES[i % 3], "severity": 1 + i % 3 if r.label == 1 else None})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


class Loads:
    """Stands in for the CLI's model loader: answers with the tiny model, records how it was asked."""

    def __init__(self, lm):
        self.lm, self.calls = lm, []

    def __call__(self, model, dtype, device, trust=False, paths=None):
        self.calls.append({"model": model, "trust": bool(trust), "paths": parse_module_paths(paths)})
        return self.lm


@pytest.fixture(scope="module")
def lm():
    return make_tiny("llama")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, lm):
    """A run made with --trust-remote-code and --module-paths (no analyses), and its loader's calls."""
    tmp = tmp_path_factory.mktemp("run")
    loads = Loads(lm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_common, "load_lm", loads)
        r = CliRunner().invoke(app, ["run", "--dataset", labelled_dataset(tmp / "d.jsonl"), "--out", str(tmp / "run"),
                                     "--folds", "2", "--n-bootstrap", "0", "--skip", "all", "--no-report",
                                     "--trust-remote-code", "--module-paths", "blocks=model.layers"])
    assert r.exit_code == 0, r.output
    assert loads.calls == [{"model": "default", "trust": True, "paths": {"blocks": "model.layers"}}]
    return tmp / "run"


def test_table_columns_are_fields_the_results_write():
    """Every column of the probe table is a key of its target's results (to_dict), so none prints n/a."""
    fields = {"binary": LayerResult, "category": CategoryLayerResult, "severity": SeverityLayerResult}
    for target, (key, columns) in TABLE_COLUMNS.items():
        names = set(fields[target].__dataclass_fields__)
        assert key in names and all(name in names for _, name in columns), target


@pytest.mark.parametrize("target", ["category", "severity"])
def test_probe_table_shows_the_metrics_of_each_target(run_dir, tmp_path, target):
    out = tmp_path / target
    r = CliRunner().invoke(app, ["probe", str(run_dir), "--out", str(out), "--target", target, "--folds", "2",
                                 "--n-bootstrap", "20"])
    assert r.exit_code == 0, r.output
    assert "n/a" not in r.stdout, r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == target
    key = TABLE_COLUMNS[target][0]
    best = max(metrics["results"], key=lambda x: x[key])
    assert f"{best[key]:.3f}" in r.stdout  # the ranking metric of the best layer, as metrics.json has it


def test_analysis_commands_load_the_model_as_the_run_recorded(run_dir, lm, monkeypatch, tmp_path):
    loads = Loads(lm)
    monkeypatch.setattr(cli_common, "load_lm", loads)
    runner = CliRunner()
    for args in (["analyze", str(run_dir), "--skip", "ask,traces,caution,effects,vectors", "--no-report"],
                 ["neurons", str(run_dir), "--effect-layers", "2", "--n-texts", "4", "--singles", "1", "--group", "2",
                  "--out", str(tmp_path / "n.json")],
                 ["trace", "the door", "--run", str(run_dir), "--no-attribution"],
                 ["score", "the door was open", "--probe", str(run_dir)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args[0], r.output, r.exception)
    want = {"trust": True, "paths": {"blocks": "model.layers"}}
    assert [{k: c[k] for k in want} for c in loads.calls] == [want] * 4
    assert loads.calls[0]["model"] == lm.model_id  # the run's model, as its manifest recorded it
    # the options override what was recorded
    r = runner.invoke(app, ["trace", "x", "--run", str(run_dir), "--no-attribution", "--no-trust-remote-code",
                            "--module-paths", "blocks=model.layers,final_norm=model.norm"])
    assert r.exit_code == 0, r.output
    assert loads.calls[-1]["trust"] is False
    assert loads.calls[-1]["paths"] == {"blocks": "model.layers", "final_norm": "model.norm"}


def test_ask_and_steer_take_trust_and_module_paths(lm, monkeypatch, tmp_path):
    loads = Loads(lm)
    monkeypatch.setattr(cli_common, "load_lm", loads)
    data = labelled_dataset(tmp_path / "d.jsonl", 6)
    r = CliRunner().invoke(app, ["ask", "--dataset", data, "--prompt", "{text} so", "--positive", "!", "--negative",
                                 "?", "--folds", "2", "--n-bootstrap", "0", "--json", "--trust-remote-code",
                                 "--module-paths", "blocks=model.layers"])
    assert r.exit_code == 0, r.output
    assert loads.calls == [{"model": "default", "trust": True, "paths": {"blocks": "model.layers"}}]


def test_run_with_target_category_says_it_leaves_the_analyses_out(lm, monkeypatch, tmp_path):
    monkeypatch.setattr(cli_common, "load_lm", Loads(lm))
    r = CliRunner().invoke(app, ["run", "--dataset", labelled_dataset(tmp_path / "d.jsonl"), "--out",
                                 str(tmp_path / "run"), "--folds", "2", "--n-bootstrap", "0", "--target", "category",
                                 "--no-report", "--json"])
    assert r.exit_code == 0, r.output
    notes = json.loads(r.stdout)["notes"]
    assert len(notes) == 1 and "analyses not run" in notes[0] and "category" in notes[0]
    assert f"note: {notes[0]}" in r.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["notes"] == notes and manifest["analyses"] == []
    assert not (tmp_path / "run" / "neurons.json").exists()



def test_verify_a_real_store(run_dir, tmp_path):
    """`verify` lists each problem on stdout and fails with one error; `--quick` skips the hashes."""
    from riskscope.errors import RiskscopeError

    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(run_dir / "store")])
    assert r.exit_code == 0 and r.stdout.strip().endswith("rows)"), r.output
    r = runner.invoke(app, ["verify", str(run_dir), "--json"])  # a run folder means its store
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    import shutil

    broken = tmp_path / "store"
    shutil.copytree(run_dir / "store", broken)
    chunk = next((broken / "chunks").glob("*.safetensors"))
    data = bytearray(chunk.read_bytes())
    data[-64:] = bytes(64)  # same size and header, other values: only the hash can tell
    chunk.write_bytes(bytes(data))
    r = runner.invoke(app, ["verify", str(broken), "--quick"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(broken)])
    assert isinstance(r.exception, RiskscopeError) and "problem(s)" in str(r.exception)
    assert chunk.name in r.stdout


SHARED = ("--model", "--dtype", "--device", "--trust-remote-code", "--module-paths", "--dataset", "--limit", "--json",
          "--folds", "--n-bootstrap", "--penalty", "--store-dtype", "--chunk-rows", "--truncate")  # melbo --target: a layer


# an option of the same name that means something else there, said in its own help
DIFFERENT = {("riskscope serve", "--truncate"): "cuts texts to the service's --max-tokens, not the model context",
             ("riskscope run", "--model"): "repeatable: one run per model and a comparison page",
             ("riskscope compare layers", "--model"): "given twice: model A, then model B",
             ("riskscope evaluate", "--dataset"): "a labelled external set, pairs or single texts",
             ("riskscope sae risk", "--dataset"): "must be paired",
             ("riskscope sae browse", "--dataset"): "extra texts for top contexts, '' for none",
             ("riskscope compare features", "--dataset"): "read this dataset's texts instead of --corpus",
             ("riskscope sae risk", "--limit"): "pairs of the paired dataset",
             ("riskscope sae risk", "--folds"): "folds of the sparse-vs-dense probe comparison"}


def test_shared_options_have_one_help_text():
    """Each shared option reads the same in every command (run-folder commands add where their default comes
    from)."""
    from typer.main import get_group

    from riskscope.cli._common import _RECORDED

    texts: dict[str, set[str]] = {}
    seen: dict[str, set[str]] = {}

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")
        for p in getattr(cmd, "params", []):
            for opt in p.opts:
                if (path, opt) in DIFFERENT:
                    continue
                if opt in SHARED:
                    text = (p.help or "").replace(_RECORDED, "").replace(" (default: the run's model)", "")
                    texts.setdefault(opt, set()).add(text)
                    seen.setdefault(opt, set()).add(path)

    walk(get_group(app), "riskscope")
    assert set(texts) == set(SHARED)
    assert {k: v for k, v in texts.items() if len(v) != 1} == {}
    assert len(seen["--device"]) >= 8 and len(seen["--trust-remote-code"]) >= 8
