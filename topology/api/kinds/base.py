"""What every resource kind shares: common attributes, ownership, saving.

A Kind turns clean attribute values into a stored document (create), applies
changes to one (update) and removes one (delete), always inside the caller's
single store transaction. The HTTP side lives in topology/api/collection.py.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from topology import validation as v
from topology.api import policy
from topology.api.auth import Context
from topology.api.errors import BadRequest, not_found
from topology.store.base import Document, ReadTxn, Txn, stamp

UNSET = object()  # "not given" where None (JSON null) is a meaningful value


@dataclass(frozen=True)
class Settings:
    """The [api] options the resource logic needs, decoupled from oslo.config."""
    base_mac: str = "fa:16:3e:00:00:00"
    dvr_base_mac: str = "fa:16:3f:00:00:00"
    external_base_mac: str = "fa:16:3f:00:00:00"
    default_mtu: int = 1500
    default_project: str = "admin"
    # physnet -> [(low, high), ...] tenant networks' VLANs come from
    vlan_ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def common_attrs() -> dict[str, v.Attr]:
    return {
        "name": v.Attr(v.string(255), ""),
        "description": v.Attr(v.string(255), ""),
        "project_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "tenant_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
    }


now = stamp   # the API's name for it


def public(doc: Document) -> Document:
    """The API representation: internal "_" fields stay in the store."""
    return {k: val for k, val in doc.items() if not k.startswith("_")}


class Kind:
    collection: str = ""
    member: str = ""
    attrs: dict[str, v.Attr] = {}
    has_project = True
    parent_field: Optional[str] = None  # the field stored as the document's parent
    shown: frozenset = frozenset()       # fields shown beyond the settable attributes
    computed: frozenset = frozenset()    # shown fields present() works out (filtered as shown)
    plural: Optional[str] = None  # the list's key in JSON bodies, if not `collection`

    @property
    def body_key(self) -> str:
        return self.plural or self.collection

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- ownership ---------------------------------------------------------
    def requested_project(self, ctx: Context, values: dict[str, Any]) -> str:
        """The project a new resource will belong to (400 for another one, unless admin)."""
        given = values.get("project_id")
        tenant = values.get("tenant_id")
        if given and tenant and given != tenant:
            raise BadRequest("project_id and tenant_id do not match")
        given = given or tenant
        if given is None:
            return ctx.project_id or self.settings.default_project
        if not policy.check(ctx, "act_for_project", {"project_id": given}):
            raise BadRequest("Specifying 'project_id' or 'tenant_id' other than the "
                             "authenticated project in request requires admin privileges")
        return given

    def resolve_project(self, ctx: Context, values: dict[str, Any]) -> str:
        project = self.requested_project(ctx, values)
        values.pop("project_id", None)
        values.pop("tenant_id", None)
        return project

    def target(self, r: ReadTxn, doc: Document) -> policy.Target:
        """The document as policy sees it, with its network's attributes on demand."""
        if self.collection == "networks":
            return policy.Target(doc, lambda: doc)
        if doc.get("network_id"):
            return policy.Target(doc, lambda: r.get("networks", doc["network_id"]))
        return policy.Target(doc)

    def visible(self, r: ReadTxn, ctx: Context, doc: Document) -> bool:
        return policy.check(ctx, f"get_{self.member}", self.target(r, doc))

    def authorize(self, r: ReadTxn, ctx: Context, action: str, doc: Document,
                  given=()) -> None:
        """The table's say on `action` ("create", "update", "delete") for this
        document (the requested values, on create), and on each attribute given."""
        target = self.target(r, doc)
        policy.enforce(ctx, f"{action}_{self.member}", target)
        policy.enforce_attributes(ctx, action, self.member, target, given)

    def authorize_create(self, r: ReadTxn, ctx: Context, values: dict[str, Any], given) -> None:
        """A network a new resource goes on must be one the caller can see (404
        otherwise, as Neutron answers); then the table decides (403)."""
        target = dict(values)
        if self.has_project:
            target["project_id"] = self.requested_project(ctx, values)
        if self.collection != "networks" and values.get("network_id"):
            network = r.get("networks", values["network_id"])
            if network is None or not policy.check(ctx, "get_network",
                                                   policy.Target(network, lambda: network)):
                raise not_found("network", values["network_id"])
        self.authorize(r, ctx, "create", target, given)

    def create_reads(self, ctx: Context, items: list[dict[str, Any]]) -> dict[str, list]:
        """What creating items will read first (the network they go on), as
        ReadTxn.prefetch takes it: a store that reads in round trips then
        asks for them in one."""
        docs = [("networks", values["network_id"]) for values in items
                if self.collection != "networks" and values.get("network_id")]
        return {"docs": docs, "claims": [], "kinds": []}

    def load(self, r: ReadTxn, ctx: Context, id: str) -> Document:
        doc = r.get(self.collection, id)
        if doc is None or not self.visible(r, ctx, doc):
            raise not_found(self.member, id)
        return doc

    def check_owner(self, ctx: Context, doc: Document, action: str) -> None:
        """The table's rule "<action>_<member>" (Neutron's default rule, owner or
        admin, for an action the table does not name)."""
        policy.enforce(ctx, f"{action}_{self.member}", policy.Target(doc))

    # -- documents -----------------------------------------------------------
    def new_doc(self, ctx: Context, values: dict[str, Any], id: Optional[str] = None) -> Document:
        doc: Document = {"id": id or str(uuid.uuid4())}
        if self.has_project:
            project = self.resolve_project(ctx, values)
            doc["project_id"] = project
            doc["tenant_id"] = project
        else:
            values.pop("project_id", None)
            values.pop("tenant_id", None)
        stamp = now()
        doc.update(values)
        doc.update(created_at=stamp, updated_at=stamp, revision_number=0)
        return doc

    def touch(self, doc: Document) -> None:
        doc["updated_at"] = now()
        doc["revision_number"] = doc.get("revision_number", 0) + 1

    def give_key(self, txn: Txn, doc: Document, namespace: str, high: int = 0xFFFFFF) -> None:
        """A stable small key for a document that flows are derived from (its
        cookies, zones or conjunction ids), held until the document is deleted."""
        doc["_key"] = txn.allocate_key(namespace, f"{self.member}:{doc['id']}", low=1, high=high)

    def save(self, txn: Txn, doc: Document) -> None:
        txn.put(self.collection, doc["id"], doc,
                project_id=doc.get("project_id") if self.has_project else None,
                parent_id=doc.get(self.parent_field) if self.parent_field else None)

    # -- operations (overridden per kind) ----------------------------------
    def create(self, txn: Txn, ctx: Context, values: dict[str, Any]) -> Document:
        raise NotImplementedError

    def update(self, txn: Txn, ctx: Context, doc: Document, changes: dict[str, Any]) -> Document:
        doc.update(changes)
        self.touch(doc)
        self.save(txn, doc)
        return doc

    def delete(self, txn: Txn, ctx: Context, doc: Document) -> None:
        txn.release_owner(f"{self.member}:{doc['id']}")
        txn.delete(self.collection, doc["id"])

    def present(self, r: ReadTxn, docs: list[Document]) -> list[Document]:
        """Public views of documents (kinds may add computed fields)."""
        return [public(d) for d in docs]
