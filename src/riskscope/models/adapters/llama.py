"""Llama, Mistral and SmolLM2 (SmolLM2 is a Llama): pre-norm rotary blocks with grouped K/V heads."""

from ._spec import ArchSpec, RotaryBlock

SPEC = ArchSpec(
    family="llama",
    model_types=("llama", "mistral"),
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    mlp_down="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    rotary=RotaryBlock(),
)
