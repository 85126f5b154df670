"""Shared helpers for the cache / load / RSS benchmarks (not part of the riskscope package)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored; raw JSON results land here


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    """What the figures were measured on (load average: other work sharing the CPUs)."""
    import torch

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpu_matmul_flags": _cpu_flags(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "torch": version("torch"),
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
        "transformer-lens": version("transformer-lens"),
        "nnsight": version("nnsight"),
        "riskscope": version("riskscope"),
        "executable": sys.executable,
    }


def _cpuinfo(field: str) -> str | None:
    """The first ``field : value`` line of /proc/cpuinfo (None off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "?"


def _cpu_flags() -> list[str]:
    """The CPU's matrix-unit and wide-vector flags (AMX and AVX-512 change bfloat16 and int8 speed several-fold)."""
    return sorted(f for f in (_cpuinfo("flags") or "").split() if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def median(xs):
    return statistics.median(xs)


def save_json(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
