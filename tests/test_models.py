"""Adapters and loading: every tiny family resolves, unknown ones fail loudly; the real default model."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import riskscope
from riskscope.errors import ModelError, RiskscopeError
from riskscope.hooks import HOOKS, Add, HookPoint, capture, intervene, run_texts
from riskscope.models import load_model, resolve_layout
from riskscope.models.adapters import PATH_FIELDS, spec_for

from conftest import FAMILIES, make_tiny

FAMILY_OF = {"llama": "llama", "mistral": "llama", "qwen2": "qwen", "qwen3": "qwen", "gemma2": "gemma",
             "gemma3_text": "gemma", "gpt2": "gpt2", "gpt_neox": "neox", "phi3": "phi3"}
LLAMA_PATHS = {"blocks": "inner.model.layers", "attn": "self_attn", "mlp": "mlp", "mlp_down": "mlp.down_proj",
               "final_norm": "inner.model.norm", "unembed": "inner.lm_head", "embed": "inner.model.embed_tokens"}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


class _Wrapped(nn.Module):
    """A model of an architecture no adapter knows (a tiny Llama one level down)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = SimpleNamespace(model_type="weirdformer")


# --- fast: adapters ----------------------------------------------------------------------------------


def test_every_family_resolves(tiny):
    lay = tiny.layout
    assert FAMILY_OF == {f: FAMILY_OF[f] for f in FAMILIES}
    assert lay.spec.family == FAMILY_OF[tiny.model.config.model_type]
    assert (lay.n_layers, lay.d_model, lay.d_mlp) == (3, 32, 48)
    assert len(lay.attn) == len(lay.mlp) == len(lay.mlp_down) == 3
    assert lay.unembed.weight.shape == (61, 32) and lay.embed.weight.shape == (61, 32)
    assert all(m is not n for m, n in zip(lay.mlp_down, lay.mlp_down[1:]))
    assert tiny.context_length == 64


def test_unknown_architecture_names_type_and_override():
    with pytest.raises(ModelError, match=r"'weirdformer' is not supported.*--module-paths blocks=model\.layers"):
        spec_for("weirdformer")
    lm = make_tiny("llama")
    with pytest.raises(ModelError, match=r"'weirdformer' is not supported.*--module-paths"):
        resolve_layout(_Wrapped(lm.model))
    with pytest.raises(ModelError, match="'weirdformer' is not supported"):  # every path is needed
        resolve_layout(_Wrapped(lm.model), {k: v for k, v in LLAMA_PATHS.items() if k != "embed"})


def test_module_paths_make_an_unknown_architecture_work():
    lm = make_tiny("llama")
    wrapped = _Wrapped(lm.model)
    lay = resolve_layout(wrapped, LLAMA_PATHS)
    assert lay.spec.family == "weirdformer"
    assert (lay.n_layers, lay.d_model, lay.d_mlp) == (3, 32, 48)
    assert lay.blocks[1] is lm.model.model.layers[1] and lay.mlp_down[2] is lm.model.model.layers[2].mlp.down_proj
    assert lay.final_norm is lm.model.model.norm and lay.unembed is lm.model.lm_head


def test_module_paths_override_a_known_family():
    lm = make_tiny("llama")
    lay = resolve_layout(lm.model, {"mlp_down": "mlp.gate_proj"})
    assert lay.spec.family == "llama" and lay.spec.mlp == "mlp"
    assert lay.mlp_down[0] is lm.model.model.layers[0].mlp.gate_proj
    assert lay.d_mlp == 32  # the gate projection's input width
    assert resolve_layout(lm.model).mlp_down[0] is lm.model.model.layers[0].mlp.down_proj  # nothing mutated


@pytest.mark.parametrize("field,path", [("mlp_down", "mlp.nope"), ("blocks", "model.stack"),
                                        ("final_norm", "model.final"), ("attn", "attention")])
def test_bad_module_path_names_the_field(field, path):
    lm = make_tiny("llama")
    with pytest.raises(ModelError, match=rf"{field} path '{path}' not found.*--module-paths {field}="):
        resolve_layout(lm.model, {field: path})


def test_bad_module_path_field_or_shape():
    lm = make_tiny("llama")
    with pytest.raises(ModelError, match=r"unknown module path field\(s\) \['blokcs'\]"):
        resolve_layout(lm.model, {"blokcs": "model.layers"})
    with pytest.raises(ModelError, match="blocks path 'model.norm' .* not a non-empty ModuleList"):
        resolve_layout(lm.model, {"blocks": "model.norm"})
    assert set(PATH_FIELDS) == set(LLAMA_PATHS)


def test_layer_index():
    lay = make_tiny("gpt2").layout
    assert [lay.layer_index(i) for i in (0, 2, -1, -3)] == [0, 2, 2, 0]
    for bad in (3, -4):
        with pytest.raises(ModelError, match=r"3 layers \(0\.\.2, or -1\.\.-3\)"):
            lay.layer_index(bad)


ROTARY = {"llama", "mistral", "qwen2", "qwen3"}  # families whose adapter describes a Llama-style block


def test_adapter_family_facts(tiny):
    """The soft cap and the rotary-block parts come from the adapter, and match the live model."""
    lay, cfg = tiny.layout, tiny.model.config
    cap = getattr(cfg, "final_logit_softcapping", None) if cfg.model_type.startswith("gemma") else None
    assert lay.logit_softcap == (float(cap) if cap else None)
    last = HookPoint("resid_post", -1)
    with torch.no_grad(), capture(tiny, [last], "all") as got:
        out, _ = run_texts(tiny, ["hello world", "ab"])
        torch.testing.assert_close(lay.logits(got[last]), out.logits, atol=1e-5, rtol=0)  # norm, unembed, cap
    parts = lay.rotary(1)
    assert (parts is not None) == (cfg.model_type in ROTARY)
    if parts is not None:
        attn = lay.attn[1]
        assert parts.q is attn.q_proj and parts.o is attn.o_proj and parts.mlp is lay.mlp[1]
        assert parts.norm_attn is lay.blocks[1].input_layernorm and parts.head_dim == attn.head_dim
        assert (parts.q_norm is not None) == (cfg.model_type == "qwen3")
        x, ones = torch.randn(2, 3, 5, parts.head_dim), torch.ones(2, 5, parts.head_dim)
        torch.testing.assert_close(parts.rope(x, ones, 0 * ones), x)  # angle 0: no rotation


def test_rotary_parts_fail_loudly_when_the_block_is_not_llama_style():
    from riskscope.models import RotaryBlock

    lm = make_tiny("llama")
    lay = resolve_layout(lm.model)
    broken = type(lay)(**{**{f: getattr(lay, f) for f in lay.__dataclass_fields__},
                          "spec": dataclasses.replace(lay.spec, rotary=RotaryBlock(q="query"))})
    with pytest.raises(ModelError, match="has no 'query'.*not a Llama-style rotary block"):
        broken.rotary(0)


def test_no_module_above_models_reads_family_internals():
    """Family facts live in the adapters: no other package names a family's config attributes or parts."""
    root = Path(riskscope.__file__).parent
    words = ("final_logit_softcapping", "rotate_half", "input_layernorm", "post_attention_layernorm", "q_proj",
             "self_attn", "model_type ==")
    hits = [f"{p.relative_to(root)}: {w}" for p in root.rglob("*.py") if "models" not in p.relative_to(root).parts
            for w in words if w in p.read_text()]
    assert hits == []


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="offline") as info:
        load_model("nonexistent-org/no-such-model-xyz")
    assert "no-such-model-xyz" in str(info.value) and "Named models: default" in str(info.value)
    with pytest.raises(ModelError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="unknown dtype 'float8'"):
        load_model("default", dtype="float8")  # type: ignore[arg-type]
    assert issubclass(ModelError, RiskscopeError)


# --- slow: the real default model --------------------------------------------------------------------

REAL_TEXTS = [
    "The intern pasted the customer's password into the public support ticket.",
    "Hi.",
    "Before the audit, the admin rotated every service key and revoked the old ones, then wrote down who had "
    "access to what and why.",
    "She left the server room door propped open with a chair.",
]


@pytest.fixture(scope="module")
def default_f64():
    """A second, independent load of the default model, cast to float64 (our own copy)."""
    lm = load_model("default")
    lm.model.double()
    return lm


@pytest.mark.slow
def test_default_model_shape_and_hash(default_lm, default_f64):
    lm = default_lm
    assert (lm.n_layers, lm.d_model, lm.layout.d_mlp) == (30, 576, 1536)
    assert lm.layout.spec.family == "llama" and lm.model_id == "smollm2-135m"
    assert lm.tokenizer.pad_token_id is not None and lm.context_length >= 2048
    # the first load of a fresh machine converts the GGUF; any later load uses the safetensors cache
    assert default_f64.info["converted"] is False
    from riskscope.models import named_gguf

    _, gguf = named_gguf("default")
    h = hashlib.sha256()
    with gguf.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    assert lm.weight_hash == h.hexdigest()
    assert default_f64.weight_hash == lm.weight_hash  # stable across loads
    assert torch.equal(default_f64.layout.unembed.weight.float(), lm.layout.unembed.weight)
    assert lm.describe()["family"] == "llama" and lm.describe()["d_mlp"] == 1536


@pytest.mark.slow
def test_default_model_noop_hooks_are_exact(default_lm):
    lm = default_lm
    points = [HookPoint(h, i) for h in HOOKS for i in (0, 15, -1)]
    with torch.inference_mode():
        clean = run_texts(lm, REAL_TEXTS)[0].logits
        with intervene(lm, [Add(p, vector=torch.zeros(p.width(lm))) for p in points]), capture(lm, points):
            hooked = run_texts(lm, REAL_TEXTS)[0].logits
    assert torch.equal(hooked, clean)
    assert not [n for n, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def _check_padding(lm, tol) -> None:
    """Left- and right-padded batches give each text's values when run alone, within ``tol(alone)``."""
    points = [HookPoint(h, i) for h in ("resid_post", "mlp_neurons") for i in range(lm.n_layers)]
    with torch.inference_mode():
        batched = {}
        for side in ("left", "right"):
            with capture(lm, points, "last") as last, capture(lm, points, "mean") as mean:
                run_texts(lm, REAL_TEXTS, side=side)
            batched[side] = {"last": dict(last), "mean": dict(mean)}
        for b, text in enumerate(REAL_TEXTS):
            with capture(lm, points, "last") as last, capture(lm, points, "mean") as mean:
                run_texts(lm, [text])
            for side, got in batched.items():
                for how, alone in (("last", last), ("mean", mean)):
                    for p in points:
                        want = alone[p][0]
                        torch.testing.assert_close(got[how][p][b], want, atol=tol(want), rtol=0,
                                                   msg=lambda m: f"{side} padding, {how}, text {b}, {p}: {m}")


@pytest.mark.slow
def test_default_model_padding_equivalence_float64(default_f64):
    """In float64 padding changes nothing but rounding: 1e-9 absolute (seen: ~5e-12)."""
    _check_padding(default_f64, lambda want: 1e-9)


@pytest.mark.slow
def test_default_model_padding_equivalence_float32(default_lm):
    """In float32 the residual stream holds values up to ~5000 (float32 spacing there is ~5e-4), so the
    bound is 1e-5 in units of each vector's largest entry (seen: up to ~5e-6 of it; 0.01 absolute)."""
    _check_padding(default_lm, lambda want: 1e-5 * max(1.0, float(want.abs().max())))
