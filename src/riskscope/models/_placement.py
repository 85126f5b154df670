"""Models spread over devices with accelerate's ``device_map``: the checks before and after loading.

``device_map="auto"`` (or ``balanced``, ``sequential``, or an explicit ``{module: device}``
map) lets accelerate put blocks on several GPUs, the CPU or disk. Offloaded modules keep
their weights on the ``meta`` device and get them back for each forward through an
accelerate hook; riskscope's hooks sit on the same modules and see ordinary tensors.
A module placed on ``meta`` itself has no weights at all: its outputs would be garbage,
so :func:`check_placement` refuses it by name.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

_NAMED_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_PLACES = ("cpu", "disk", "mps")


def _check_place(where: Any, what: str) -> None:
    if isinstance(where, int) and where >= 0:
        where = f"cuda:{where}"
    if not isinstance(where, str):
        raise ModelError(f"{what}: {where!r} is not a device; use cpu, disk, cuda:N (or N)")
    if where == "meta":
        raise ModelError(f"{what}: 'meta' holds no weights, so that part of the model would compute garbage; give it "
                         f"a real device (cpu, disk, cuda:N)")
    if where.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"{what}: {where}: CUDA is not available on this machine; use cpu or disk")
        if ":" in where and int(where.split(":")[1]) >= torch.cuda.device_count():
            raise ModelError(f"{what}: {where}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif where not in _PLACES:
        raise ModelError(f"{what}: {where!r} is not a device; use cpu, disk, cuda:N (or N)")


def read_device_map(text: str | dict | None) -> str | dict | None:
    """``--device-map``: ``auto``/``balanced``/``sequential``, a JSON object, or a .json file holding one
    (``{"model.layers.0": "cuda:0", "model.layers.1": "disk", ...}``); checked, nothing loaded."""
    if text is None or isinstance(text, dict):
        dm = text
    elif text in _NAMED_MAPS:
        return text
    else:
        source = text
        if text.strip().startswith("{"):
            body = text
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ModelError(f"--device-map {text!r}: use auto, balanced, sequential, a JSON object or a .json "
                                 f"file with one")
            source, body = str(path), path.read_text(encoding="utf-8")
        try:
            dm = json.loads(body)
        except json.JSONDecodeError as e:
            raise ModelError(f"--device-map {source}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(dm, dict) or not dm:
            raise ModelError(f"--device-map {source}: must be a JSON object of module -> device")
    if dm is not None:
        for name, where in dm.items():
            _check_place(where, f"--device-map {name!r}")
    return dm


def check_max_memory(max_memory: dict | None) -> dict | None:
    """``max_memory`` keys must be devices (cpu, disk, N or cuda:N), values sizes like ``"2GiB"`` or bytes."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, dict):
        raise ModelError(f"--max-memory must map devices to sizes, got {max_memory!r}")
    out: dict = {}
    for key, size in max_memory.items():
        k: Any = int(key) if isinstance(key, str) and key.isdigit() else key
        _check_place(k, "--max-memory")
        if not isinstance(size, (int, str)):
            raise ModelError(f"--max-memory {key}: {size!r} is not a size like '2GiB' or a number of bytes")
        out[k] = size
    return out


def placement_kwargs(device_map: str | dict | None, max_memory: dict | None,
                     offload_folder: str | None) -> dict | None:
    """The ``from_pretrained`` arguments for a device map (None without one); offloaded weights go to
    ``offload_folder`` (a fresh temporary folder when not given)."""
    dm = read_device_map(device_map)
    if dm is None:
        if max_memory is not None:
            raise ModelError("--max-memory needs --device-map (auto, balanced, sequential or a map)")
        return None
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ModelError("--device-map needs accelerate: pip install accelerate") from None
    kw: dict = {"device_map": dm}
    mm = check_max_memory(max_memory)
    if mm is not None:
        kw["max_memory"] = mm
    kw["offload_folder"] = offload_folder or tempfile.mkdtemp(prefix="riskscope-offload-")
    return kw


def execution_device(model: Any, module: torch.nn.Module) -> torch.device | None:
    """The device accelerate runs ``module`` on (its own hook's, else its nearest hooked ancestor's)."""
    names = {id(m): n for n, m in model.named_modules()}
    target = names.get(id(module))
    best: tuple[int, torch.device] | None = None
    for name, m in model.named_modules():
        hook = getattr(m, "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is None or target is None:
            continue
        if name == target or name == "" or target.startswith(name + "."):
            if best is None or len(name) > best[0]:
                best = (len(name), torch.device(dev) if not isinstance(dev, torch.device) else dev)
    return None if best is None else best[1]


def check_placement(model: Any, layout: Any) -> None:
    """Refuse a model in which a module riskscope hooks (a block, the embedding, the final norm) would run on
    the meta device: its weights were never loaded."""
    dm = getattr(model, "hf_device_map", None)
    if not dm:
        return
    names = {id(m): n for n, m in model.named_modules()}
    parts = [("the embedding", layout.embed)] + [(f"layer {i}", b) for i, b in enumerate(layout.blocks)]
    for what, module in parts:  # first the part the map itself put on meta (accelerate then runs all on meta)
        name = names.get(id(module), "?")
        placed = [k for k in dm if k == "" or name == k or name.startswith(k + ".")]
        if placed and str(dm[max(placed, key=len)]) == "meta":
            raise ModelError(f"--device-map leaves {what} ({name}) on the meta device, so it has no weights; give "
                             f"it a real device (cpu, disk, cuda:N)")
    for what, module in parts:
        dev = execution_device(model, module)
        meta_weights = any(p.device.type == "meta" for p in module.parameters())
        if (dev is not None and dev.type == "meta") or (meta_weights and dev is None):
            raise ModelError(f"--device-map leaves {what} ({names.get(id(module), '?')}) on the meta device, so it has "
                             f"no weights; give it a real device (cpu, disk, cuda:N)")


__all__ = ["check_max_memory", "check_placement", "execution_device", "placement_kwargs", "read_device_map"]
