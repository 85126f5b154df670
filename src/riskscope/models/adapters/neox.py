"""GPT-NeoX / Pythia (parallel attention + MLP in each block)."""

from ._spec import ArchSpec

SPEC = ArchSpec(
    family="neox",
    model_types=("gpt_neox",),
    blocks="gpt_neox.layers",
    attn="attention",
    mlp="mlp",
    mlp_down="mlp.dense_4h_to_h",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",
    embed="gpt_neox.embed_in",
)
