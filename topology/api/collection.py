"""The HTTP face of a resource kind: Neutron's list/show/create/update/delete.

Every write is one store transaction: the body is checked completely first,
then the kind's logic runs inside the transaction, and any error rolls the
whole request back.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import falcon

from topology import validation as v
from topology.api.errors import BadRequest, Forbidden
from topology.api.kinds.base import Kind
from topology.api.kinds.security_groups import DEFAULT_NAMESPACE, ensure_default
from topology.store.base import Store

RESERVED_PARAMS = frozenset(("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"))
COMMON_FIELDS = frozenset(("id", "created_at", "updated_at", "revision_number", "tenant_id",
                           "project_id"))


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


def _as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _matches(doc: dict, name: str, wanted: list[str]) -> bool:
    if name == "fixed_ips":
        # Neutron's form: fixed_ips=ip_address=10.0.0.3 or fixed_ips=subnet_id=...
        for want in wanted:
            key, _, value = want.partition("=")
            if not any(ip.get(key) == value for ip in doc.get("fixed_ips", ())):
                return False
        return True
    value = doc.get(name)
    if isinstance(value, bool):
        wanted = [w.lower() for w in wanted]
    if isinstance(value, list):
        return any(_text(item) in wanted for item in value)
    return _text(value) in wanted or (value is None and any(w.lower() in ("none", "null") for w in wanted))


class Resource:
    def __init__(self, kind: Kind, store: Store, extra_fields: frozenset[str]):
        self.kind = kind
        self.store = store
        self.known_fields = frozenset(kind.attrs) | COMMON_FIELDS | extra_fields

    def _ctx(self, req):
        ctx = req.context.auth
        if self.kind.admin_only and not ctx.is_admin:
            raise Forbidden(f"rule:{self.kind.collection} is disallowed by policy")
        return ctx

    def _fields(self, req) -> list[str]:
        return [f for value in _as_list(req.params.get("fields", [])) for f in value.split(",") if f]

    def _show(self, docs: list[dict], fields: list[str]) -> list[dict]:
        if not fields:
            return docs
        return [{f: d[f] for f in fields if f in d} for d in docs]

    # -- collection --------------------------------------------------------
    def on_get(self, req, resp):
        ctx = self._ctx(req)
        kind = self.kind
        filters = {k: _as_list(val) for k, val in req.params.items() if k not in RESERVED_PARAMS}
        for name in filters:
            if name not in self.known_fields:
                raise BadRequest(f"[{name}] is invalid attribute for filtering", "HTTPBadRequest")
        parent = None
        if kind.parent_field and len(filters.get(kind.parent_field, ())) == 1:
            parent = filters[kind.parent_field][0]
        if kind.collection == "security_groups" and ctx.project_id:
            self._ensure_default_group(ctx.project_id)
        with self.store.read() as r:
            if ctx.is_admin or kind.collection in ("networks", "subnets"):
                docs = r.list(kind.collection, parent_id=parent)
            else:
                docs = r.list(kind.collection, project_id=ctx.project_id, parent_id=parent)
            if not ctx.is_admin:
                docs = [d for d in docs if kind.visible(r, ctx, d)]
            for name, wanted in filters.items():
                docs = [d for d in docs if _matches(d, name, wanted)]
            docs, links = self._page(req, docs)
            shown = kind.present(r, docs)
        body = {kind.collection: self._show(shown, self._fields(req))}
        if links:
            body[kind.collection + "_links"] = links
        respond(resp, falcon.HTTP_200, body)

    def _ensure_default_group(self, project_id: str) -> None:
        # Neutron creates a project's default group the first time it is listed.
        with self.store.read() as r:
            if r.claim_owner(DEFAULT_NAMESPACE, project_id):
                return
        with self.store.transaction() as txn:
            ensure_default(txn, project_id)

    def _page(self, req, docs):
        sort_keys = _as_list(req.params.get("sort_key", []))
        sort_dirs = _as_list(req.params.get("sort_dir", []))
        for i in reversed(range(len(sort_keys))):
            key = sort_keys[i]
            if key not in self.known_fields:
                raise BadRequest(f"{key} is invalid attribute for sort_key")
            reverse = (sort_dirs[i] if i < len(sort_dirs) else "asc") == "desc"
            docs = sorted(docs, key=lambda d: _text(d.get(key)), reverse=reverse)
        marker = req.params.get("marker")
        if marker:
            ids = [d["id"] for d in docs]
            docs = docs[ids.index(marker) + 1:] if marker in ids else []
        limit = req.params.get("limit")
        if limit is None:
            return docs, []
        limit = v.integer(0, 1 << 31)("limit", limit)
        if not limit or len(docs) <= limit:
            return docs, []
        docs = docs[:limit]
        query = {k: val for k, val in req.params.items() if k != "marker"}
        query["marker"] = docs[-1]["id"]
        href = f"{req.prefix}{req.path}?{urlencode(query, doseq=True)}"
        return docs, [{"rel": "next", "href": href}]

    def on_post(self, req, resp):
        ctx = self._ctx(req)
        kind = self.kind
        body = read_body(req)
        if isinstance(body, dict) and kind.member in body and len(body) == 1:
            items, bulk = [body[kind.member]], False
        elif isinstance(body, dict) and isinstance(body.get(kind.collection), list) \
                and len(body) == 1:
            items, bulk = body[kind.collection], True
        else:
            raise BadRequest(f"Unable to find '{kind.member}' in request body")
        parsed = []
        for item in items:
            values = v.parse_create(kind.attrs, item, kind.member)
            kind.check_admin_attrs(ctx, values, item.keys())
            parsed.append(values)
        with self.store.transaction() as txn:
            docs = [kind.create(txn, ctx, values) for values in parsed]
            shown = kind.present(txn, docs)
        if bulk:
            respond(resp, falcon.HTTP_201, {kind.collection: shown})
        else:
            respond(resp, falcon.HTTP_201, {kind.member: shown[0]})

    # -- member ------------------------------------------------------------
    def on_get_item(self, req, resp, id):
        ctx = self._ctx(req)
        with self.store.read() as r:
            doc = self.kind.load(r, ctx, id)
            shown = self.kind.present(r, [doc])
        respond(resp, falcon.HTTP_200, {self.kind.member: self._show(shown, self._fields(req))[0]})

    def on_put_item(self, req, resp, id):
        ctx = self._ctx(req)
        kind = self.kind
        body = read_body(req)
        if not isinstance(body, dict) or kind.member not in body or len(body) != 1:
            raise BadRequest(f"Unable to find '{kind.member}' in request body")
        changes = v.parse_update(kind.attrs, body[kind.member], kind.member)
        kind.check_admin_attrs(ctx, changes, changes.keys())
        with self.store.transaction() as txn:
            doc = kind.load(txn, ctx, id)
            doc = kind.update(txn, ctx, doc, changes)
            shown = kind.present(txn, [doc])
        respond(resp, falcon.HTTP_200, {kind.member: shown[0]})

    def on_delete_item(self, req, resp, id):
        ctx = self._ctx(req)
        with self.store.transaction() as txn:
            doc = self.kind.load(txn, ctx, id)
            self.kind.delete(txn, ctx, doc)
        resp.status = falcon.HTTP_204

