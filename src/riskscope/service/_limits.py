"""Limits and authentication: API keys compared in constant time, a per-key token bucket, a bounded body.

>>> keys = ApiKeys.parse("# ops team\\nk" + "x" * 20 + "\\n", "keys.txt")
>>> keys.match("k" + "x" * 20).name, keys.match("wrong")
('keys.txt:2', None)
>>> bucket = RateLimiter(rate=1.0, burst=2)
>>> [bucket.allow("a", now=0.0) for _ in range(3)]
[0.0, 0.0, 1.0]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RiskscopeError

MIN_KEY_CHARS = 16


class ApiError(Exception):
    """An answer other than 200: HTTP status, a short machine code, a one-line message, the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def body(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


@dataclass(frozen=True)
class ApiKey:
    """One accepted key (only its digest is kept) and its own rate, when it has one."""

    name: str
    """Where it was read (``file:line``): what logs and metrics show instead of the key."""
    digest: bytes
    rate: float | None = None
    burst: int | None = None


class ApiKeys:
    """The accepted API keys. :meth:`match` compares against every key, in constant time per key."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def parse(cls, text: str, where: str) -> "ApiKeys":
        """Lines ``KEY`` or ``KEY RATE BURST`` (requests/s and burst for this key); ``#`` starts a comment."""
        keys = []
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) not in (1, 3):
                raise RiskscopeError(f"{where}:{n}: expected KEY or KEY RATE BURST, got {len(parts)} fields")
            if len(parts[0]) < MIN_KEY_CHARS:
                raise RiskscopeError(f"{where}:{n}: the key is shorter than {MIN_KEY_CHARS} characters; use a long "
                                     f"random key, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
            rate = burst = None
            if len(parts) == 3:
                try:
                    rate, burst = float(parts[1]), int(parts[2])
                except ValueError:
                    raise RiskscopeError(f"{where}:{n}: RATE must be a number and BURST an integer") from None
                if rate < 0 or burst < 1:
                    raise RiskscopeError(f"{where}:{n}: RATE must be >= 0 and BURST >= 1")
            keys.append(ApiKey(f"{Path(where).name}:{n}", _digest(parts[0]), rate, burst))
        if not keys:
            raise RiskscopeError(f"{where}: no API keys in the file (one key per line)")
        return cls(keys)

    @classmethod
    def load(cls, path: str | Path) -> "ApiKeys":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RiskscopeError(f"{path}: no such API key file") from None
        except UnicodeDecodeError as e:
            raise RiskscopeError(f"{path}: not UTF-8 (byte {e.start})") from None
        return cls.parse(text, str(path))

    def match(self, given: str | None) -> ApiKey | None:
        """The key equal to ``given``, comparing digests with ``hmac.compare_digest`` against every key."""
        if not given:
            return None
        d = _digest(given)
        found = None
        for k in self.keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(d, k.digest):
                found = k
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def request_key(headers) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class RateLimiter:
    """Token buckets: ``burst`` requests at once, refilled at ``rate`` per second, one bucket per client.

    :meth:`allow` returns 0.0 when the request may go, else the seconds until it could. Used from the
    event loop only (no lock); at most ``max_clients`` buckets are kept (full ones are dropped first).
    """

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = float(rate), int(burst), max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, rate: float | None = None, burst: int | None = None,
              now: float | None = None) -> float:
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        if rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        full = [c for c, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for c in full:
            del self._buckets[c]
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]


async def read_body(request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, refused past ``max_bytes`` (413) or when it takes over ``timeout_s`` to arrive (408).

    A client that disconnects mid-body raises starlette's ``ClientDisconnect``.
    """
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "bad_request", "the Content-Length header is not a number")
        if int(length) > max_bytes:
            raise ApiError(413, "body_too_large", f"the body has {int(length)} bytes; the limit is {max_bytes}")

    async def read() -> bytes:
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > max_bytes:
                raise ApiError(413, "body_too_large", f"the body is over the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, "slow_client", f"the body did not arrive within {timeout_s:g} s") from None


__all__ = ["ApiError", "ApiKey", "ApiKeys", "MIN_KEY_CHARS", "RateLimiter", "read_body", "request_key"]
