"""What an adapter says about a model family: where things live, nothing else."""

from __future__ import annotations

from dataclasses import dataclass


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
