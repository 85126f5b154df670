"""A saved probe that is missing, damaged or inconsistent fails with a ProbeError naming the file, the field
or tensor, and what is wrong; a good one still round-trips exactly (the format is unchanged)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from riskscope.errors import RiskscopeError
from riskscope.probes import LogisticProbe, ProbeError


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    probe = LogisticProbe(C=0.5).fit(X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int))
    probe.save(tmp_path / "probe")
    return tmp_path / "probe", probe, X


def _weights(path, **changes):
    w = load_file(str(path / "weights.safetensors"))
    w.update(changes)
    save_file({k: v for k, v in w.items() if v is not None}, str(path / "weights.safetensors"))


def _config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_round_trip_unchanged(saved):
    path, probe, X = saved
    loaded = LogisticProbe.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]


@pytest.mark.parametrize("damage,file,match", [
    (lambda p: (p / "weights.safetensors").unlink(), "weights.safetensors", "is missing: .* is not a saved probe"),
    (lambda p: (p / "config.json").unlink(), "config.json", "is missing"),
    (lambda p: (p / "weights.safetensors").write_bytes(b"\x00" * 7), "weights.safetensors",
     "not a readable safetensors file"),
    (lambda p: (p / "weights.safetensors").write_bytes((p / "weights.safetensors").read_bytes()[:-40]),
     "weights.safetensors", "not a readable safetensors file .*damaged or truncated"),
    (lambda p: _weights(p, coef=np.zeros((1, 4))), "weights.safetensors",
     r"tensor 'mean' has shape \(6,\), expected \(4,\)"),
    (lambda p: _weights(p, coef=np.zeros(6)), "weights.safetensors", r"tensor 'coef' has shape \(6,\)"),
    (lambda p: _weights(p, intercept=np.zeros(3)), "weights.safetensors", r"tensor 'intercept' has shape \(3,\)"),
    (lambda p: _weights(p, scale=None), "weights.safetensors", "tensor 'scale' is missing"),
    (lambda p: _weights(p, mean=np.full(6, np.nan)), "weights.safetensors", "tensor 'mean' holds NaN"),
    (lambda p: _weights(p, scale=np.zeros(6)), "weights.safetensors", "tensor 'scale' holds values <= 0"),
    (lambda p: _weights(p, coef=np.zeros((1, 6), dtype=np.int64)), "weights.safetensors",
     "tensor 'coef' has dtype int64"),
    (lambda p: (p / "config.json").write_text('{"classes": [0, 1],\n'), "config.json", r"config\.json:2: invalid JSON"),
    (lambda p: (p / "config.json").write_text('"just a string"'), "config.json", "must hold a JSON object"),
    (lambda p: _config(p, lambda c: c.pop("classes")), "config.json", "field 'classes' is missing"),
    (lambda p: _config(p, lambda c: c.update(classes=[1])), "config.json", "field 'classes'"),
    (lambda p: _config(p, lambda c: c.update(params=[1])), "config.json", "field 'params' must be a JSON object"),
    (lambda p: _config(p, lambda c: c.update(n_features_in="six")), "config.json", "field 'n_features_in'"),
    (lambda p: _config(p, lambda c: c.update(n_features_in=9)), "config.json",
     "field 'n_features_in' is 9 but weights.safetensors holds weights for 6 features"),
    (lambda p: _config(p, lambda c: c.update(classes=["a", "b", "c"])), "weights.safetensors",
     r"tensor 'coef' has shape \(1, 6\), expected \(3, n_features\) for 3 classes"),
])
def test_damaged_probe_names_file_and_field(saved, damage, file, match):
    path, _, _ = saved
    damage(path)
    with pytest.raises(ProbeError, match=match) as info:
        LogisticProbe.load(path)
    msg = str(info.value)
    assert str(path / file) in msg and "\n" not in msg and "None" not in msg
    assert isinstance(info.value, RiskscopeError)


def test_missing_folder(tmp_path):
    with pytest.raises(ProbeError, match="no such probe folder"):
        LogisticProbe.load(tmp_path / "nowhere")
