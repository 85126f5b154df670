"""The CLI's exit contract, as users meet it: real subprocesses.

0 success; 2 with one ``error:`` line on stderr (no traceback) for usage errors, bad input and file errors;
130 with "interrupted; re-run to resume" after Ctrl-C; ``--debug`` shows tracebacks. ``--help`` never imports
torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from riskscope.cli._common import INTERRUPTED

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "riskscope.cli"]
HEAVY = ("torch", "transformers", "numpy", "sklearn", "scipy", "safetensors")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# --- help: fast, and without torch ------------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    from riskscope.cli import app
    from typer.main import get_group

    group = get_group(app)
    found = []
    for name, cmd in group.commands.items():
        found.append([name])
        found += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return found


def test_help_of_every_command_imports_no_heavy_module():
    commands = _commands()
    assert {"run", "cache", "verify", "analyze", "probe", "score"} <= {c[0] for c in commands}
    code = ("import sys\nfrom riskscope.cli import main\n"
            f"for cmd in {[[]] + commands!r}:\n"
            "    try:\n        main([*cmd, '--help'])\n"
            "    except SystemExit as e:\n        assert e.code == 0, (cmd, e.code)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
    assert done.stdout.count("Usage: riskscope") == len(commands) + 1


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_python_m_help_never_imports_torch(args):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "riskscope.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: riskscope" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "riskscope.cli" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


# --- usage errors, bad input, file errors ------------------------------------------------------------------------


@pytest.mark.parametrize("args,words", [
    (["run", "--foo"], ["No such option: --foo", "riskscope run --help"]),
    (["cache"], ["Missing option '--out'"]),
    (["run", "--limit", "abc"], ["'--limit'"]),
    (["frobnicate"], ["No such command 'frobnicate'"]),
    (["vector", "build"], ["Missing argument"]),
    (["run", "--skip", "nope"], ["--skip 'nope': not an analysis"]),
])
def test_usage_errors_exit_2_with_one_line(args, words):
    _one_error_line(_cli(*args, timeout=120), *words)


def test_bad_input_and_file_errors_exit_2_with_one_line(tmp_path):
    _one_error_line(_cli("probe", str(tmp_path / "nothing"), timeout=120), "not an activation store")
    _one_error_line(_cli("score", "--probe", str(tmp_path), "--input", str(tmp_path), timeout=120),
                    "Is a directory", str(tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": "other", "label": "perhaps"}\n')
    _one_error_line(_cli("run", "--dataset", str(bad), "--out", str(tmp_path / "run"), timeout=120),
                    f"{bad}:2", "field 'label'")
    assert not (tmp_path / "run").exists()


def test_debug_before_the_command_shows_the_traceback(tmp_path):
    proc = _cli("--debug", "probe", str(tmp_path / "nothing"), timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "StoreError" in proc.stderr


def test_success_is_0():
    proc = _cli("models", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "smollm2-135m" in {m["name"] for m in json.loads(proc.stdout)}


# --- Ctrl-C ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with a real (byte-level BPE) tokenizer, saved as a local HF directory."""
    import torch
    import transformers as tf
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the door was open", "the file was shut"], vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "</s>", "<pad>"], show_progress=False)
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>")
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=0,
                         eos_token_id=1, pad_token_id=2)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def test_ctrl_c_exits_130_and_the_same_command_resumes(tiny_model_dir, tmp_path):
    """SIGINT a real ``riskscope cache`` (one text per chunk, so it runs for seconds) once a chunk is written."""
    for attempt in range(3):  # on a loaded machine the job may finish between the poll and the signal: retry
        out = tmp_path / f"store{attempt}"
        cmd = [*CLI, "cache", "--model", str(tiny_model_dir), "--limit", "150", "--batch-size", "1", "--chunk-rows",
               "1", "--out", str(out), "--json"]
        chunks = out / "chunks"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 240
            while not (chunks.is_dir() and any(chunks.glob("*.safetensors"))):
                assert proc.poll() is None, f"cache exited ({proc.returncode}) before any chunk was written"
                assert time.monotonic() < deadline, "no chunk written within 240 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        if not (proc.returncode == 0 and len(list(chunks.glob("*.safetensors"))) == 300):
            break  # interrupted (the assertions below check how)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in stderr, stderr
    assert stdout == ""
    done = len(list(chunks.glob("*.safetensors")))
    assert 1 <= done < 300

    resumed = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["chunks_reused"] >= done and summary["chunks_reused"] + summary["chunks_written"] == 300
