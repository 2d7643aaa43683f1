"""Reading Neutron request bodies and writing JSON answers."""
from __future__ import annotations

import json
from typing import Any

import falcon

from topology.api.errors import BadRequest


def read_body(req: falcon.Request) -> Any:
    raw = req.bounded_stream.read()
    if not raw:
        raise BadRequest("Resource body required")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"Malformed request body: {e}") from None


def respond(resp: falcon.Response, status, body: Any) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body)
