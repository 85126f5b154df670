"""Steering vectors as values: ``{layer: vector}`` at one hook, with arithmetic and persistence.

>>> import torch
>>> v = SteeringVector({3: torch.ones(4)}, hook="resid_post")
>>> w = 2 * v - v / 2
>>> float(w.vectors[3][0])
1.5

Saved as ``NAME.safetensors`` (tensors ``layer.<i>``) + ``NAME.json`` (hook, model, meta);
:meth:`SteeringVector.ops` turns a vector into :class:`~riskscope.hooks.Add` operations for
:func:`~riskscope.hooks.intervene`.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from .._io import save_safetensors

from ..errors import RiskscopeError
from ..hooks import HOOKS, Add, HookPoint, Positions

FORMAT = "riskscope-steering/1"


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-layer vectors added at ``hook`` (default: the block output, ``resid_post``)."""

    vectors: Mapping[int, torch.Tensor]
    """Layer index -> (W,) float32 vector."""
    hook: str = "resid_post"
    """Where the vectors are added (``resid_post`` for llama.cpp export; MELBO uses ``mlp_out``)."""
    model: str | None = None
    """Model id the vectors were made for (checked on load when given)."""
    meta: dict = field(default_factory=dict)
    """Free-form provenance (method, source, norms, ...), saved in the JSON."""

    def __post_init__(self) -> None:
        if self.hook not in HOOKS:
            raise RiskscopeError(f"unknown hook {self.hook!r}; choose from {', '.join(HOOKS)}")
        if not self.vectors:
            raise RiskscopeError("a steering vector needs at least one layer")
        widths = {int(v.shape[-1]) for v in self.vectors.values()}
        if len(widths) != 1 or any(v.ndim != 1 for v in self.vectors.values()):
            raise RiskscopeError(f"steering vectors must be 1-D and equally wide, got widths {sorted(widths)}")
        object.__setattr__(self, "vectors", {int(k): v.detach().to("cpu", torch.float32)
                                             for k, v in sorted(self.vectors.items())})

    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def width(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def norms(self) -> dict[int, float]:
        return {k: float(v.norm()) for k, v in self.vectors.items()}

    # --- arithmetic ----------------------------------------------------------------------------
    def _combine(self, other: "SteeringVector", sign: float) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.hook != self.hook or other.width != self.width:
            raise RiskscopeError(f"cannot combine vectors at {self.hook}/{self.width} and {other.hook}/{other.width}")
        out = dict(self.vectors)
        for k, v in other.vectors.items():
            out[k] = out[k] + sign * v if k in out else sign * v
        return replace(self, vectors=out, meta={"combined": True})

    def __add__(self, other):
        return self._combine(other, 1.0)

    def __sub__(self, other):
        return self._combine(other, -1.0)

    def __mul__(self, k):
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return replace(self, vectors={i: v * float(k) for i, v in self.vectors.items()})

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return self * (1.0 / float(k))

    def __neg__(self):
        return self * -1.0

    # --- applying ------------------------------------------------------------------------------
    def ops(self, scale: float = 1.0, positions: Positions = None) -> list[Add]:
        """``Add`` operations for :func:`~riskscope.hooks.intervene`."""
        return [Add(HookPoint(self.hook, k), vector=v, scale=scale, positions=positions)
                for k, v in self.vectors.items()]

    def check(self, lm) -> None:
        """Raise a clear error when the vector does not fit ``lm``."""
        width = lm.layout.d_mlp if self.hook == "mlp_neurons" else lm.d_model
        if self.width != width:
            raise RiskscopeError(f"steering vector width {self.width} does not match the model's {self.hook} "
                                 f"width {width}")
        for k in self.vectors:
            lm.layout.layer_index(k)

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` + ``path.json`` (``path`` without suffix)."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer.{k}": v.contiguous() for k, v in self.vectors.items()}
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp")
        save_safetensors(tensors, base.with_suffix(".safetensors"), metadata={"format": FORMAT, "hook": self.hook})
        info = {"format": FORMAT, "hook": self.hook, "model": self.model, "layers": self.layers,
                "width": self.width, "norms": self.norms(), "meta": self.meta}
        tmp.write_text(json.dumps(info, indent=1, default=str))
        os.replace(tmp, base.with_suffix(".json"))
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not st.is_file():
            raise RiskscopeError(f"{st}: no such steering vector file")
        info = {}
        if js.is_file():
            try:
                info = json.loads(js.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise RiskscopeError(f"{js}: not valid JSON ({type(e).__name__}); write the vector again") from None
            if not isinstance(info, dict):
                raise RiskscopeError(f"{js}: expected a JSON object")
        try:
            with safe_open(str(st), framework="pt") as f:
                hook = info.get("hook") or (f.metadata() or {}).get("hook", "resid_post")
                vectors = {int(k.split(".", 1)[1]): f.get_tensor(k) for k in f.keys() if k.startswith("layer.")}
        except Exception as e:  # not a safetensors file
            raise RiskscopeError(f"{st}: not a riskscope steering vector ({e})") from None
        if not vectors:
            raise RiskscopeError(f"{st}: holds no 'layer.<i>' tensors")
        return cls(vectors=vectors, hook=hook, model=info.get("model"), meta=info.get("meta", {}))


__all__ = ["SteeringVector"]
