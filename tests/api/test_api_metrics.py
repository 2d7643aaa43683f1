"""The API's /metrics: request counts and latency summed over gunicorn workers."""
from __future__ import annotations

import requests

from apihelpers import ApiProcess, free_port


def value(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_counts_and_latency_summed_over_workers(tmp_path):
    port = free_port()
    api = ApiProcess(tmp_path, workers=3, extra=f"metrics_listen = 127.0.0.1:{port}\n")
    try:
        for _ in range(30):   # a new connection each: the workers share them
            assert requests.get(api.url + "/v2.0/networks", timeout=10).status_code == 200
        for _ in range(4):
            r = requests.get(api.url + "/v2.0/ports/00000000-0000-0000-0000-000000000000",
                             timeout=10)
            assert r.status_code == 404
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert value(text, "vmflow_api_requests_total", resource="/v2.0/networks",
                     method="GET", status="200") == 30, text
        assert value(text, "vmflow_api_requests_total", resource="/v2.0/ports/{id}",
                     method="GET", status="404") == 4
        assert value(text, "vmflow_api_request_seconds_count", resource="/v2.0/networks",
                     method="GET", status="200") == 30
        assert value(text, "vmflow_api_request_seconds_bucket", resource="/v2.0/networks",
                     le="+Inf") == 30
    finally:
        api.stop()
