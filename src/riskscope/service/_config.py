"""The service's settings: one frozen dataclass, which the ``riskscope serve`` options are built from.

>>> ServeConfig(probe="runs/default").host
'127.0.0.1'
>>> ServeConfig(probe="r", max_texts=0)
Traceback (most recent call last):
...
riskscope.errors.RiskscopeError: max_texts must be at least 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RiskscopeError
from ..models import check_dtype


@dataclass(frozen=True)
class ServeConfig:
    """What ``riskscope serve`` serves, and the limits it holds requests to."""

    probe: str
    """Run folder or probe bundle folder."""
    host: str = "127.0.0.1"
    """Interface to listen on (loopback by default: nothing off the machine reaches it)."""
    port: int = 8000
    """TCP port (0: any free port, printed at start)."""
    device: str = "cpu"
    """Where the model runs."""
    dtype: str = "float32"
    """Model dtype: bfloat16 is 1.4-1.9x faster on CPUs with AVX512-BF16 and moves scores slightly
    (docs/service.md gives the measured drift); the probe itself always computes in float64."""
    perplexity: bool = False
    """Also run the perplexity filter on every text."""
    perplexity_calibration: str | None = None
    """Calibration JSON (``riskscope perplexity calibrate``); None: calibrate on the built-in texts at load."""
    api_key_file: str | None = None
    """File of API keys, one per line (``KEY`` or ``KEY RATE BURST``); None: no authentication."""
    batching: bool = True
    """Gather concurrent requests into one padded forward (off: one forward per request)."""
    max_batch: int = 64
    """Most texts in one micro-batch."""
    forward_batch: int = 16
    """Most texts per padded forward inside a micro-batch (length-sorted, so little padding is computed)."""
    max_wait_ms: float = 2.0
    """How long the first request of a batch waits for company."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 beyond)."""
    max_texts: int = 64
    """Most texts per request (413 beyond)."""
    max_tokens: int = 512
    """Most tokens per text (413 beyond, unless ``truncate``)."""
    truncate: bool = False
    """Cut over-long texts to ``max_tokens`` tokens and say so in the response, instead of refusing them."""
    rate_limit: float = 20.0
    """Requests per second allowed per API key (per client address without keys); 0 turns the limit off."""
    rate_burst: int = 40
    """Requests a key may make at once before the rate applies."""
    request_timeout_s: float = 30.0
    """From the request's arrival to its answer (504 beyond)."""
    body_timeout_s: float = 10.0
    """Time a client has to send its body (408 beyond: a slow client)."""
    max_queue: int = 4096
    """Most texts waiting for the model (503 beyond)."""
    max_connections: int = 512
    """Most connections at once (uvicorn answers 503 beyond)."""
    threads: int | None = None
    """torch threads of the forward worker (None: torch's default)."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "forward_batch", "max_body_bytes", "max_texts", "max_tokens", "rate_burst", "max_queue",
                     "max_connections"):
            if int(getattr(self, name)) < 1:
                raise RiskscopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "rate_limit"):
            if float(getattr(self, name)) < 0:
                raise RiskscopeError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("request_timeout_s", "body_timeout_s"):
            if float(getattr(self, name)) <= 0:
                raise RiskscopeError(f"{name} must be positive, got {getattr(self, name)}")
        check_dtype(self.dtype)
        if not 0 <= int(self.port) < 65536:
            raise RiskscopeError(f"port must be 0..65535, got {self.port}")
        if self.threads is not None and self.threads < 1:
            raise RiskscopeError(f"threads must be at least 1, got {self.threads}")


__all__ = ["ServeConfig"]
