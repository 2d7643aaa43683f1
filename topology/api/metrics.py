"""The API's request counts and latency, for Prometheus, across gunicorn workers.

With [api] metrics_listen set, the master makes a fresh directory for
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) before it
forks, each worker counts into its own files there, and the master serves
their sum at http://metrics_listen/metrics; a worker that exits is marked
dead so its gauges go. Exported, by resource (the route template, e.g.
/v2.0/ports/{id}), method and status:

    vmflow_api_requests_total
    vmflow_api_request_seconds   (histogram)

prometheus_client picks its multiprocess value class when it is first
imported, so it is imported here only after the directory is set: in the
master by serve(), in a worker by the middleware.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Optional

ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsMiddleware:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram
        labels = ["resource", "method", "status"]
        self.requests = Counter("vmflow_api_requests_total", "API requests", labels)
        self.latency = Histogram("vmflow_api_request_seconds", "API request latency", labels,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1, 2.5, 5, 10))

    def process_request(self, req, resp) -> None:
        req.context.metrics_started = time.monotonic()

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        # The route template keeps the label set bounded (ids stay out).
        route = req.uri_template if resource is not None and req.uri_template else "unmatched"
        status = str(resp.status).split(" ", 1)[0]
        labels = (route, req.method, status)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(time.monotonic() - started)


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def prepare() -> str:
    """In the master, before any worker forks: a fresh multiprocess directory."""
    path = tempfile.mkdtemp(prefix="vmflow-api-metrics-")
    os.environ[ENV] = path
    return path


def serve(listen: tuple[str, int]):
    """In the master: /metrics summing every worker's figures."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    server, _thread = start_http_server(listen[1], addr=listen[0], registry=registry)
    return server


def worker_exited(pid: int) -> None:
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)


def cleanup(path: Optional[str]) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)
