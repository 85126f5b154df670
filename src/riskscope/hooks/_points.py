"""Hook points: ``(hook, layer)`` names resolved to the module and side a hook attaches to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import torch

from ..errors import RiskscopeError
from ..models import LoadedModel

HOOKS = ("resid_pre", "resid_post", "attn_out", "mlp_neurons", "mlp_out")
HookName = Literal["resid_pre", "resid_post", "attn_out", "mlp_neurons", "mlp_out"]
# None = every token; "last" = last non-pad token; ints index the non-pad tokens (negative from the end).
Positions = Union[None, Literal["last"], Sequence[int]]


@dataclass(frozen=True, order=True)
class HookPoint:
    """One place in the model: ``HookPoint("mlp_neurons", 12)``; str is ``mlp_neurons.12``."""

    hook: str
    layer: int

    def __post_init__(self) -> None:
        if self.hook not in HOOKS:
            raise RiskscopeError(f"unknown hook {self.hook!r}; choose from {', '.join(HOOKS)}")

    def __str__(self) -> str:
        return f"{self.hook}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> "HookPoint":
        hook, _, layer = text.rpartition(".")
        return cls(hook, int(layer))

    def normalised(self, lm: LoadedModel) -> "HookPoint":
        return HookPoint(self.hook, lm.layout.layer_index(self.layer))

    def width(self, lm: LoadedModel) -> int:
        return lm.layout.d_mlp if self.hook == "mlp_neurons" else lm.layout.d_model


def module_for(lm: LoadedModel, p: HookPoint) -> tuple[torch.nn.Module, str]:
    lay, i = lm.layout, lm.layout.layer_index(p.layer)
    return {
        "resid_pre": (lay.blocks[i], "pre"),
        "resid_post": (lay.blocks[i], "post"),
        "attn_out": (lay.attn[i], "post"),
        "mlp_neurons": (lay.mlp_down[i], "pre"),
        "mlp_out": (lay.mlp[i], "post"),
    }[p.hook]



__all__ = ["HOOKS", "HookName", "HookPoint", "Positions", "module_for"]
