"""What an adapter says about a model family: where things live, plus the few family facts that code
running parts of the model by hand needs (the final-logit soft cap, a Llama-style block's parts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RotaryBlock:
    """Where a pre-norm rotary decoder block (Llama-style) keeps the parts of its attention.

    ``h + o(attn(rope(q(n1(h))), rope(k(n1(h))), v(n1(h))))`` then ``h + mlp(n2(h))``, with
    ``rotate_half`` rotary embeddings and grouped K/V heads. Block paths are relative to one
    block; ``q``, ``k``, ``v``, ``o``, the q/k norms and the two attributes to its attention
    module. Used by code that runs a block's attention at a few rows only (MELBO's target rows),
    which checks itself numerically against the block.
    """

    norm_attn: str = "input_layernorm"
    """Path (within a block) of the norm before attention."""
    norm_mlp: str = "post_attention_layernorm"
    """Path (within a block) of the norm before the MLP."""
    q: str = "q_proj"
    """Query projection (within the attention module)."""
    k: str = "k_proj"
    """Key projection."""
    v: str = "v_proj"
    """Value projection."""
    o: str = "o_proj"
    """Output projection."""
    q_norm: str | None = None
    """Per-head norm of the queries before the rotation (Qwen3); used when the attention has it."""
    k_norm: str | None = None
    """Per-head norm of the keys before the rotation (Qwen3); used when the attention has it."""
    head_dim: str = "head_dim"
    """Attribute of the attention module holding the head width."""
    scaling: str = "scaling"
    """Attribute of the attention module holding the attention-score scale."""
    rotary_kwarg: str = "position_embeddings"
    """Keyword argument of the block call holding the ``(cos, sin)`` tables, each (B, T, head_dim)."""


@dataclass(frozen=True)
class ArchSpec:
    """Module paths (dotted, relative to the ``*ForCausalLM`` object) of one family.

    ``blocks`` is the ModuleList of decoder blocks; ``attn``, ``mlp`` and
    ``mlp_down`` are relative to one block. ``mlp_down`` is the MLP's output
    projection: its *input* is what riskscope calls the MLP neurons
    (``act(gate) * up`` for gated MLPs, the post-activation for GPT-2/NeoX).
    """

    family: str
    """Human name of the family (``llama``, ``gpt2``...)."""
    model_types: tuple[str, ...]
    """``config.model_type`` values this spec covers."""
    blocks: str
    """Path of the decoder-block ModuleList."""
    attn: str
    """Path (within a block) of the attention module; its first output is ``attn_out``."""
    mlp: str
    """Path (within a block) of the MLP module; its output is ``mlp_out``."""
    mlp_down: str
    """Path (within a block) of the MLP down projection; its input is ``mlp_neurons``."""
    final_norm: str
    """Path of the final norm applied before the unembedding."""
    unembed: str
    """Path of the unembedding (LM head)."""
    embed: str
    """Path of the token embedding."""
    logit_softcap: str | None = None
    """Config attribute holding the final-logit soft cap ``c`` (logits -> ``c * tanh(logits / c)``), if any."""
    rotary: RotaryBlock | None = None
    """The parts of a pre-norm rotary block, for families whose blocks are one (None: not Llama-style)."""
