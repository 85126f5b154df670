"""llama.cpp control vectors: export riskscope steering vectors as GGUF, import repeng/llama.cpp files.

The file format (written by repeng's ``export_gguf`` and llama.cpp's
``cvector-generator``, read by llama.cpp's ``--control-vector``):

* a GGUF file with ``general.architecture = "controlvector"`` and, by
  convention, ``controlvector.model_hint`` (the model family) and
  ``controlvector.layer_count``; llama.cpp reads none of this metadata;
* one 1-D F32 tensor ``direction.<k>`` of length ``d_model`` per layer.

Layer convention (llama.cpp ``common_control_vector_load_one`` and
``llama_adapter_cvec``): ``direction.k`` is added, at every token position,
to the **output of block k** (0-based), right after the block's last residual
add - riskscope's ``resid_post`` at layer ``k``. ``k = 0`` is rejected by
llama.cpp ("invalid (zero) direction tensor layer index"), so block 0's
output cannot be steered from a file. repeng uses the same numbering: it
reads ``hidden_states[k + 1]`` (the output of block ``k``) and writes
``direction.k``. Several ``direction.k`` tensors for the same ``k`` are
summed, as llama.cpp does.

So ``SteeringVector({k: v}, hook="resid_post")`` <-> ``direction.k``; a
``resid_pre`` vector at layer ``k`` (the input of block ``k``, which is the
output of block ``k - 1``) is written as ``direction.(k-1)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RiskscopeError
from ._vector import SteeringVector

ARCH = "controlvector"
RISKSCOPE_KEY = f"{ARCH}.riskscope"
"""Extra metadata (JSON: hook, model, meta) so an exported riskscope vector re-imports exactly."""


def _llama_layers(vec: SteeringVector) -> dict[int, torch.Tensor]:
    if vec.hook == "resid_post":
        return dict(vec.vectors)
    if vec.hook == "resid_pre":
        return {k - 1: v for k, v in vec.vectors.items()}
    raise RiskscopeError(f"llama.cpp control vectors add to block outputs (resid_post); a vector at {vec.hook} "
                         f"cannot be exported")


def export_control_vector(vec: SteeringVector, path: str | Path, *, model_hint: str | None = None,
                          drop_layer0: bool = False, lm: Any = None) -> Path:
    """Write ``vec`` as a llama.cpp control-vector GGUF (``direction.<k>`` = block ``k``'s output).

    Args:
        vec: a ``resid_post`` (or ``resid_pre``) steering vector.
        path: the ``.gguf`` file to write (atomically).
        model_hint: ``controlvector.model_hint`` (default: ``vec.meta["model_type"]``, else the model id).
        drop_layer0: leave out the output of block 0, which llama.cpp cannot steer (otherwise an error).
        lm: when given, the vector's width and layers are checked against this model first.
    """
    import gguf

    if lm is not None:
        vec.check(lm)
    layers = _llama_layers(vec)
    if any(k < 0 for k in layers):
        raise RiskscopeError("resid_pre at layer 0 is the embedding output, which llama.cpp cannot steer")
    if 0 in layers:
        if not drop_layer0:
            raise RiskscopeError("llama.cpp rejects direction.0 (block 0's output cannot be steered); "
                                 "pass drop_layer0=True (--drop-layer0) to leave it out")
        layers.pop(0)
    if not layers:
        raise RiskscopeError("nothing to export: the vector has no layer >= 1")
    path = Path(path)
    if path.suffix != ".gguf":
        path = path.with_name(path.name + ".gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    hint = model_hint or str(vec.meta.get("model_type") or vec.model or "unknown")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    try:
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        writer.add_string(RISKSCOPE_KEY, json.dumps({"hook": vec.hook, "model": vec.model, "meta": vec.meta},
                                                    default=str))
        for k in sorted(layers):
            writer.add_tensor(f"direction.{k}", np.ascontiguousarray(layers[k].numpy(), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def _field_str(reader, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None or not f.data:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")


def _field_int(reader, key: str) -> int | None:
    f = reader.get_field(key)
    if f is None or not f.data:
        return None
    return int(f.parts[f.data[0]][0])


def read_control_vector_info(path: str | Path) -> dict:
    """The metadata of a control-vector file: architecture, model hint, layer count, tensors."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise RiskscopeError(f"{path}: no such file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise RiskscopeError(f"{path}: not a GGUF file (it does not start with the GGUF magic)")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # not GGUF at all: wrong magic, truncated, ...
        raise RiskscopeError(f"{path}: not a GGUF file ({type(e).__name__}: {e})") from None
    arch = _field_str(reader, "general.architecture")
    if arch != ARCH:
        raise RiskscopeError(f"{path}: not a control vector (general.architecture is {arch!r}, expected '{ARCH}')")
    return {"architecture": arch, "model_hint": _field_str(reader, f"{ARCH}.model_hint"),
            "layer_count": _field_int(reader, f"{ARCH}.layer_count"),
            "riskscope": _field_str(reader, RISKSCOPE_KEY), "tensors": [t.name for t in reader.tensors],
            "_reader": reader}


def import_control_vector(path: str | Path) -> SteeringVector:
    """Read a llama.cpp / repeng control-vector GGUF as a ``resid_post`` :class:`SteeringVector`.

    ``direction.<k>`` becomes layer ``k`` (block ``k``'s output); repeated layers are summed as
    llama.cpp sums them. Files from riskscope keep their model id and metadata.
    """
    import gguf

    info = read_control_vector_info(path)
    reader = info.pop("_reader")
    vectors: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        prefix, _, idx = t.name.partition(".")
        if prefix != "direction" or not idx.lstrip("-").isdigit():
            raise RiskscopeError(f"{path}: tensor {t.name!r} is not a direction.<layer> tensor")
        k = int(idx)
        if k < 0:
            raise RiskscopeError(f"{path}: tensor {t.name!r} has a negative layer index")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise RiskscopeError(f"{path}: tensor {t.name!r} is {t.tensor_type.name}, control vectors are F32")
        data = np.asarray(t.data, dtype=np.float32).reshape(-1).copy()
        if len([d for d in t.shape if d > 1]) > 1:
            raise RiskscopeError(f"{path}: tensor {t.name!r} is not 1-D (shape {list(t.shape)})")
        vectors[k] = vectors[k] + data if k in vectors else data
    if not vectors:
        raise RiskscopeError(f"{path}: holds no direction tensors")
    widths = {len(v) for v in vectors.values()}
    if len(widths) != 1:
        raise RiskscopeError(f"{path}: direction tensors have different lengths {sorted(widths)}")
    extra = json.loads(info["riskscope"]) if info.get("riskscope") else {}
    meta = dict(extra.get("meta") or {})
    meta.update({"source": str(path), "model_hint": info["model_hint"], "format": "llama.cpp control vector"})
    vec = SteeringVector({k: torch.from_numpy(v) for k, v in vectors.items()}, hook="resid_post",
                         model=extra.get("model"), meta=meta)
    if extra.get("hook") == "resid_pre":  # written from a resid_pre vector: give it back as it was
        vec = SteeringVector({k + 1: v for k, v in vec.vectors.items()}, hook="resid_pre", model=vec.model, meta=meta)
    return vec


__all__ = ["ARCH", "export_control_vector", "import_control_vector", "read_control_vector_info"]
