"""Qwen2 and Qwen3 (gated MLP like Llama; Qwen3 adds q/k norms inside attention)."""

from ._spec import ArchSpec, RotaryBlock

SPEC = ArchSpec(
    family="qwen",
    model_types=("qwen2", "qwen3"),
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    mlp_down="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    rotary=RotaryBlock(q_norm="q_norm", k_norm="k_norm"),
)
