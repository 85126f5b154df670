"""The GPU tier (``pytest -m gpu``): caching, MELBO, SAE training from a GPU model, and interventions on CUDA in
bfloat16 agree with the CPU in float32 within bf16 tolerance. Skipped where torch sees no CUDA device.

``RISKSCOPE_GPU_TESTS_ON=cpu`` runs the same tests on the CPU (in bfloat16), to check the tests themselves on a
machine without a GPU; CI never sets it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from riskscope.data import CacheConfig, Store, cache_activations, load_dataset
from riskscope.hooks import Add, HookPoint, capture, intervene, run_texts
from riskscope.models import load_model
from tinyhf import build_tiny_hf

DEVICE = os.environ.get("RISKSCOPE_GPU_TESTS_ON", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TEXTS = ["The fitness app requested access to contacts.", "Please summarise the quarterly report.", "ok then"]


def _close(got: np.ndarray | torch.Tensor, want: np.ndarray | torch.Tensor, what: str) -> None:
    """bf16 against f32: each value within 3 % of the array's scale plus 5 % of itself (bf16 keeps 8 bits)."""
    got, want = torch.as_tensor(np.asarray(got, np.float32)), torch.as_tensor(np.asarray(want, np.float32))
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=5e-2, atol=3e-2 * scale, msg=what)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = build_tiny_hf(tmp_path_factory.mktemp("gpu") / "model")
    cpu = load_model(str(folder))
    gpu = load_model(str(folder), dtype="bfloat16", device=DEVICE)
    return folder, cpu, gpu


def test_the_model_is_where_it_was_asked(models):
    _, _, gpu = models
    assert gpu.device.type == torch.device(DEVICE).type
    assert gpu.model.dtype == torch.bfloat16


@pytest.mark.parametrize("positions", ["last", "all"])
def test_caching_on_the_device_equals_the_cpu(models, positions, tmp_path):
    _, cpu, gpu = models
    data = load_dataset("cyber_risk_pairs").limit(8)
    points = (HookPoint("resid_post", 0), HookPoint("resid_post", -1), HookPoint("mlp_neurons", 1))
    for dtype in ("float32", "bfloat16"):
        cfg = CacheConfig(points=points, positions=positions, dtype=dtype, batch_size=4, chunk_rows=8)
        cache_activations(cpu, data, tmp_path / f"cpu-{dtype}", cfg)
        cache_activations(gpu, data, tmp_path / f"gpu-{dtype}", cfg)
        a, b = Store.open(tmp_path / f"cpu-{dtype}"), Store.open(tmp_path / f"gpu-{dtype}")
        assert b.manifest["dtype"] == dtype  # the store keeps the dtype asked for, whatever the model ran in
        assert b.manifest["arrays"]["resid_post.0"]["dtype"] == {"float32": "F32", "bfloat16": "BF16"}[dtype]
        for key in a.manifest["points"]:
            if positions == "all":
                for x, y in zip(b.read_tokens(key), a.read_tokens(key)):
                    _close(x, y, f"{key} {dtype}")
            else:
                _close(b.read(key), a.read(key), f"{key} {dtype}")


def test_interventions_on_the_device(models):
    _, cpu, gpu = models
    point = HookPoint("resid_post", 1)
    vec = torch.randn(cpu.d_model, generator=torch.Generator().manual_seed(0)) * 4
    outs = {}
    for name, lm in (("cpu", cpu), ("gpu", gpu)):
        plain, _ = run_texts(lm, TEXTS)
        with intervene(lm, [Add(point, torch.zeros(lm.d_model))]):
            zero, _ = run_texts(lm, TEXTS)
        torch.testing.assert_close(zero.logits, plain.logits, rtol=0, atol=0)  # a zero vector changes nothing
        with intervene(lm, [Add(point, vec)]), capture(lm, [HookPoint("resid_post", 2)]) as got:
            steered, _ = run_texts(lm, TEXTS)
        assert not torch.equal(steered.logits, plain.logits)
        outs[name] = (steered.logits.float().cpu(), got[HookPoint("resid_post", 2)].float().cpu())
    _close(outs["gpu"][0], outs["cpu"][0], "steered logits")
    _close(outs["gpu"][1], outs["cpu"][1], "steered resid_post.2")


def test_melbo_trains_on_the_device(models):
    from riskscope.melbo import MelboConfig, train_melbo

    _, _, gpu = models
    cfg = MelboConfig(n_vectors=4, radius=2.0, source=0, target=2, steps=10, chat=False)
    res = train_melbo(gpu, ["hello there", "Write a short poem."], cfg)
    theta = res.training.theta_VD.float()
    assert torch.isfinite(theta).all()
    torch.testing.assert_close(theta.norm(dim=1).cpu(), torch.full((4,), 2.0), rtol=1e-2, atol=1e-2)
    curves = res.training.curves_SV.float()
    assert float(curves[-1].mean()) > float(curves[0].mean())  # the objective went up (bf16: on average)


def test_sae_trains_on_activations_of_a_device_model(models):
    from riskscope.sae import LiveSource, SAEConfig, load_corpus, train_sae_on

    _, cpu, gpu = models
    corpus = load_corpus()
    point = HookPoint("resid_post", 1)
    src_gpu = LiveSource(gpu, point, corpus, context=32, batch_size=8, block_tokens=1024, holdout=4)
    src_cpu = LiveSource(cpu, point, corpus, context=32, batch_size=8, block_tokens=1024, holdout=4)
    _, block_gpu = next(src_gpu.blocks())
    _, block_cpu = next(src_cpu.blocks())
    _close(block_gpu, block_cpu, "SAE training block")
    cfg = SAEConfig(d_in=gpu.d_model, expansion=2, arch="topk", k=4, batch_size=128, tokens=4096, block_tokens=1024,
                    aux_dead_tokens=2048)
    res = train_sae_on(src_gpu, cfg)
    assert res is not None
