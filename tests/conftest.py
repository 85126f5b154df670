"""Shared fixtures: tiny randomly initialised models of every family, the real default model."""

from __future__ import annotations

import os

import pytest
import torch
import transformers as tf

from riskscope.models import LoadedModel, resolve_layout

_COMMON = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
               num_attention_heads=4, max_position_embeddings=64)
TINY_CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_COMMON, num_key_value_heads=2),
    "mistral": lambda: tf.MistralConfig(**_COMMON, num_key_value_heads=1),
    "qwen2": lambda: tf.Qwen2Config(**_COMMON, num_key_value_heads=2),
    "qwen3": lambda: tf.Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma2": lambda: tf.Gemma2Config(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gpt2": lambda: tf.GPT2Config(vocab_size=61, n_embd=32, n_layer=3, n_head=4, n_positions=64, n_inner=48,
                                bos_token_id=1, eos_token_id=2),
    "gpt_neox": lambda: tf.GPTNeoXConfig(**_COMMON),
    "phi3": lambda: tf.Phi3Config(**_COMMON, num_key_value_heads=2, pad_token_id=0),
}
FAMILIES = sorted(TINY_CONFIGS)


class TinyTokenizer:
    """Characters -> ids (enough for the hook layer; real tokenizers are tested on the real model)."""

    pad_token_id = 0
    eos_token = "<eos>"

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[1 + (ord(c) % 59) for c in t] for t in texts]}


def make_tiny(family: str, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = TINY_CONFIGS[family]()
    cfg._attn_implementation = "eager" if family.startswith("gemma") else "sdpa"
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=TinyTokenizer(), layout=resolve_layout(model),
                       model_id=f"tiny-{family}", weight_hash=f"tiny-{family}-{seed}")


@pytest.fixture(scope="module", autouse=True)
def _no_env_leak(request):
    """A test module may point RISKSCOPE_HOME (or HF caches) elsewhere for itself, never for the modules after
    it: a leaked home made the default model convert anew in a later module (CI, stop 18)."""
    watched = ("RISKSCOPE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {k: os.environ.get(k) for k in watched}
    yield
    after = {k: os.environ.get(k) for k in watched}
    assert after == before, f"{request.module.__name__} left the environment changed: {before} -> {after}"


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """RISKSCOPE_HOME in a temporary folder for one test module (unless the machine sets one), restored at
    the module's teardown; a module-scoped world fixture requests it before it builds anything."""
    mp = pytest.MonkeyPatch()
    if not os.environ.get("RISKSCOPE_HOME"):
        mp.setenv("RISKSCOPE_HOME", str(tmp_path_factory.mktemp("home")))
    yield os.environ.get("RISKSCOPE_HOME")
    mp.undo()


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models run fastest so, and on a busy 2-CPU machine OpenMP's
    spin-waiting makes even the real model ~10x slower with two threads than with one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=FAMILIES)
def tiny(request) -> LoadedModel:
    return make_tiny(request.param)


@pytest.fixture(scope="session")
def default_lm() -> LoadedModel:
    from riskscope.models import load_model

    return load_model("default")
