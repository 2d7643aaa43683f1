"""The HTTP face of a resource kind: Neutron's list/show/create/update/delete.

Every write is one store transaction: the body is checked completely first,
then the kind's logic runs inside the transaction, and any error rolls the
whole request back. Who may do what is asked of topology/api/policy.py.
"""
from __future__ import annotations

import copy
import re
from typing import Optional
from urllib.parse import urlencode

import falcon

from topology import validation as v
from topology.api import policy, quotas, tags
from topology.api.errors import ApiError, BadRequest
from topology.api.http import read_body, respond
from topology.api.kinds.base import UNSET, Kind, now
from topology.api.kinds.security_groups import DEFAULT_NAMESPACE, ensure_default
from topology.store.base import Store


RESERVED_PARAMS = frozenset(("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"))
TAG_FILTERS = frozenset(("tags", "tags-any", "not-tags", "not-tags-any"))
COMMON_FIELDS = frozenset(("id", "created_at", "updated_at", "revision_number", "tenant_id",
                           "project_id"))
# Lists and objects have no order to sort by.
UNSORTABLE = frozenset(("fixed_ips", "allowed_address_pairs", "security_groups", "binding:profile",
                        "binding:vif_details", "subnets", "tags", "dns_nameservers",
                        "host_routes", "allocation_pools", "security_group_rules", "meta",
                        "public_keys", "physical_networks", "availability_zone_hints",
                        "availability_zones", "routes", "external_gateway_info"))
FIXED_IP_FILTERS = frozenset(("ip_address", "subnet_id", "ip_address_substr"))
# A child whose parent shows it embedded: adding or removing one changes the
# parent, whose revision_number rises with it (as Neutron's security groups do).
PARENT_REVISION = {"security_group_rules": ("security_groups", "security_group_id")}
IF_MATCH = re.compile(r"\s*revision_number\s*=\s*(\d+)\s*")


class PreconditionFailed(ApiError):
    status = falcon.HTTP_412
    type = "RevisionNumberConstraintFailed"


def _fresh(values: dict) -> dict:
    """A copy a transaction body may change: store.run() may run it again.
    The "not given" sentinels stay themselves (they are compared by identity)."""
    return copy.deepcopy(values, {id(UNSET): UNSET, id(v.REQUIRED): v.REQUIRED})


def _as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _sort_value(value):
    # None first, then numbers by value, then text: "9" before "10" for integers
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0, str(value))


def _matches(doc: dict, name: str, wanted: list[str]) -> bool:
    if name == "fixed_ips":
        # Neutron's forms: fixed_ips=ip_address=10.0.0.3, fixed_ips=subnet_id=...,
        # fixed_ips=ip_address_substr=0.0.3
        for want in wanted:
            key, _, value = want.partition("=")
            if key == "ip_address_substr":
                found = any(value in ip.get("ip_address", "") for ip in doc.get("fixed_ips", ()))
            else:
                found = any(ip.get(key) == value for ip in doc.get("fixed_ips", ()))
            if not found:
                return False
        return True
    value = doc.get(name)
    if isinstance(value, bool):
        wanted = [w.lower() for w in wanted]
    if isinstance(value, list):
        return any(_text(item) in wanted for item in value)
    return _text(value) in wanted or (value is None and any(w.lower() in ("none", "null") for w in wanted))


def _explicit(attr: v.Attr, value) -> bool:
    """Set on purpose, as Neutron's policy sees it: given with a value other than the default."""
    if attr.default is UNSET or attr.default is v.REQUIRED:
        return True
    return value != attr.default_value()


def revision_constraint(req) -> Optional[int]:
    header = req.get_header("If-Match")
    if header is None:
        return None
    m = IF_MATCH.fullmatch(header)
    if not m:
        raise BadRequest(f"Invalid input for If-Match. Reason: '{header}' is not "
                         "revision_number=N")
    return int(m.group(1))


def check_revision(doc: dict, wanted: Optional[int]) -> None:
    if wanted is not None and doc.get("revision_number", 0) != wanted:
        raise PreconditionFailed(f"Constrained to {wanted}, but current revision is "
                                 f"{doc.get('revision_number', 0)}")


def touch_parents(txn, collection: str, docs: list[dict]) -> None:
    """Raise each parent's revision once, however many of its children changed."""
    if collection not in PARENT_REVISION:
        return
    parent_kind, field = PARENT_REVISION[collection]
    for parent_id in sorted({d.get(field) or "" for d in docs}):
        parent = txn.get(parent_kind, parent_id)
        if parent is None:
            continue
        parent["revision_number"] = parent.get("revision_number", 0) + 1
        parent["updated_at"] = now()
        txn.put(parent_kind, parent["id"], parent, project_id=parent.get("project_id"))


class Resource:
    def __init__(self, kind: Kind, store: Store, extra_fields: frozenset[str],
                 quota_defaults: Optional[dict[str, int]] = None):
        self.kind = kind
        self.store = store
        self.taggable = kind.collection in tags.TAGGABLE
        self.attrs = dict(kind.attrs, tags=tags.ATTR) if self.taggable else kind.attrs
        self.known_fields = frozenset(kind.attrs) | COMMON_FIELDS | extra_fields | \
            (frozenset(("tags",)) if self.taggable else frozenset())
        self.quota_defaults = quota_defaults or {}

    def _ctx(self, req):
        ctx = req.context.auth
        gate = f"access_{self.kind.collection}"
        if policy.has_rule(gate):
            policy.enforce(ctx, gate)
        return ctx

    def _fields(self, req) -> list[str]:
        return [f for value in _as_list(req.params.get("fields", [])) for f in value.split(",") if f]

    def _show(self, ctx, docs: list[dict], fields: list[str]) -> list[dict]:
        if self.taggable:
            tags.shown(docs)
        for doc in docs:
            for name in policy.hidden_attributes(ctx, self.kind.member, doc):
                doc.pop(name, None)
        if not fields:
            return docs
        return [{f: d[f] for f in fields if f in d} for d in docs]

    def _readable(self, ctx, name: str) -> bool:
        """A field the caller may filter or sort on: known, and not hidden from them."""
        if name not in self.known_fields:
            return False
        rule = f"get_{self.kind.member}:{name}"
        return not policy.has_rule(rule) or policy.check(ctx, rule, {})

    # -- collection --------------------------------------------------------
    def on_get(self, req, resp):
        ctx = self._ctx(req)
        kind = self.kind
        params = {k: _as_list(val) for k, val in req.params.items() if k not in RESERVED_PARAMS}
        tag_filters = {k: val for k, val in params.items() if k in TAG_FILTERS and self.taggable}
        filters = {k: val for k, val in params.items() if k not in tag_filters}
        for name, wanted in filters.items():
            if not self._readable(ctx, name):
                raise BadRequest(f"[{name}] is invalid attribute for filtering", "HTTPBadRequest")
            if name == "fixed_ips":
                for want in wanted:
                    key, eq, _ = want.partition("=")
                    if not eq or key not in FIXED_IP_FILTERS:
                        raise BadRequest(f"[fixed_ips={want}] is invalid for filtering: use "
                                         f"fixed_ips=KEY=VALUE with KEY one of "
                                         f"{sorted(FIXED_IP_FILTERS)}", "HTTPBadRequest")
        parent = None
        if kind.parent_field and len(filters.get(kind.parent_field, ())) == 1:
            parent = filters[kind.parent_field][0]
        if kind.collection == "security_groups" and ctx.project_id:
            self._ensure_default_group(ctx.project_id)
        # Whom the table lets see everything reads everything; where it shows
        # members only their own project's, the store narrows the read.
        sees_all = policy.check(ctx, "context_is_admin")
        own_only = policy.RULES.get(f"get_{kind.member}") == policy.OWNER
        with self.store.read() as r:
            if own_only and not sees_all:
                docs = r.list(kind.collection, project_id=ctx.project_id, parent_id=parent)
            else:
                docs = r.list(kind.collection, parent_id=parent)
            if not sees_all:
                docs = [d for d in docs if kind.visible(r, ctx, d)]
            computed = {n: w for n, w in filters.items() if n in kind.computed}
            for name, wanted in filters.items():
                if name not in computed:
                    docs = [d for d in docs if _matches(d, name, wanted)]
            if tag_filters:
                docs = [d for d in docs if tags.matches(d, tag_filters)]
            if computed:
                # fields the kind works out when it shows a document (a router's
                # ERROR status) are filtered as shown, not as stored
                keep = {s["id"] for s in kind.present(r, docs)
                        if all(_matches(s, n, w) for n, w in computed.items())}
                docs = [d for d in docs if d["id"] in keep]
            docs, links = self._page(req, ctx, docs)
            shown = kind.present(r, docs)
        body = {kind.body_key: self._show(ctx, shown, self._fields(req))}
        if links:
            body[kind.body_key + "_links"] = links
        respond(resp, falcon.HTTP_200, body)

    def _ensure_default_group(self, project_id: str) -> None:
        # Neutron creates a project's default group the first time it is listed.
        with self.store.read() as r:
            if r.claim_owner(DEFAULT_NAMESPACE, project_id):
                return
        self.store.run(lambda txn: ensure_default(txn, project_id))

    def _page(self, req, ctx, docs):
        sort_keys = _as_list(req.params.get("sort_key", []))
        sort_dirs = _as_list(req.params.get("sort_dir", []))
        if sort_dirs and len(sort_dirs) != len(sort_keys):
            raise BadRequest("The number of sort_keys and sort_dirs must be the same")
        for d in sort_dirs:
            if d not in ("asc", "desc"):
                raise BadRequest(f"Invalid input for sort_dir. Reason: '{d}' is not asc or desc")
        for key in sort_keys:
            if not self._readable(ctx, key) or key in UNSORTABLE:
                raise BadRequest(f"{key} is invalid attribute for sort_key")
        if sort_keys:
            # id last: a total order that paging can resume from (without sort
            # keys the store's creation order is kept, which is total already)
            docs = sorted(docs, key=lambda d: d["id"])
        for i in reversed(range(len(sort_keys))):
            key = sort_keys[i]
            reverse = (sort_dirs[i] if i < len(sort_dirs) else "asc") == "desc"
            docs = sorted(docs, key=lambda d: _sort_value(d.get(key)), reverse=reverse)
        page_reverse = v.boolean("page_reverse", req.params.get("page_reverse", False))
        marker = req.params.get("marker")
        if marker:
            ids = [d["id"] for d in docs]
            if marker not in ids:
                docs = []
            elif page_reverse:
                docs = docs[:ids.index(marker)]
            else:
                docs = docs[ids.index(marker) + 1:]
        limit = req.params.get("limit")
        if limit is None:
            return docs, []
        limit = v.integer(0, 1 << 31)("limit", limit)
        if not limit or len(docs) <= limit:
            return docs, []
        query = {k: val for k, val in req.params.items() if k != "marker"}
        if page_reverse:
            docs = docs[-limit:]
            query["marker"] = docs[0]["id"]
            rel = "previous"
        else:
            docs = docs[:limit]
            query["marker"] = docs[-1]["id"]
            rel = "next"
        href = f"{req.prefix}{req.path}?{urlencode(query, doseq=True)}"
        return docs, [{"rel": rel, "href": href}]

    def on_post(self, req, resp):
        ctx = self._ctx(req)
        kind = self.kind
        body = read_body(req)
        if isinstance(body, dict) and kind.member in body and len(body) == 1:
            items, bulk = [body[kind.member]], False
        elif isinstance(body, dict) and isinstance(body.get(kind.body_key), list) \
                and len(body) == 1:
            items, bulk = body[kind.body_key], True
        else:
            raise BadRequest(f"Unable to find '{kind.member}' in request body")
        parsed = []
        for item in items:
            values = v.parse_create(self.attrs, item, kind.member)
            given = [n for n in item if _explicit(self.attrs[n], values[n])]
            parsed.append((values, given))

        def create(txn):
            reads = kind.create_reads(ctx, [values for values, _ in parsed])
            if kind.has_project:   # the quota enforced below
                reads["docs"].extend((quotas.KIND, kind.requested_project(ctx, values))
                                     for values, _ in parsed)
            txn.prefetch(**reads)
            docs = []
            adding: dict[str, int] = {}
            for values, given in parsed:
                kind.authorize_create(txn, ctx, values, given)
                if kind.has_project:
                    project = kind.requested_project(ctx, values)
                    adding[project] = adding.get(project, 0) + 1
            for project, count in adding.items():
                quotas.enforce(txn, self.quota_defaults, kind.collection, project, count)
            for values, _ in parsed:
                values = _fresh(values)   # the body may run again (store.run)
                new_tags = values.pop("tags", None)
                doc = kind.create(txn, ctx, values)
                if new_tags:
                    doc["tags"] = new_tags
                    kind.save(txn, doc)
                docs.append(doc)
            touch_parents(txn, kind.collection, docs)
            return self._show(ctx, kind.present(txn, docs), [])
        shown = self.store.run(create)
        if bulk:
            respond(resp, falcon.HTTP_201, {kind.body_key: shown})
        else:
            respond(resp, falcon.HTTP_201, {kind.member: shown[0]})

    # -- member ------------------------------------------------------------
    def on_get_item(self, req, resp, id):
        ctx = self._ctx(req)
        with self.store.read() as r:
            doc = self.kind.load(r, ctx, id)
            shown = self.kind.present(r, [doc])
        respond(resp, falcon.HTTP_200,
                {self.kind.member: self._show(ctx, shown, self._fields(req))[0]})

    def on_put_item(self, req, resp, id):
        ctx = self._ctx(req)
        kind = self.kind
        body = read_body(req)
        if not isinstance(body, dict) or kind.member not in body or len(body) != 1:
            raise BadRequest(f"Unable to find '{kind.member}' in request body")
        changes = v.parse_update(self.attrs, body[kind.member], kind.member)
        wanted = revision_constraint(req)

        def update(txn):
            doc = kind.load(txn, ctx, id)
            check_revision(doc, wanted)
            kind.authorize(txn, ctx, "update", {**doc, **changes}, changes.keys())
            doc = kind.update(txn, ctx, doc, _fresh(changes))
            return self._show(ctx, kind.present(txn, [doc]), [])
        shown = self.store.run(update)
        respond(resp, falcon.HTTP_200, {kind.member: shown[0]})

    def on_delete_item(self, req, resp, id):
        ctx = self._ctx(req)
        wanted = revision_constraint(req)

        def delete(txn):
            doc = self.kind.load(txn, ctx, id)
            check_revision(doc, wanted)
            self.kind.authorize(txn, ctx, "delete", doc)
            self.kind.delete(txn, ctx, doc)
            touch_parents(txn, self.kind.collection, [doc])
        self.store.run(delete)
        resp.status = falcon.HTTP_204
