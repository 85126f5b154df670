"""The risk-scoring HTTP service: the probe (and the perplexity filter) in front of a model.

* :class:`ServeConfig` - what is served and the limits requests are held to;
* :func:`create_app` - the FastAPI app (``POST /v1/score``, ``/healthz``, ``/readyz``, ``/metrics``);
* :class:`MicroBatcher` - concurrent requests gathered into one padded forward in one worker thread;
* :func:`run_server` / :class:`ServerThread` - uvicorn in the foreground or in a background thread.

Needs the ``serve`` extra (``pip install 'riskscope[serve]'``).
"""

from ._app import ErrorResponse, ScoreRequest, ScoreResponse, TextResult, create_app
from ._batching import MicroBatcher, QueueFull
from ._config import ServeConfig
from ._engine import Engine, Job, default_calibration_texts
from ._limits import ApiError, ApiKey, ApiKeys, RateLimiter, read_body, request_key
from ._metrics import Metrics
from ._server import ServerThread, bind, is_loopback, run_server, url_of

__all__ = [
    "ApiError", "ApiKey", "ApiKeys", "Engine", "ErrorResponse", "Job", "Metrics", "MicroBatcher", "QueueFull",
    "RateLimiter", "ScoreRequest", "ScoreResponse", "ServeConfig", "ServerThread", "TextResult", "bind",
    "create_app", "default_calibration_texts", "is_loopback", "read_body", "request_key", "run_server", "url_of",
]
