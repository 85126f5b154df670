"""Steering adapters as values, and scoped per-row perturbations for batched generation.

A :class:`SteeringAdapter` is the MELBO paper's rank-r perturbation ``scale * B @ A.T`` of one
layer's MLP output weights. It is applied by a scoped hook on that layer's down
projection (``out + scale * (x @ A) @ B.T``, which is exactly the output of the
perturbed weights); the user's weights are never written.

>>> import torch
>>> a = SteeringAdapter(layer=2, A=torch.eye(6, 2), B=torch.eye(4, 2), scale=0.5)
>>> tuple(a.delta_weight().shape), a.rank
((4, 6), 2)
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from .._io import save_safetensors
from torch import Tensor

from ..errors import RiskscopeError
from ..models import LoadedModel
from ._engine import add_to_output

FORMAT = "riskscope-melbo-adapter/1"


@dataclass(frozen=True, eq=False)
class SteeringAdapter:
    """``W_out' = W_out + scale * B @ A.T`` at one layer's MLP output weights, applied scoped."""

    layer: int
    """Layer whose MLP down projection is perturbed."""
    A: Tensor
    """(d_mlp, r) input factor, unit-norm columns."""
    B: Tensor
    """(d_model, r) output factor, unit-norm columns."""
    scale: float = 1.0
    """R, the perturbation's scale."""
    model: str | None = None
    """Model id the adapter was made for."""
    meta: dict = field(default_factory=dict)
    """Free-form provenance, saved in the JSON."""

    def __post_init__(self) -> None:
        if self.A.ndim != 2 or self.B.ndim != 2 or self.A.shape[1] != self.B.shape[1]:
            raise RiskscopeError(f"adapter factors must be (d_mlp, r) and (d_model, r), got {tuple(self.A.shape)} "
                                 f"and {tuple(self.B.shape)}")
        object.__setattr__(self, "A", self.A.detach().to("cpu", torch.float32))
        object.__setattr__(self, "B", self.B.detach().to("cpu", torch.float32))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def rank(self) -> int:
        return int(self.A.shape[1])

    def delta_weight(self) -> Tensor:
        """(d_model, d_mlp) weight perturbation, in ``nn.Linear`` (out, in) layout."""
        return self.scale * self.B @ self.A.T

    def __mul__(self, k):
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return replace(self, scale=self.scale * float(k))

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def check(self, lm: LoadedModel) -> None:
        lm.layout.layer_index(self.layer)
        if self.A.shape[0] != lm.layout.d_mlp or self.B.shape[0] != lm.d_model:
            raise RiskscopeError(f"adapter shapes ({self.A.shape[0]}, {self.B.shape[0]}) do not match the model's "
                                 f"(d_mlp, d_model) = ({lm.layout.d_mlp}, {lm.d_model})")

    @contextlib.contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[None]:
        """Every forward inside the block runs with the perturbed weights; nothing outlives it."""
        self.check(lm)
        with perturb_rows(lm, self.layer, adapters=(self.A[None], self.B[None], torch.tensor([self.scale]))):
            yield

    # --- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` (A, B) + ``path.json`` (layer, scale, model, meta)."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp")
        save_safetensors({"A": self.A.contiguous(), "B": self.B.contiguous()}, base.with_suffix(".safetensors"),
                         metadata={"format": FORMAT})
        info = {"format": FORMAT, "layer": self.layer, "scale": self.scale, "rank": self.rank, "model": self.model,
                "meta": self.meta}
        tmp.write_text(json.dumps(info, indent=1, default=str))
        os.replace(tmp, base.with_suffix(".json"))
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> "SteeringAdapter":
        """Read an adapter written by :meth:`save`; a missing, damaged or inconsistent file is a
        :class:`~riskscope.errors.RiskscopeError` naming the file and what is wrong."""
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not st.is_file() or not js.is_file():
            raise RiskscopeError(f"{base}: needs both .safetensors and .json files of a MELBO adapter")
        try:
            info = json.loads(js.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise RiskscopeError(f"{js}: not UTF-8 text (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise RiskscopeError(f"{js}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(info, dict):
            raise RiskscopeError(f"{js}: must hold a JSON object, not a {type(info).__name__}")
        layer, scale = info.get("layer"), info.get("scale", 1.0)
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise RiskscopeError(f"{js}: field 'layer' is missing or not an integer")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise RiskscopeError(f"{js}: field 'scale' must be a finite number, got {scale!r}")
        try:
            with safe_open(str(st), framework="pt") as f:
                A, B = f.get_tensor("A"), f.get_tensor("B")
        except Exception as e:  # not a safetensors file, or no A/B
            msg = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
            raise RiskscopeError(f"{st}: not a MELBO adapter ({msg})") from None
        if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(B).all())):
            raise RiskscopeError(f"{st}: tensors 'A'/'B' hold NaN or infinite values")
        try:
            return cls(layer=layer, A=A, B=B, scale=float(scale), model=info.get("model"),
                       meta=info.get("meta", {}))
        except RiskscopeError as e:
            raise RiskscopeError(f"{st}: {e}") from None


@contextlib.contextmanager
def perturb_rows(lm: LoadedModel, layer: int, vectors: Tensor | None = None,
                 adapters: tuple[Tensor, Tensor, Tensor] | None = None, rows: Tensor | None = None) -> Iterator[None]:
    """Scoped per-row perturbations of ``layer``'s MLP output during any forward in the block.

    ``vectors`` (K, D) or ``adapters`` (A (K, F, r), B (K, D, r), scale (K,)) hold K perturbations;
    batch row b gets perturbation ``rows[b]`` (default: row b gets perturbation b; -1 = none). With
    one perturbation and no ``rows`` every row gets it.
    """
    if (vectors is None) == (adapters is None):
        raise RiskscopeError("perturb_rows needs exactly one of vectors= or adapters=")
    layer = lm.layout.layer_index(layer)
    device = lm.device

    def pick(batch: int) -> tuple[Tensor, Tensor]:
        """(indices into the K perturbations, 0/1 weight) for a batch of ``batch`` rows."""
        k = int((vectors if vectors is not None else adapters[0]).shape[0])
        idx = rows.to(device) if rows is not None else (torch.zeros(batch, dtype=torch.long, device=device)
                                                        if k == 1 else torch.arange(batch, device=device))
        if idx.shape[0] != batch:
            raise RiskscopeError(f"perturb_rows: {idx.shape[0]} row assignments for a batch of {batch}")
        return idx.clamp_min(0), (idx >= 0).float()

    if vectors is not None:
        vec = vectors.to(device, torch.float32)

        def delta(_inp, out):
            idx, on = pick(out.shape[0])
            return (vec[idx] * on[:, None])[:, None, :]

        module = lm.layout.mlp[layer]
    else:
        A, B, scale = (t.to(device, torch.float32) for t in adapters)

        def delta(inp, out):
            idx, on = pick(out.shape[0])
            low = torch.einsum("btf,bfr->btr", inp.float(), A[idx])
            return torch.einsum("btr,bdr->btd", low, B[idx]) * (scale[idx] * on)[:, None, None]

        module = lm.layout.mlp_down[layer]
    with add_to_output(module, delta):
        yield


__all__ = ["SteeringAdapter", "perturb_rows"]
