"""The service's Prometheus metrics, in a registry of their own (no process-wide state).

>>> m = Metrics()
>>> m.rejections.labels(reason="rate_limited").inc()
>>> 'riskscope_rejections_total{reason="rate_limited"} 1.0' in m.render().decode()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests, latency, batch sizes, rejections, slow clients and dropped connections."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("riskscope_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=r)
        self.latency = Histogram("riskscope_request_seconds", "Time from request to answer, by path",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter("riskscope_texts_scored", "Texts scored", registry=r)
        self.batch_texts = Histogram("riskscope_batch_texts", "Texts per forward micro-batch",
                                     buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("riskscope_batch_requests", "Requests per forward micro-batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("riskscope_batch_seconds", "Model time per micro-batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.rejections = Counter("riskscope_rejections", "Requests refused, by reason", ["reason"], registry=r)
        self.slow_clients = Counter("riskscope_slow_clients", "Clients that did not send their body in time",
                                    registry=r)
        self.dropped = Counter("riskscope_dropped_connections",
                               "Clients that disconnected before their answer", registry=r)
        self.truncated = Counter("riskscope_truncated_texts", "Texts cut to the token limit", registry=r)
        self.flagged = Counter("riskscope_flagged_texts", "Texts at or over a scorer's threshold", ["scorer"],
                               registry=r)
        self.queue = Gauge("riskscope_queue_texts", "Texts waiting for the model", registry=r)
        self.ready = Gauge("riskscope_ready", "1 once the model has loaded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics"]
