"""Fuzzing the artifact readers: a probe bundle, a steering vector and an SAE folder whose files hold random
JSON, random bytes or a real file with one field replaced may only raise riskscope's own error.

Bounded and derandomised in the fast tier (``RISKSCOPE_FUZZ_EXAMPLES`` / ``RISKSCOPE_FUZZ_RANDOM`` as in
tests/test_fuzz_readers.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskscope.errors import RiskscopeError
from riskscope.probes import LogisticProbe, Probe
from riskscope.sae import SparseAutoencoder, load_sae, save_saelens
from riskscope.steering import SteeringVector

_EXAMPLES = int(os.environ.get("RISKSCOPE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=_EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("RISKSCOPE_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70) | st.floats() \
    | st.text(max_size=10)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One good probe bundle, steering vector and SAE folder to damage."""
    root = tmp_path_factory.mktemp("artifacts")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    Probe(estimator=LogisticProbe(C=0.1).fit(X, y), hook="resid_post", layer=1, model_id="m",
          weight_hash="h" * 64).save(root / "probe")
    SteeringVector(vectors={1: torch.ones(8), 2: torch.zeros(8)}, hook="resid_post").save(root / "vec" / "v")
    save_saelens(SparseAutoencoder(8, 16, arch="topk", k=2), root / "sae",
                 metadata={"model_name": "m", "hook_name": "resid_post.1"})
    return root


def _fuzzed_copy(src: Path, data) -> Path:
    """A copy of ``src`` with one of its files replaced by random bytes, random JSON, a truncation or a real
    JSON file with one field replaced."""
    dst = Path(tempfile.mkdtemp()) / src.name
    shutil.copytree(src, dst)
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    how = data.draw(st.sampled_from(["bytes", "json", "truncate", "field"]))
    raw = target.read_bytes()
    if how == "bytes":
        target.write_bytes(data.draw(st.binary(max_size=400)))
    elif how == "json":
        target.write_text(json.dumps(data.draw(json_values)))
    elif how == "truncate":
        target.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
    else:
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            obj = None
        if isinstance(obj, dict) and obj:
            key = data.draw(st.sampled_from(sorted(obj)))
            obj[key] = data.draw(json_values)
            target.write_text(json.dumps(obj))
        else:
            target.write_bytes(raw[::-1])
    return dst


def _only_our_errors(fn) -> None:
    try:
        fn()
    except RiskscopeError:
        pass


@FUZZ
@given(data=st.data())
def test_probe_bundle(artifacts, data):
    path = _fuzzed_copy(artifacts / "probe", data)
    try:
        def load_and_use():
            p = Probe.load(path)
            p.predict_proba(np.zeros((2, p.n_features)))
        _only_our_errors(load_and_use)
    finally:
        shutil.rmtree(path.parent)


@FUZZ
@given(data=st.data())
def test_steering_vector(artifacts, data):
    path = _fuzzed_copy(artifacts / "vec", data)
    try:
        _only_our_errors(lambda: SteeringVector.load(path / "v.safetensors"))
    finally:
        shutil.rmtree(path.parent)


@FUZZ
@given(data=st.data())
def test_sae_folder(artifacts, data):
    path = _fuzzed_copy(artifacts / "sae", data)
    try:
        def load_and_use():
            sae, _ = load_sae(path)
            sae.decode(sae.encode(torch.zeros(2, sae.d_in)))
        _only_our_errors(load_and_use)
    finally:
        shutil.rmtree(path.parent)
