"""Availability zones: the zones hosts declare (host attribute availability_zone).

GET /v2.0/availability_zones lists each zone once per resource kind it
serves, in Neutron's shape. vmflow has no agents: every host serves networks
(the controller answers DHCP and metadata on all of them), so a zone with a
host is an available "network" zone. Networks take availability_zone_hints
naming zones that exist.
"""
from __future__ import annotations

import falcon

from topology import validation as v
from topology.api import policy
from topology.api.errors import BadRequest
from topology.api.http import respond
from topology.store.base import ReadTxn, Store

DEFAULT = "nova"  # Nova's and Neutron's default zone name
FIELDS = ("name", "resource", "state")


def name(field: str, value) -> str:
    value = v.string(255, empty_ok=False)(field, value)
    if "," in value:
        raise v.Invalid(field, f"'{value}' must not contain a comma")
    return value


def zones(r: ReadTxn) -> set[str]:
    return {h.get("availability_zone", DEFAULT) for h in r.list("hosts")}


def check_hints(r: ReadTxn, hints: list[str]) -> None:
    known = zones(r)
    for hint in hints:
        if hint not in known:
            raise v.Invalid("availability_zone_hints",
                            f"availability zone {hint} does not exist (known: {sorted(known)})")


class AvailabilityZones:
    def __init__(self, store: Store):
        self.store = store

    def on_get(self, req, resp):
        policy.enforce(req.context.auth, "get_availability_zone")
        filters = {}
        for key, value in req.params.items():
            if key == "fields":
                continue
            if key not in FIELDS:
                raise BadRequest(f"[{key}] is invalid attribute for filtering", "HTTPBadRequest")
            filters[key] = set(value if isinstance(value, list) else [value])
        with self.store.read() as r:
            found = zones(r)
        listed = [{"name": z, "resource": "network", "state": "available"} for z in sorted(found)]
        listed = [z for z in listed if all(z[k] in want for k, want in filters.items())]
        respond(resp, falcon.HTTP_200, {"availability_zones": listed})
