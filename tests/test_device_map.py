"""A model spread by accelerate's device_map (layers on the CPU and offloaded to disk): every hook point still
resolves and captures what the plain model gives; a map that leaves a hooked layer on the meta device is refused."""

from __future__ import annotations

import pytest
import torch

from riskscope.data import CacheConfig, Store, cache_activations, load_dataset
from riskscope.errors import ModelError
from riskscope.hooks import HOOKS, HookPoint, capture, run_texts
from riskscope.models import check_placement, load_model, read_device_map, resolve_layout
from tinyhf import build_tiny_hf

pytest.importorskip("accelerate")

TEXTS = ["The router kept its default password.", "Please summarise the report.", "ok"]
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_hf(tmp_path_factory.mktemp("dm") / "model")


@pytest.fixture(scope="module")
def plain(folder):
    return load_model(str(folder))


def _all_points(lm) -> list[HookPoint]:
    return [HookPoint(h, i) for h in HOOKS for i in range(lm.n_layers)]


@pytest.mark.parametrize("placement", [
    {"device_map": SPLIT},  # blocks 1-2 offloaded to disk: weights on meta between forwards
    {"device_map": "auto", "max_memory": {"cpu": 30_000}},  # too little CPU memory: accelerate sends most to disk
], ids=["explicit-disk-offload", "auto-cpu-and-disk"])
def test_hook_points_capture_the_same_activations_when_spread(placement, folder, plain, tmp_path):
    spread = load_model(str(folder), offload_folder=str(tmp_path / "offload"), **placement)
    placed = set(spread.model.hf_device_map.values())
    assert "disk" in placed  # really spread: some weights live on disk, not in the module
    assert any(p.device.type == "meta" for p in spread.model.parameters())
    assert spread.device.type == "cpu"  # inputs go where the embedding runs, even when it is offloaded
    points = _all_points(plain)
    for reduce in ("all", "last"):
        with capture(plain, points, reduce=reduce) as want:
            out_plain, mask = run_texts(plain, TEXTS)
        with capture(spread, points, reduce=reduce) as got:
            out_spread, _ = run_texts(spread, TEXTS)
        for p in points:
            torch.testing.assert_close(got[p].cpu(), want[p], rtol=1e-5, atol=1e-5, msg=f"{p} ({reduce})")
        torch.testing.assert_close(out_spread.logits.cpu(), out_plain.logits, rtol=1e-5, atol=1e-5)


def test_a_store_cached_from_a_spread_model_equals_the_plain_ones(folder, plain, tmp_path):
    spread = load_model(str(folder), device_map=SPLIT, offload_folder=str(tmp_path / "offload"))
    data = load_dataset("cyber_risk_pairs").limit(3)
    cfg = CacheConfig(points=(HookPoint("resid_post", 2), HookPoint("mlp_neurons", 1)), positions="mean",
                      batch_size=2, chunk_rows=4)
    cache_activations(plain, data, tmp_path / "plain", cfg)
    cache_activations(spread, data, tmp_path / "spread", cfg)  # same weights: the same fingerprint
    a, b = Store.open(tmp_path / "plain"), Store.open(tmp_path / "spread")
    for key in ("resid_post.2", "mlp_neurons.1"):
        torch.testing.assert_close(torch.from_numpy(b.read(key)), torch.from_numpy(a.read(key)), rtol=1e-5, atol=1e-5)


def test_a_layer_on_the_meta_device_is_refused(folder):
    with pytest.raises(ModelError, match="'model.layers.1'.*meta"):
        read_device_map({**SPLIT, "model.layers.1": "meta"})
    with pytest.raises(ModelError, match="meta"):
        load_model(str(folder), device_map={**SPLIT, "model.layers.1": "meta"})
    # a model placed so by someone else (transformers accepts the map) is refused before any forward
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(str(folder), device_map={**SPLIT, "model.layers.1": "meta"})
    with pytest.raises(ModelError, match=r"layer 1 \(model.layers.1\) on the meta device"):
        check_placement(model, resolve_layout(model))


@pytest.mark.parametrize("text,words", [("everywhere", "--device-map"), ('{"model": "gpu"}', "not a device"),
                                        ("{bad json", "invalid JSON"), ("[]", "--device-map")])
def test_bad_device_maps(text, words):
    with pytest.raises(ModelError, match=words):
        read_device_map(text)
