"""Running the app on uvicorn: in the foreground (``riskscope serve``) or in a thread (tests, notebooks).

>>> with ServerThread(ServeConfig(probe="runs/default", port=0)) as server:   # doctest: +SKIP
...     server.wait_ready()
...     httpx.post(server.url + "/v1/score", json={"texts": ["hello"]}).json()
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Callable

import uvicorn

from ..errors import RiskscopeError
from ._app import create_app
from ._config import ServeConfig
from ._engine import Engine


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise RiskscopeError(f"--host {host!r}: cannot resolve it ({e.strerror})") from None
    family, _, proto, _, addr = infos[0]
    # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) on accepted connections only when the socket's
    # proto is IPPROTO_TCP, and with Nagle on every answer's body waited ~40 ms for the client's delayed ACK of
    # its headers (uvicorn writes them as two segments). Set on the listener too; accepted sockets inherit it.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise RiskscopeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_config(app, config: ServeConfig, log_level: str, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                          limit_concurrency=config.max_connections, timeout_keep_alive=5,
                          timeout_graceful_shutdown=5, server_header=False, log_config=None)


def run_server(config: ServeConfig, *, log_level: str = "info", access_log: bool = False,
               announce: Callable[[str], None] = print) -> None:
    """Check the files, bind, announce the URL, load the model in the background and serve until stopped."""
    app = create_app(config, Engine(config))
    sock = bind(config.host, config.port)
    announce(f"listening on {url_of(sock)} (loading the model; GET /readyz says when it is ready)")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.Server(_uvicorn_config(app, config, log_level, access_log)).run(sockets=[sock])


class ServerThread:
    """The real server on a loopback port in a background thread; a context manager.

    ``url`` is known on entry; :meth:`wait_ready` waits for the model. The app is ``app`` (its
    ``state.engine``, ``state.metrics``).
    """

    def __init__(self, config: ServeConfig, *, engine: Engine | None = None, log_level: str = "warning") -> None:
        self.config = config
        self.app = create_app(config, engine or Engine(config))
        self._sock = bind(config.host, config.port)
        self.url = url_of(self._sock)
        self._server = uvicorn.Server(_uvicorn_config(self.app, config, log_level, False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="riskscope-server", daemon=True)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        t0 = time.monotonic()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > 30:
                raise RiskscopeError("the server thread did not start")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 120.0) -> "ServerThread":
        engine = self.app.state.engine
        t0 = time.monotonic()
        while not engine.ready:
            if engine.state == "failed":
                raise RiskscopeError(f"the model failed to load: {engine.error}")
            if time.monotonic() - t0 > timeout:
                raise RiskscopeError(f"the model did not load within {timeout:g} s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


__all__ = ["ServerThread", "bind", "is_loopback", "run_server", "url_of"]
