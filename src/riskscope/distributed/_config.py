"""What a distributed job needs to know: which engine, how many workers, and how workers load the model."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Literal

from ..errors import RiskscopeError

Engine = Literal["local", "ray"]
ENGINES = ("local", "ray")
_INSTALL = {"ray": "pip install 'riskscope[ray]' (ray>=2.9)"}


class DistributedError(RiskscopeError):
    """A distributed job that cannot start or finish: engine missing, cluster unreachable, workers disagree."""


@dataclass(frozen=True)
class ModelSpec:
    """How each worker loads the model: the arguments of :func:`riskscope.models.load_model`."""

    spec: str = "default"
    """Named model, .gguf file, model folder or hub id (the same on every host)."""
    dtype: str = "float32"
    """Model dtype: float32, bfloat16, float16 or auto."""
    device: str = "cpu"
    """Device of each worker: cpu, cuda (the GPU Ray gives the worker), or auto."""
    trust_remote_code: bool = False
    """Allow the model repo's own code to run."""
    module_paths: dict[str, str] | None = None
    """Adapter module path overrides."""
    device_map: str | dict | None = None
    """accelerate device map for each worker (``auto`` or a module -> device dict)."""
    max_memory: dict | None = None
    """accelerate ``max_memory`` with ``device_map`` (e.g. ``{0: "20GiB", "cpu": "60GiB"}``)."""

    def load_kwargs(self) -> dict:
        kw: dict = {"dtype": self.dtype, "device": self.device, "trust_remote_code": self.trust_remote_code,
                    "module_paths": self.module_paths}
        if self.device_map is not None:
            kw["device_map"] = self.device_map
            kw["max_memory"] = self.max_memory
        return kw


@dataclass(frozen=True)
class DistributedConfig:
    """Where and how wide a distributed job runs."""

    engine: Engine = "ray"
    """``ray`` (a Ray cluster) or ``local`` (this process, no engine)."""
    workers: int = 2
    """Worker processes, one model copy each (one GPU each with ``--device cuda``)."""
    address: str | None = None
    """An existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a local one."""
    cpus_per_worker: int = 1
    """CPUs Ray reserves per worker (also its torch threads)."""
    gpus_per_worker: float = 0.0
    """GPUs Ray reserves per worker (1 for ``--device cuda``)."""
    max_retries: int = 3
    """Times a killed worker is restarted and its chunk retried."""
    connect_timeout: float = 5.0
    """Seconds to wait for a cluster address to answer before giving up."""
    object_store_mb: int = 200
    """Object store size of a local cluster started here (the dataset and small results travel through it;
    Ray spills to disk beyond it)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables for the workers (e.g. ``{"OMP_NUM_THREADS": "1"}``)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise DistributedError(f"--engine {self.engine!r} is not an engine riskscope knows; choose "
                                   f"{' or '.join(ENGINES)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise DistributedError(f"--workers must be a whole number >= 1, got {self.workers!r}")
        if self.cpus_per_worker < 1 or self.gpus_per_worker < 0 or self.max_retries < 0:
            raise DistributedError("cpus_per_worker must be >= 1, gpus_per_worker and max_retries >= 0")
        if self.address is not None and self.engine != "ray":
            raise DistributedError("--address names a Ray cluster; pass it with --engine ray")


def check_engine(engine: str) -> None:
    """Raise :class:`DistributedError` (one line, how to install) when ``engine`` cannot be imported here."""
    if engine not in ENGINES:
        raise DistributedError(f"--engine {engine!r} is not an engine riskscope knows; choose {' or '.join(ENGINES)}")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise DistributedError(f"--engine ray: Ray is not installed here ({e}); {_INSTALL['ray']}, or run "
                                   f"without --workers") from None


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray address (``ray://host[:10001]``, ``host:port``), ``None`` for ``auto``/``local``;
    :class:`DistributedError` for text that is not an address."""
    if address in ("auto", "local"):
        return None
    text = address
    default = 6379
    if text.startswith("ray://"):
        text, default = text[len("ray://"):], 10001
    elif "://" in text:
        raise DistributedError(f"--address {address!r}: use ray://host:port (Ray Client), host:port (the head's "
                               f"GCS port) or auto")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--address {address!r} is not host:port (e.g. ray://10.0.0.5:10001)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """Fail fast (``timeout`` seconds at most) when nothing answers at ``address``: Ray itself retries for
    about a minute before it gives up on a wrong address."""
    where = parse_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise DistributedError(f"--address {address}: cannot reach a Ray cluster at {where[0]}:{where[1]} ({why} "
                               f"within {timeout:g} s); start one with `ray start --head` or check the address") \
            from None


__all__ = ["DistributedConfig", "DistributedError", "ENGINES", "Engine", "ModelSpec", "check_engine",
           "check_reachable", "parse_address"]
