"""Gemma 2 and Gemma 3 text models.

Gemma blocks norm the attention and MLP outputs again before adding them to
the residual stream; ``attn_out``/``mlp_out`` are the module outputs *before*
those post-norms. Gemma 2 soft-caps the final logits (``final_logit_softcapping``;
Gemma 3 when its config sets it).
"""

from ._spec import ArchSpec

SPEC = ArchSpec(
    family="gemma",
    model_types=("gemma2", "gemma3_text"),
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    mlp_down="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    logit_softcap="final_logit_softcapping",
)
