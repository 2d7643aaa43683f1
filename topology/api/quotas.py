"""Neutron's quotas: how many of each resource a project may hold.

GET    /v2.0/quotas                          projects with limits of their own
GET    /v2.0/quotas/{project_id}             the project's limits
PUT    /v2.0/quotas/{project_id}             change some ({"quota": {"port": 50}})
DELETE /v2.0/quotas/{project_id}             back to the defaults
GET    /v2.0/quotas/{project_id}/default     the defaults ([quotas] options)
GET    /v2.0/quotas/{project_id}/details     limit, used and reserved per resource

A project's own limits are one document of kind "quotas" keyed by the
project. A create over the limit is a 409 OverQuota and writes nothing: the
count is taken inside the create's own transaction.
"""
from __future__ import annotations

from typing import Optional

import falcon

from topology import validation as v
from topology.api import policy
from topology.api.errors import ApiError, BadRequest
from topology.api.http import read_body, respond
from topology.store.base import ReadTxn, Store, Txn

# quota resource name -> the collection it counts (None: not implemented yet)
RESOURCES: dict[str, Optional[str]] = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "router": "routers",
    "floatingip": "floatingips",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
}
RESOURCE_OF = {coll: name for name, coll in RESOURCES.items() if coll}
KIND = "quotas"
LIMIT_MAX = 2 ** 31 - 1


class OverQuota(ApiError):
    status = falcon.HTTP_409
    type = "OverQuota"


def defaults_from_conf(conf) -> dict[str, int]:
    return {name: getattr(conf.quotas, f"quota_{name}") for name in RESOURCES}


def limits(r: ReadTxn, defaults: dict[str, int], project_id: str) -> dict[str, int]:
    own = r.get(KIND, project_id) or {}
    return {name: own.get(name, default) for name, default in defaults.items()}


def used(r: ReadTxn, name: str, project_id: str) -> int:
    collection = RESOURCES[name]
    return r.count(collection, project_id=project_id) if collection else 0


def enforce(txn: Txn, defaults: dict[str, int], collection: str, project_id: str,
            adding: int) -> None:
    """OverQuota if `adding` more of this collection would pass the project's limit."""
    name = RESOURCE_OF.get(collection)
    if name is None:
        return
    limit = limits(txn, defaults, project_id)[name]
    if limit < 0:
        return
    if used(txn, name, project_id) + adding > limit:
        raise OverQuota(f"Quota exceeded for resources: ['{name}'].")


def _limit(field, value):
    return v.integer(-1, LIMIT_MAX)(field, value)


class Quotas:
    def __init__(self, store: Store, defaults: dict[str, int]):
        self.store = store
        self.defaults = defaults

    def _ctx(self, req, action: str, project_id: str):
        ctx = req.context.auth
        policy.enforce(ctx, action, {"project_id": project_id})
        return ctx

    def on_get(self, req, resp):
        ctx = req.context.auth
        with self.store.read() as r:
            docs = [d for d in r.list(KIND) if policy.check(ctx, "get_quota", d)]
            shown = [dict(limits(r, self.defaults, d["project_id"]),
                          project_id=d["project_id"], tenant_id=d["project_id"]) for d in docs]
        respond(resp, falcon.HTTP_200, {"quotas": shown})

    def on_get_item(self, req, resp, project_id):
        self._ctx(req, "get_quota", project_id)
        with self.store.read() as r:
            respond(resp, falcon.HTTP_200, {"quota": limits(r, self.defaults, project_id)})

    def on_get_default(self, req, resp, project_id):
        self._ctx(req, "get_quota", project_id)
        respond(resp, falcon.HTTP_200, {"quota": dict(self.defaults)})

    def on_get_details(self, req, resp, project_id):
        self._ctx(req, "get_quota", project_id)
        with self.store.read() as r:
            lim = limits(r, self.defaults, project_id)
            body = {name: {"limit": lim[name], "used": used(r, name, project_id), "reserved": 0}
                    for name in RESOURCES}
        respond(resp, falcon.HTTP_200, {"quota": body})

    def on_put_item(self, req, resp, project_id):
        self._ctx(req, "update_quota", project_id)
        body = read_body(req)
        if not isinstance(body, dict) or set(body) != {"quota"} or not isinstance(body["quota"], dict):
            raise BadRequest("Unable to find 'quota' in request body")
        changes = body["quota"]
        # Clients may echo the project back; it names nothing to change.
        changes = {k: val for k, val in changes.items() if k not in ("project_id", "tenant_id")}
        unknown = set(changes) - set(RESOURCES)
        if unknown:
            raise v.Unrecognized(unknown)
        clean = {name: _limit(name, val) for name, val in changes.items()}

        def update(txn):
            doc = txn.get(KIND, project_id) or {"id": project_id, "project_id": project_id}
            doc.update(clean)
            txn.put(KIND, project_id, doc, project_id=project_id)
            return limits(txn, self.defaults, project_id)
        shown = self.store.run(update)
        respond(resp, falcon.HTTP_200, {"quota": shown})

    def on_delete_item(self, req, resp, project_id):
        self._ctx(req, "delete_quota", project_id)

        def delete(txn):
            if txn.get(KIND, project_id) is not None:
                txn.delete(KIND, project_id)
        self.store.run(delete)
        resp.status = falcon.HTTP_204
