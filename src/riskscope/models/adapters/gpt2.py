"""GPT-2 (Conv1D projections; neurons are the post-GELU input of ``c_proj``)."""

from ._spec import ArchSpec

SPEC = ArchSpec(
    family="gpt2",
    model_types=("gpt2",),
    blocks="transformer.h",
    attn="attn",
    mlp="mlp",
    mlp_down="mlp.c_proj",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    embed="transformer.wte",
)
