"""Llama, Mistral and SmolLM2 (SmolLM2 is a Llama)."""

from ._spec import ArchSpec

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
)
