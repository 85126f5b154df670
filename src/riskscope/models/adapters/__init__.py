"""Per-family adapters: one small file each, registered by ``config.model_type``.

``resolve_layout(model)`` turns a family's module paths into the live modules,
once, up front. An unknown architecture fails loudly with instructions for
passing the paths by hand (``module_paths=`` / ``--module-paths``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ModelError
from . import gemma, gpt2, llama, neox, phi3, qwen
from ._rotary import RotaryParts, rotary_parts, rotate_half
from ._spec import ArchSpec, RotaryBlock

SPECS: tuple[ArchSpec, ...] = (llama.SPEC, qwen.SPEC, gemma.SPEC, gpt2.SPEC, neox.SPEC, phi3.SPEC)
_BY_TYPE = {t: s for s in SPECS for t in s.model_types}
PATH_FIELDS = ("blocks", "attn", "mlp", "mlp_down", "final_norm", "unembed", "embed")
_EXAMPLE = ",".join(f"{f}={getattr(llama.SPEC, f)}" for f in PATH_FIELDS)


def spec_for(model_type: str, module_paths: dict[str, str] | None = None) -> ArchSpec:
    """The spec of ``model_type``, with any hand-given ``module_paths`` overriding it."""
    paths = dict(module_paths or {})
    unknown = set(paths) - set(PATH_FIELDS)
    if unknown:
        raise ModelError(f"unknown module path field(s) {sorted(unknown)}; valid: {', '.join(PATH_FIELDS)}")
    base = _BY_TYPE.get(model_type)
    if base is None:
        missing = [f for f in PATH_FIELDS if f not in paths]
        if missing:
            raise ModelError(
                f"architecture {model_type!r} is not supported (known: {', '.join(sorted(_BY_TYPE))}); "
                f"pass its module paths by hand, e.g. --module-paths {_EXAMPLE}"
            )
        return ArchSpec(family=model_type, model_types=(model_type,), **paths)
    return dataclasses.replace(base, **paths) if paths else base


def _get(root: nn.Module, path: str, what: str, model_type: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ModelError(
            f"{what} path {path!r} not found in {type(root).__name__} ({model_type}); "
            f"override it with --module-paths {what}=<dotted.path>"
        ) from None


def _in_features(down: nn.Module) -> int:
    if hasattr(down, "in_features"):
        return int(down.in_features)
    weight = getattr(down, "weight", None)  # GPT-2 Conv1D stores (in, out)
    if weight is not None and weight.ndim == 2:
        return int(weight.shape[0])
    raise ModelError(f"cannot tell the neuron count of {type(down).__name__}")


@dataclass(frozen=True)
class Layout:
    """The live modules of one model, resolved from its :class:`ArchSpec`."""

    spec: ArchSpec
    blocks: tuple[nn.Module, ...]
    attn: tuple[nn.Module, ...]
    mlp: tuple[nn.Module, ...]
    mlp_down: tuple[nn.Module, ...]
    final_norm: nn.Module
    unembed: nn.Module
    embed: nn.Module
    d_model: int
    d_mlp: int
    logit_softcap: float | None = None
    """Final-logit soft cap of this model (``spec.logit_softcap`` read from its config), or None."""

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def softcap(self, logits: Tensor) -> Tensor:
        """Apply the family's final-logit soft cap (``c * tanh(logits / c)``); identity without one."""
        c = self.logit_softcap
        return logits if not c else torch.tanh(logits / c) * c

    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits of last-block outputs ``hidden`` (..., D): final norm, unembedding, soft cap."""
        return self.softcap(self.unembed(self.final_norm(hidden)))

    def rotary(self, layer: int) -> RotaryParts | None:
        """The parts of block ``layer`` as a pre-norm rotary block, or None when the family's blocks are
        not Llama-style; raises :class:`ModelError` when they should be but a part is missing."""
        if self.spec.rotary is None:
            return None
        i = self.layer_index(layer)
        return rotary_parts(self.spec.rotary, self.blocks[i], self.attn[i], self.mlp[i])

    def layer_index(self, layer: int) -> int:
        """Normalise a (possibly negative) layer index, or raise a clear error."""
        n = self.n_layers
        idx = layer if layer >= 0 else n + layer
        if not 0 <= idx < n:
            raise ModelError(f"layer {layer} does not exist: the model has {n} layers (0..{n - 1}, or -1..-{n})")
        return idx


def resolve_layout(model: nn.Module, module_paths: dict[str, str] | None = None) -> Layout:
    """Resolve every module the hook layer needs, or raise :class:`ModelError`."""
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    spec = spec_for(model_type, module_paths)
    blocks = _get(model, spec.blocks, "blocks", model_type)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise ModelError(
            f"blocks path {spec.blocks!r} of {model_type} is not a non-empty ModuleList; "
            f"override it with --module-paths blocks=<dotted.path>"
        )
    attn = tuple(_get(b, spec.attn, "attn", model_type) for b in blocks)
    mlp = tuple(_get(b, spec.mlp, "mlp", model_type) for b in blocks)
    down = tuple(_get(b, spec.mlp_down, "mlp_down", model_type) for b in blocks)
    embed = _get(model, spec.embed, "embed", model_type)
    d_model = int(embed.weight.shape[1])
    cap = getattr(getattr(model, "config", None), spec.logit_softcap, None) if spec.logit_softcap else None
    return Layout(
        spec=spec,
        blocks=tuple(blocks),
        attn=attn,
        mlp=mlp,
        mlp_down=down,
        final_norm=_get(model, spec.final_norm, "final_norm", model_type),
        unembed=_get(model, spec.unembed, "unembed", model_type),
        embed=embed,
        d_model=d_model,
        d_mlp=_in_features(down[0]),
        logit_softcap=float(cap) if cap else None,
    )


__all__ = ["ArchSpec", "Layout", "PATH_FIELDS", "RotaryBlock", "RotaryParts", "SPECS", "resolve_layout", "rotate_half",
           "spec_for"]
