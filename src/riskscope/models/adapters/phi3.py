"""Phi-3 (fused ``gate_up_proj``; neurons are ``up * act(gate)``, the input of ``down_proj``)."""

from ._spec import ArchSpec

SPEC = ArchSpec(
    family="phi3",
    model_types=("phi3",),
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    mlp_down="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
)
