"""A table-driven corpus of bad inputs through the real CLI.

Every case runs ``riskscope.cli.main`` in-process (the entry point users run, with its real argument
parsing and error handling) on a tiny model folder saved to disk and loaded like any user's model, and
asserts the error contract:

* the exit status is the one stated (2 for every error, usage errors included);
* stderr is exactly one line, and no traceback escapes;
* nothing in the workspace changed: every file that was there is byte-identical, none was deleted, and
  no new file or folder was left behind (no half-written output).

Inputs are built per case in a fresh workspace; the good run folder and store they start from are made
once per test session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tinyhf import build_tiny_hf

# --------------------------------------------------------------------------------------------------
# session fixtures: a tiny model folder, a small dataset, a good run folder and a chunked store


def _pairs(n: int) -> list[dict]:
    from riskscope.data import load_dataset

    data = load_dataset("cyber_risk_pairs")
    by_pair: dict[str, list] = {}
    for r in data.rows:
        by_pair.setdefault(r.pair_id, []).append(r)
    rows = []
    for pid in list(by_pair)[:n]:
        for r in by_pair[pid]:
            rows.append({"id": r.id, "text": r.text[:160], "label": r.label, "pair_id": r.pair_id,
                         "category": r.category, "severity": r.severity})
    return rows


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _cli(args: list[str], capsys) -> tuple[int, str, str, BaseException | None]:
    """Run the real CLI entry point in-process: (exit status, stdout, stderr, escaped exception)."""
    from riskscope.cli import main

    old = sys.argv
    sys.argv = ["riskscope", *args]
    code, escaped = 0, None
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - a traceback escaping main() is exactly what we look for
        code, escaped = -1, e
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err, escaped


@pytest.fixture(scope="module")
def world(tmp_path_factory, module_home):
    """A tiny model, a 10-pair dataset, a good run (with vectors) and a 4-chunk store, made once."""
    import _pytest.capture  # noqa: F401

    root = tmp_path_factory.mktemp("bad_inputs_world")
    model = build_tiny_hf(root / "model")
    data = root / "pairs.jsonl"
    data.write_text(_jsonl(_pairs(10)))
    run = root / "run"
    store = root / "store"
    from riskscope.cli import main

    for args in (["run", "--model", str(model), "--dataset", str(data), "--out", str(run), "--folds", "2",
                  "--n-bootstrap", "20", "--skip", "neurons,effects,ask,traces,caution"],
                 ["cache", "--model", str(model), "--dataset", str(data), "--out", str(store),
                  "--chunk-rows", "4", "--layers", "0,1"]):
        old = sys.argv
        sys.argv = ["riskscope", *args]
        try:
            main()
        except SystemExit as e:
            assert not e.code, f"building the corpus world failed: {args}"
        finally:
            sys.argv = old
    assert (run / "probe").is_dir() and (store / "manifest.json").is_file()
    yield {"model": model, "data": data, "run": run, "store": store}


# --------------------------------------------------------------------------------------------------
# the workspace of one case and its snapshot


def _snapshot(root: Path) -> dict[str, str]:
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if "__pycache__" in rel:
            continue
        snap[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


class WS:
    """A case's workspace: ``ws.path(name)`` plus helpers that write bad inputs into it."""

    def __init__(self, root: Path, world: dict):
        self.root, self.world = root, world

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, content: str | bytes) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        return p

    def run(self) -> Path:
        dst = self.root / "run"
        if not dst.exists():
            shutil.copytree(self.world["run"], dst)
        return dst

    def store(self) -> Path:
        dst = self.root / "store"
        if not dst.exists():
            shutil.copytree(self.world["store"], dst)
        return dst

    def chunk(self, i: int) -> Path:
        return self.store() / "chunks" / f"{i:06d}.safetensors"

    def dataset(self, rows: list[dict], name: str = "bad.jsonl") -> Path:
        return self.write(name, _jsonl(rows))


# --------------------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    setup: Callable[[WS], None] | None = None
    code: int = 2
    needs: str = ""


def _good(ws: WS) -> list[dict]:
    return _pairs(6)


def _edit_rows(fn) -> Callable[[WS], None]:
    def setup(ws: WS) -> None:
        rows = _good(ws)
        fn(rows)
        ws.dataset(rows)
    return setup


def _set(i: int, key: str, value):
    def fn(rows):
        rows[i][key] = value
    return fn


def _drop(i: int, key: str):
    def fn(rows):
        rows[i].pop(key)
    return fn


def _manifest_edit(fn) -> Callable[[WS], None]:
    def setup(ws: WS) -> None:
        path = ws.store() / "manifest.json"
        m = json.loads(path.read_text())
        fn(m)
        path.write_text(json.dumps(m))
    return setup


def _bytes_edit(target: Callable[[WS], Path], fn: Callable[[bytes], bytes]) -> Callable[[WS], None]:
    def setup(ws: WS) -> None:
        p = target(ws)
        p.write_bytes(fn(p.read_bytes()))
    return setup


def _corrupt_middle(b: bytes) -> bytes:
    mid = len(b) // 2
    return b[:mid] + bytes((x ^ 0x5A) for x in b[mid:mid + 1000]) + b[mid + 1000:]


def _swap_chunks(ws: WS) -> None:
    a, b = ws.chunk(0), ws.chunk(1)
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def _bundle_edit(fn) -> Callable[[WS], None]:
    def setup(ws: WS) -> None:
        path = ws.run() / "probe" / "bundle.json"
        info = json.loads(path.read_text())
        fn(info)
        path.write_text(json.dumps(info))
    return setup


def _reshape_weights(ws: WS) -> None:
    from safetensors.numpy import load_file, save_file

    path = ws.run() / "probe" / "weights.safetensors"
    arrays = load_file(str(path))
    save_file({k: (v[..., :3] if v.ndim else v) for k, v in arrays.items()}, str(path))


def _model_dir(config: str | None, weights: bool = False) -> Callable[[WS], None]:
    def setup(ws: WS) -> None:
        d = ws.path("mdl")
        d.mkdir()
        if config is not None:
            (d / "config.json").write_text(config)
        if weights:
            shutil.copy(ws.world["model"] / "model.safetensors", d / "model.safetensors")
    return setup


def _other_store(ws: WS) -> None:
    """A second store of the same data and model, other layers: its chunk 0 is 'foreign' to ours."""
    ws.store()


M, D = "{M}", "{D}"
CACHE = ("cache", "--model", M, "--dataset", D, "--out", "{WS}/s")
CACHE_BAD = ("cache", "--model", M, "--dataset", "{WS}/bad.jsonl", "--out", "{WS}/s")
RUN_T = ("run", "--model", M, "--dataset", D, "--out", "{WS}/r", "--folds", "2", "--n-bootstrap", "20", "--skip",
         "all")
MELBO_BASE = ("melbo", "--model", M, "--out", "{WS}/m", "--prompt", "Tell me a story.", "--vectors", "2", "--steps",
              "2")
MELBO_TAIL = ("--max-new-tokens", "4", "--random", "1", "--embedder", "ngram")
MELBO = (*MELBO_BASE, "--radius", "1.0", *MELBO_TAIL)
SCORE = ("score", "--probe", "{WS}/run")

CASES: list[Case] = [
    # --- usage errors -----------------------------------------------------------------------------
    Case("usage-unknown-command", ("nosuchcommand",)),
    Case("usage-unknown-option", ("cache", "--nosuch", "--out", "{WS}/s")),
    Case("usage-missing-out", ("cache",)),
    Case("usage-limit-not-int", (*CACHE, "--limit", "abc")),
    Case("usage-batch-float", (*CACHE, "--batch-size", "1.5")),
    Case("usage-run-folds-abc", ("run", "--out", "{WS}/r", "--folds", "abc")),
    Case("usage-probe-no-path", ("probe",)),
    Case("usage-score-no-probe", ("score", "some text")),
    Case("usage-report-no-arg", ("report",)),
    Case("usage-melbo-no-out", ("melbo", "--prompt", "hi")),
    Case("usage-neurons-topk-abc", ("neurons", "{WS}/run", "--top-k", "x")),
    Case("usage-unknown-global-option", ("--debugx", "models")),
    Case("usage-vector-unknown-sub", ("vector", "nosuch")),
    Case("usage-melbo-lr-abc", (*MELBO, "--lr", "abc")),
    Case("usage-trace-no-run", ("trace",)),
    Case("usage-steer-no-vector", ("steer", "hi")),
    # --- dataset files (through cache) ------------------------------------------------------------
    Case("data-missing-file", (*CACHE_BAD,)),
    Case("data-unknown-builtin", ("cache", "--model", M, "--dataset", "nosuch_builtin", "--out", "{WS}/s")),
    Case("data-empty-file", CACHE_BAD, lambda ws: ws.write("bad.jsonl", "")),
    Case("data-blank-lines", CACHE_BAD, lambda ws: ws.write("bad.jsonl", "\n\n   \n")),
    Case("data-invalid-json", CACHE_BAD, lambda ws: ws.write("bad.jsonl", _jsonl(_pairs(2))[:-20] + "\n{oops\n")),
    Case("data-line-is-list", CACHE_BAD, lambda ws: ws.write("bad.jsonl", _jsonl(_pairs(2)) + "[1, 2]\n")),
    Case("data-missing-text", CACHE_BAD, _edit_rows(_drop(1, "text"))),
    Case("data-text-number", CACHE_BAD, _edit_rows(_set(1, "text", 42))),
    Case("data-text-empty", CACHE_BAD, _edit_rows(_set(1, "text", ""))),
    Case("data-text-whitespace", CACHE_BAD, _edit_rows(_set(1, "text", "   \t "))),
    Case("data-label-missing", CACHE_BAD, _edit_rows(_drop(2, "label"))),
    Case("data-label-word", CACHE_BAD, _edit_rows(_set(2, "label", "yes please"))),
    Case("data-label-2", CACHE_BAD, _edit_rows(_set(2, "label", 2))),
    Case("data-label-list", CACHE_BAD, _edit_rows(_set(2, "label", [1]))),
    Case("data-severity-float", CACHE_BAD, _edit_rows(_set(0, "severity", 2.7))),
    Case("data-severity-word", CACHE_BAD, _edit_rows(_set(0, "severity", "high"))),
    Case("data-severity-list", CACHE_BAD, _edit_rows(_set(0, "severity", [3]))),
    Case("data-duplicate-id", CACHE_BAD, _edit_rows(lambda rows: rows[3].update(id=rows[1]["id"]))),
    Case("data-duplicate-text", CACHE_BAD, _edit_rows(lambda rows: rows[3].update(text=rows[1]["text"]))),
    Case("data-pair-of-three", CACHE_BAD, _edit_rows(lambda rows: rows[2].update(pair_id=rows[0]["pair_id"]))),
    Case("data-pair-same-labels", CACHE_BAD, _edit_rows(lambda rows: rows[1].update(label=rows[0]["label"]))),
    Case("data-not-utf8", CACHE_BAD, lambda ws: ws.write("bad.jsonl", b'{"text": "caf\xe9", "label": 1}\n')),
    Case("data-deep-nesting", CACHE_BAD, lambda ws: ws.write("bad.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")),
    Case("data-deep-nesting-field", CACHE_BAD,
         lambda ws: ws.write("bad.jsonl", '{"text": "a", "label": 1, "x": ' + "[" * 50_000 + "]" * 50_000 + "}\n")),
    Case("data-huge-text", CACHE_BAD, _edit_rows(_set(0, "text", "word " * 2_100_000))),
    Case("data-id-object", CACHE_BAD, _edit_rows(_set(0, "id", {"a": 1}))),
    Case("data-category-list", CACHE_BAD, _edit_rows(_set(0, "category", ["x"]))),
    Case("data-mixed-layouts", CACHE_BAD, lambda ws: ws.write("bad.jsonl", _jsonl(
        _pairs(1) + [{"pair_id": "z", "risky": "The door was left open.", "benign": "The door was shut."}]))),
    Case("data-pair-layout-missing-benign", CACHE_BAD, lambda ws: ws.write("bad.jsonl", _jsonl(
        [{"pair_id": "z", "risky": "The door was left open at night."}]))),
    Case("data-unknown-suffix", ("cache", "--model", M, "--dataset", "{WS}/bad.txt", "--out", "{WS}/s"),
         lambda ws: ws.write("bad.txt", "hello\n")),
    Case("data-directory", ("cache", "--model", M, "--dataset", "{WS}/dd.jsonl", "--out", "{WS}/s"),
         lambda ws: ws.path("dd.jsonl").mkdir()),
    Case("data-csv-missing-text", ("cache", "--model", M, "--dataset", "{WS}/bad.csv", "--out", "{WS}/s"),
         lambda ws: ws.write("bad.csv", "words,label\nhello there,1\nbye now,0\n")),
    Case("data-csv-huge-field", ("cache", "--model", M, "--dataset", "{WS}/bad.csv", "--out", "{WS}/s"),
         lambda ws: ws.write("bad.csv", 'text,label\n"' + "x" * 10_000_000 + '",1\n"short",0\n')),
    Case("data-csv-bad-label", ("cache", "--model", M, "--dataset", "{WS}/bad.csv", "--out", "{WS}/s"),
         lambda ws: ws.write("bad.csv", "text,label\nhello there,maybe\nbye now,0\n")),
    Case("data-csv-not-utf8", ("cache", "--model", M, "--dataset", "{WS}/bad.csv", "--out", "{WS}/s"),
         lambda ws: ws.write("bad.csv", b"text,label\ncaf\xe9 time,1\nbye,0\n")),
    Case("data-json-null-line", CACHE_BAD, lambda ws: ws.write("bad.jsonl", "null\n")),
    Case("data-json-string-line", CACHE_BAD, lambda ws: ws.write("bad.jsonl", '"just a string"\n')),
    # --- run: refusals before any work -------------------------------------------------------------
    Case("run-single-class", ("run", "--model", M, "--dataset", "{WS}/bad.jsonl", "--out", "{WS}/r", "--folds", "2"),
         lambda ws: ws.dataset([{"id": f"r{i}", "text": f"Plain sentence number {i} about lunch.", "label": 0}
                                for i in range(8)])),
    Case("run-too-few-pairs", (*RUN_T, "--folds", "50")),
    Case("run-unknown-skip", (*RUN_T[:-2], "--skip", "nosuch")),
    Case("run-unknown-target", (*RUN_T, "--target", "nosuch")),
    Case("run-bad-penalty", (*RUN_T, "--penalty", "l3")),
    Case("run-positions-out-of-range", (*RUN_T, "--positions", "9999")),
    Case("run-bad-positions", (*RUN_T, "--positions", "abc")),
    Case("run-unknown-hook", (*RUN_T, "--hooks", "nosuch")),
    Case("run-layer-out-of-range", (*RUN_T, "--layers", "99")),
    Case("run-limit-zero", (*RUN_T, "--limit", "0")),
    Case("run-limit-negative", (*RUN_T, "--limit", "-2")),
    Case("run-out-is-file", ("run", "--model", M, "--dataset", D, "--out", "{WS}/f.txt", "--skip", "all"),
         lambda ws: ws.write("f.txt", "mine")),
    Case("run-into-other-run", ("run", "--model", M, "--dataset", D, "--out", "{WS}/run", "--layers", "0",
                                "--folds", "2", "--skip", "all"), lambda ws: ws.run()),
    Case("run-bad-store-dtype", (*RUN_T, "--store-dtype", "int8")),
    Case("run-batch-zero", (*RUN_T, "--batch-size", "0")),
    Case("run-bootstrap-negative", (*RUN_T, "--n-bootstrap", "-1")),
    # --- models -----------------------------------------------------------------------------------
    Case("model-fake-gguf", ("cache", "--model", "{WS}/fake.gguf", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: ws.write("fake.gguf", "this is not a gguf file at all\n")),
    Case("model-empty-gguf", ("cache", "--model", "{WS}/empty.gguf", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: ws.write("empty.gguf", b"")),
    Case("model-magic-only-gguf", ("cache", "--model", "{WS}/magic.gguf", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: ws.write("magic.gguf", b"GGUF")),
    Case("model-magic-version-gguf", ("cache", "--model", "{WS}/mv.gguf", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: ws.write("mv.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 24)),
    Case("model-missing-gguf", ("cache", "--model", "{WS}/missing.gguf", "--dataset", D, "--out", "{WS}/s")),
    Case("model-empty-dir", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"), _model_dir(None)),
    Case("model-bad-config-json", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"),
         _model_dir("{not json")),
    Case("model-config-no-type", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"),
         _model_dir('{"hidden_size": 8}')),
    Case("model-config-unknown-type", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"),
         _model_dir('{"model_type": "nosuch_arch", "hidden_size": 8}')),
    Case("model-config-list", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"), _model_dir("[]")),
    Case("model-no-weights", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: shutil.copytree(ws.world["model"], ws.path("mdl"),
                                    ignore=shutil.ignore_patterns("*.safetensors"))),
    Case("model-truncated-weights", ("cache", "--model", "{WS}/mdl", "--dataset", D, "--out", "{WS}/s"),
         lambda ws: (shutil.copytree(ws.world["model"], ws.path("mdl")),
                     _bytes_edit(lambda w: w.path("mdl/model.safetensors"), lambda b: b[: len(b) // 3])(ws))),
    Case("model-hub-id-not-cached", ("cache", "--model", "nosuch-org/nosuch-model", "--dataset", D, "--out",
                                     "{WS}/s")),
    Case("model-device-tpu", (*CACHE, "--device", "tpu")),
    Case("model-device-cuda", (*CACHE, "--device", "cuda"), needs="no-cuda"),
    Case("model-device-cuda-7", (*CACHE, "--device", "cuda:7"), needs="no-cuda"),
    Case("model-dtype-float8", (*CACHE, "--dtype", "float8")),
    Case("model-dtype-int4", (*CACHE, "--dtype", "int4")),
    Case("model-module-paths-garbage", (*CACHE, "--module-paths", "garbage")),
    Case("model-module-paths-wrong", (*CACHE, "--module-paths", "blocks=no.such.path")),
    # --- cache options ----------------------------------------------------------------------------
    Case("cache-positions-out-of-range", (*CACHE, "--positions", "9999")),
    Case("cache-positions-negative-out", (*CACHE, "--positions", "-9999")),
    Case("cache-positions-abc", (*CACHE, "--positions", "abc")),
    Case("cache-positions-empty", (*CACHE, "--positions", "")),
    Case("cache-layers-99", (*CACHE, "--layers", "99")),
    Case("cache-layers-minus-99", (*CACHE, "--layers", "-99")),
    Case("cache-layers-abc", (*CACHE, "--layers", "x")),
    Case("cache-layers-empty-range", (*CACHE, "--layers", "3-1")),
    Case("cache-hooks-nosuch", (*CACHE, "--hooks", "nosuch")),
    Case("cache-hooks-empty", (*CACHE, "--hooks", "")),
    Case("cache-store-dtype-int8", (*CACHE, "--store-dtype", "int8")),
    Case("cache-batch-zero", (*CACHE, "--batch-size", "0")),
    Case("cache-batch-negative", (*CACHE, "--batch-size", "-1")),
    Case("cache-chunk-rows-zero", (*CACHE, "--chunk-rows", "0")),
    Case("cache-limit-zero", (*CACHE, "--limit", "0")),
    Case("cache-limit-negative", (*CACHE, "--limit", "-3")),
    Case("cache-out-is-file", ("cache", "--model", M, "--dataset", D, "--out", "{WS}/f.txt"),
         lambda ws: ws.write("f.txt", "mine")),
    Case("cache-into-other-store", ("cache", "--model", M, "--dataset", D, "--out", "{WS}/store", "--layers", "2"),
         lambda ws: ws.store()),
    Case("cache-into-foreign-manifest", ("cache", "--model", M, "--dataset", D, "--out", "{WS}/u"),
         lambda ws: ws.write("u/manifest.json", '{"mine": true}')),
    Case("cache-text-too-long", (*CACHE_BAD,), _edit_rows(_set(0, "text", "long words " * 400))),
    # --- stores (through probe) -------------------------------------------------------------------
    Case("store-missing", ("probe", "{WS}/nope")),
    Case("store-not-a-store", ("probe", "{WS}/empty"), lambda ws: ws.path("empty").mkdir()),
    Case("store-manifest-invalid", ("probe", "{WS}/store"), lambda ws: (ws.store() / "manifest.json").write_text("{x")),
    Case("store-manifest-list", ("probe", "{WS}/store"), lambda ws: (ws.store() / "manifest.json").write_text("[]")),
    Case("store-manifest-truncated", ("probe", "{WS}/store"),
         _bytes_edit(lambda ws: ws.store() / "manifest.json", lambda b: b[: len(b) // 2])),
    Case("store-manifest-no-points", ("probe", "{WS}/store"), _manifest_edit(lambda m: m.pop("points"))),
    Case("store-manifest-fewer-chunks", ("probe", "{WS}/store"), _manifest_edit(lambda m: m.update(n_chunks=1))),
    Case("store-manifest-more-rows", ("probe", "{WS}/store"), _manifest_edit(lambda m: m.update(n_rows=m["n_rows"] + 4))),
    Case("store-manifest-width-wrong", ("probe", "{WS}/store"),
         _manifest_edit(lambda m: m["widths"].update({k: v + 1 for k, v in m["widths"].items()}))),
    Case("store-manifest-forged-hash", ("probe", "{WS}/store"),
         _manifest_edit(lambda m: m["model"].update(weight_hash="0" * 64))),
    Case("store-manifest-incomplete", ("probe", "{WS}/store"), _manifest_edit(lambda m: m.update(complete=False))),
    Case("store-rows-missing", ("probe", "{WS}/store"), lambda ws: (ws.store() / "rows.jsonl").unlink()),
    Case("store-rows-invalid", ("probe", "{WS}/store"),
         lambda ws: (ws.store() / "rows.jsonl").write_text("{broken\n")),
    Case("store-rows-short", ("probe", "{WS}/store"),
         _bytes_edit(lambda ws: ws.store() / "rows.jsonl", lambda b: b"".join(b.splitlines(True)[:-3]))),
    Case("store-chunk-deleted", ("probe", "{WS}/store"), lambda ws: ws.chunk(1).unlink()),
    Case("store-chunk-truncated", ("probe", "{WS}/store"),
         _bytes_edit(lambda ws: ws.chunk(0), lambda b: b[: len(b) // 2])),
    Case("store-chunk-corrupted", ("probe", "{WS}/store"), _bytes_edit(lambda ws: ws.chunk(0), _corrupt_middle)),
    Case("store-chunk-random", ("probe", "{WS}/store"),
         _bytes_edit(lambda ws: ws.chunk(2), lambda b: os.urandom(len(b)))),
    Case("store-chunk-empty", ("probe", "{WS}/store"), _bytes_edit(lambda ws: ws.chunk(2), lambda b: b"")),
    Case("store-chunks-swapped", ("probe", "{WS}/store"), _swap_chunks),
    Case("store-chunk-duplicated", ("probe", "{WS}/store"),
         lambda ws: ws.chunk(1).write_bytes(ws.chunk(0).read_bytes())),
    Case("store-chunk-foreign", ("probe", "{WS}/store"),
         lambda ws: ws.chunk(0).write_bytes((ws.world["run"] / "store" / "chunks" / "000000.safetensors").read_bytes())),
    # --- verify (the full pass) on the same damage --------------------------------------------------
    Case("verify-missing", ("verify", "{WS}/nope")),
    Case("verify-chunk-corrupted", ("verify", "{WS}/store"), _bytes_edit(lambda ws: ws.chunk(0), _corrupt_middle)),
    Case("verify-chunk-truncated", ("verify", "{WS}/store"),
         _bytes_edit(lambda ws: ws.chunk(3), lambda b: b[: len(b) - 7])),
    Case("verify-chunks-swapped", ("verify", "{WS}/store"), _swap_chunks),
    Case("verify-chunk-deleted", ("verify", "{WS}/store"), lambda ws: ws.chunk(1).unlink()),
    Case("verify-forged-hash", ("verify", "{WS}/store"), _manifest_edit(lambda m: m["model"].update(weight_hash="f" * 64))),
    Case("verify-rows-short", ("verify", "{WS}/store"),
         _bytes_edit(lambda ws: ws.store() / "rows.jsonl", lambda b: b"".join(b.splitlines(True)[:-1]))),
    # --- probe options ----------------------------------------------------------------------------
    Case("probe-folds-1", ("probe", "{WS}/store", "--folds", "1"), lambda ws: ws.store()),
    Case("probe-folds-0", ("probe", "{WS}/store", "--folds", "0"), lambda ws: ws.store()),
    Case("probe-folds-100", ("probe", "{WS}/store", "--folds", "100"), lambda ws: ws.store()),
    Case("probe-penalty-l3", ("probe", "{WS}/store", "--penalty", "l3"), lambda ws: ws.store()),
    Case("probe-target-nosuch", ("probe", "{WS}/store", "--target", "nosuch"), lambda ws: ws.store()),
    Case("probe-hooks-nosuch", ("probe", "{WS}/store", "--hooks", "nosuch"), lambda ws: ws.store()),
    Case("probe-hook-nosuch", ("probe", "{WS}/store", "--hook", "nosuch"), lambda ws: ws.store()),
    Case("probe-layer-99", ("probe", "{WS}/store", "--layer", "99"), lambda ws: ws.store()),
    Case("probe-bootstrap-negative", ("probe", "{WS}/store", "--n-bootstrap", "-5"), lambda ws: ws.store()),
    Case("probe-out-is-file", ("probe", "{WS}/store", "--out", "{WS}/f.txt"),
         lambda ws: (ws.store(), ws.write("f.txt", "mine"))),
    Case("probe-out-holds-user-files", ("probe", "{WS}/store", "--out", "{WS}/u"),
         lambda ws: (ws.store(), ws.write("u/probe/notes.txt", "my notes"))),
    # --- score ------------------------------------------------------------------------------------
    Case("score-probe-missing", ("score", "--probe", "{WS}/nope", "text")),
    Case("score-probe-empty-dir", ("score", "--probe", "{WS}/empty", "text"), lambda ws: ws.path("empty").mkdir()),
    Case("score-empty-text", (*SCORE, ""), lambda ws: ws.run()),
    Case("score-whitespace-text", (*SCORE, "   \n\t"), lambda ws: ws.run()),
    Case("score-too-long", (*SCORE, "long words " * 400), lambda ws: ws.run()),
    Case("score-no-texts", SCORE, lambda ws: ws.run()),
    Case("score-bundle-invalid-json", (*SCORE, "text"),
         lambda ws: (ws.run() / "probe" / "bundle.json").write_text("{oops")),
    Case("score-bundle-list", (*SCORE, "text"), lambda ws: (ws.run() / "probe" / "bundle.json").write_text("[1]")),
    Case("score-bundle-wrong-format", (*SCORE, "text"), _bundle_edit(lambda i: i.update(format="other/9"))),
    Case("score-bundle-no-hook", (*SCORE, "text"), _bundle_edit(lambda i: i.pop("hook"))),
    Case("score-bundle-bad-layer", (*SCORE, "text"), _bundle_edit(lambda i: i.update(layer="x"))),
    Case("score-bundle-layer-99", (*SCORE, "text"), _bundle_edit(lambda i: i.update(layer=99))),
    Case("score-bundle-bad-hook", (*SCORE, "text"), _bundle_edit(lambda i: i.update(hook="nosuch"))),
    Case("score-bundle-other-weights", (*SCORE, "text"), _bundle_edit(lambda i: i.update(weight_hash="a" * 64))),
    Case("score-weights-truncated", (*SCORE, "text"),
         _bytes_edit(lambda ws: ws.run() / "probe" / "weights.safetensors", lambda b: b[: len(b) // 2])),
    Case("score-weights-random", (*SCORE, "text"),
         _bytes_edit(lambda ws: ws.run() / "probe" / "weights.safetensors", lambda b: os.urandom(len(b)))),
    Case("score-weights-reshaped", (*SCORE, "text"), _reshape_weights),
    Case("score-weights-missing", (*SCORE, "text"), lambda ws: (ws.run() / "probe" / "weights.safetensors").unlink()),
    Case("score-estimator-config-invalid", (*SCORE, "text"),
         lambda ws: (ws.run() / "probe" / "config.json").write_text("{nope")),
    Case("score-estimator-config-missing", (*SCORE, "text"), lambda ws: (ws.run() / "probe" / "config.json").unlink()),
    Case("score-input-missing", (*SCORE, "--input", "{WS}/missing.jsonl"), lambda ws: ws.run()),
    Case("score-input-invalid-json", (*SCORE, "--input", "{WS}/in.jsonl"),
         lambda ws: (ws.run(), ws.write("in.jsonl", '{"text": "ok"}\n{bad\n'))),
    Case("score-input-no-text", (*SCORE, "--input", "{WS}/in.jsonl"),
         lambda ws: (ws.run(), ws.write("in.jsonl", '{"id": 1}\n'))),
    Case("score-input-empty-text", (*SCORE, "--input", "{WS}/in.jsonl"),
         lambda ws: (ws.run(), ws.write("in.jsonl", '{"text": ""}\n'))),
    Case("score-input-empty-file", (*SCORE, "--input", "{WS}/in.jsonl"), lambda ws: (ws.run(), ws.write("in.jsonl", ""))),
    Case("score-input-not-utf8", (*SCORE, "--input", "{WS}/in.jsonl"),
         lambda ws: (ws.run(), ws.write("in.jsonl", b'{"text": "caf\xe9"}\n'))),
    Case("score-input-deep-json", (*SCORE, "--input", "{WS}/in.jsonl"),
         lambda ws: (ws.run(), ws.write("in.jsonl", "[" * 100_000 + "]" * 100_000 + "\n"))),
    Case("score-output-is-dir", (*SCORE, "--input", "{WS}/in.jsonl", "--output", "{WS}/odir"),
         lambda ws: (ws.run(), ws.write("in.jsonl", '{"text": "fine text"}\n'), ws.path("odir").mkdir())),
    Case("score-batch-zero", (*SCORE, "--batch-size", "0", "text"), lambda ws: ws.run()),
    Case("score-device-tpu", (*SCORE, "--device", "tpu", "text"), lambda ws: ws.run()),
    # --- report -----------------------------------------------------------------------------------
    Case("report-missing", ("report", "{WS}/nope")),
    Case("report-empty-dir", ("report", "{WS}/empty"), lambda ws: ws.path("empty").mkdir()),
    Case("report-metrics-invalid", ("report", "{WS}/run"), lambda ws: (ws.run() / "metrics.json").write_text("{x")),
    Case("report-metrics-list", ("report", "{WS}/run"), lambda ws: (ws.run() / "metrics.json").write_text("[]")),
    Case("report-metrics-auc-text", ("report", "{WS}/run"),
         lambda ws: (ws.run() / "metrics.json").write_text(
             (ws.run() / "metrics.json").read_text().replace('"auc": 0.', '"auc": "abc", "x": 0.', 1))),
    Case("report-predictions-invalid", ("report", "{WS}/run"),
         lambda ws: (ws.run() / "predictions.jsonl").write_text("{bad\n")),
    Case("report-out-is-dir", ("report", "{WS}/run", "--out", "{WS}/odir"),
         lambda ws: (ws.run(), ws.path("odir").mkdir())),
    # --- analyses on run folders ------------------------------------------------------------------
    Case("analyze-missing", ("analyze", "{WS}/nope")),
    Case("analyze-empty-dir", ("analyze", "{WS}/empty"), lambda ws: ws.path("empty").mkdir()),
    Case("analyze-unknown-skip", ("analyze", "{WS}/run", "--skip", "nosuch"), lambda ws: ws.run()),
    Case("analyze-manifest-invalid", ("analyze", "{WS}/run"),
         lambda ws: (ws.run() / "manifest.json").write_text("{x")),
    Case("neurons-not-a-run", ("neurons", "{WS}/empty"), lambda ws: ws.path("empty").mkdir()),
    Case("neurons-layers-99", ("neurons", "{WS}/run", "--layers", "99", "--no-effects"), lambda ws: ws.run()),
    Case("neurons-mode-nosuch", ("neurons", "{WS}/run", "--mode", "nosuch"), lambda ws: ws.run()),
    Case("neurons-n-texts-zero", ("neurons", "{WS}/run", "--n-texts", "0"), lambda ws: ws.run()),
    Case("trace-missing", ("trace", "--run", "{WS}/nope")),
    Case("trace-layer-99", ("trace", "--run", "{WS}/run", "--layer", "99"), lambda ws: ws.run()),
    Case("trace-hook-nosuch", ("trace", "--run", "{WS}/run", "--hook", "nosuch"), lambda ws: ws.run()),
    Case("ask-bad-dataset", ("ask", "--model", M, "--dataset", "{WS}/bad.jsonl"), _edit_rows(_set(0, "label", 7))),
    Case("ask-prompt-no-placeholder", ("ask", "--model", M, "--dataset", D, "--prompt", "no placeholder here",
                                       "--positive", " high", "--negative", " low")),
    Case("ask-templates-invalid", ("ask", "--model", M, "--dataset", D, "--templates", "{WS}/t.json"),
         lambda ws: ws.write("t.json", "{nope")),
    Case("ask-templates-missing", ("ask", "--model", M, "--dataset", D, "--templates", "{WS}/t.json")),
    Case("ask-folds-zero", ("ask", "--model", M, "--dataset", D, "--folds", "0")),
    # --- steering vectors -------------------------------------------------------------------------
    Case("steer-vector-missing", ("steer", "--model", M, "--vector", "{WS}/nope.safetensors", "hi")),
    Case("steer-vector-random", ("steer", "--model", M, "--vector", "{WS}/v.safetensors", "hi"),
         lambda ws: ws.write("v.safetensors", os.urandom(512))),
    Case("steer-vector-layer-99", ("steer", "--model", M, "--vector",
                                   "{WS}/run/vectors/risk_diff_of_means.safetensors", "--layers", "99", "hi"),
         lambda ws: ws.run()),
    Case("steer-vector-json-invalid", ("steer", "--model", M, "--vector",
                                       "{WS}/run/vectors/risk_diff_of_means.safetensors", "hi"),
         lambda ws: (ws.run() / "vectors" / "risk_diff_of_means.json").write_text("{x")),
    Case("vector-import-fake-gguf", ("vector", "import", "{WS}/fake.gguf", "--out", "{WS}/v"),
         lambda ws: ws.write("fake.gguf", "not gguf")),
    Case("vector-import-missing", ("vector", "import", "{WS}/missing.gguf", "--out", "{WS}/v")),
    Case("vector-export-missing", ("vector", "export", "{WS}/nope.safetensors", "--out", "{WS}/x.gguf")),
    Case("vector-export-random", ("vector", "export", "{WS}/v.safetensors", "--out", "{WS}/x.gguf"),
         lambda ws: ws.write("v.safetensors", os.urandom(256))),
    Case("vector-build-not-a-run", ("vector", "build", "{WS}/empty", "--out", "{WS}/v"),
         lambda ws: ws.path("empty").mkdir()),
    Case("vector-build-hook-missing", ("vector", "build", "{WS}/store", "--out", "{WS}/v", "--hook", "attn_out"),
         lambda ws: ws.store()),
    # --- MELBO ------------------------------------------------------------------------------------
    Case("melbo-lr-inf", (*MELBO, "--lr", "inf")),
    Case("melbo-lr-nan", (*MELBO, "--lr", "nan")),
    Case("melbo-lr-negative", (*MELBO, "--lr", "-1")),
    Case("melbo-lr-zero", (*MELBO, "--lr", "0")),
    Case("melbo-out-is-file", ("melbo", "--model", M, "--out", "{WS}/f.txt", "--prompt", "hi", "--steps", "2"),
         lambda ws: ws.write("f.txt", "mine")),
    Case("melbo-vectors-zero", (*MELBO, "--vectors", "0")),
    Case("melbo-radius-negative", (*MELBO_BASE, "--radius", "-1", *MELBO_TAIL)),
    Case("melbo-radius-abc", (*MELBO_BASE, "--radius", "abc", *MELBO_TAIL)),
    Case("melbo-radius-inf", (*MELBO_BASE, "--radius", "inf", *MELBO_TAIL)),
    Case("melbo-steps-zero", (*MELBO, "--steps", "0")),
    Case("melbo-source-99", (*MELBO, "--source", "99")),
    Case("melbo-source-after-target", (*MELBO, "--source", "2", "--target", "0")),
    Case("melbo-p-zero", (*MELBO, "--p", "0")),
    Case("melbo-temperature-nan", (*MELBO, "--temperature", "nan")),
    Case("melbo-prompts-missing", ("melbo", "--model", M, "--out", "{WS}/m", "--prompts", "{WS}/p.txt")),
    Case("melbo-prompts-empty", ("melbo", "--model", M, "--out", "{WS}/m", "--prompts", "{WS}/p.txt"),
         lambda ws: ws.write("p.txt", "\n\n")),
    Case("melbo-prompts-bad-jsonl", ("melbo", "--model", M, "--out", "{WS}/m", "--prompts", "{WS}/p.jsonl"),
         lambda ws: ws.write("p.jsonl", '{"prompt": "ok"}\n{bad\n')),
    Case("melbo-prompts-json-numbers", ("melbo", "--model", M, "--out", "{WS}/m", "--prompts", "{WS}/p.json"),
         lambda ws: ws.write("p.json", "[1, 2, 3]")),
    Case("melbo-no-prompts", ("melbo", "--model", M, "--out", "{WS}/m")),
    Case("melbo-embedder-nosuch", (*MELBO[:-1], "nosuch")),
    Case("melbo-orthogonal-maybe", (*MELBO, "--orthogonal", "maybe")),
    Case("melbo-positions-abc", (*MELBO, "--positions", "abc")),
    Case("melbo-radius-grid-abc", (*MELBO_BASE, "--radius", "auto", "--radius-grid", "a,b", *MELBO_TAIL)),
    Case("melbo-out-foreign-files", (*MELBO,), lambda ws: ws.write("m/vectors/mine.txt", "not riskscope's")),
]


def _fill(args: tuple[str, ...], ws: WS) -> list[str]:
    subs = {"{M}": str(ws.world["model"]), "{D}": str(ws.world["data"]), "{WS}": str(ws.root)}
    out = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def test_corpus_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world, tmp_path, capsys, one_thread):
    if case.needs == "no-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("needs a machine without CUDA")
    ws = WS(tmp_path / "ws", world)
    ws.root.mkdir()
    ws.write("USER_FILE.txt", "a file riskscope did not write")
    if case.setup is not None:
        case.setup(ws)
    args = _fill(case.args, ws)
    capsys.readouterr()
    before = _snapshot(ws.root)
    code, out, err, escaped = _cli(args, capsys)
    after = _snapshot(ws.root)
    assert escaped is None, f"exception escaped main(): {type(escaped).__name__}: {escaped}"
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == case.code, f"exit {code}, stderr: {err[-1500:]}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err[-1500:]}"
    assert before == after, {"changed": sorted(k for k in before if after.get(k) != before[k]),
                             "new": sorted(set(after) - set(before))}
