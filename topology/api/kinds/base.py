"""What every resource kind shares: common attributes, ownership, saving.

A Kind turns clean attribute values into a stored document (create), applies
changes to one (update) and removes one (delete), always inside the caller's
single store transaction. The HTTP side lives in topology/api/collection.py.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from topology import validation as v
from topology.api.auth import Context
from topology.api.errors import BadRequest, Forbidden, not_found
from topology.store.base import Document, ReadTxn, Txn

UNSET = object()  # "not given" where None (JSON null) is a meaningful value


@dataclass(frozen=True)
class Settings:
    """The [api] options the resource logic needs, decoupled from oslo.config."""
    base_mac: str = "fa:16:3e:00:00:00"
    dvr_base_mac: str = "fa:16:3f:00:00:00"
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


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def public(doc: Document) -> Document:
    """The API representation: internal "_" fields stay in the store."""
    return {k: val for k, val in doc.items() if not k.startswith("_")}


class Kind:
    collection: str = ""
    member: str = ""
    attrs: dict[str, v.Attr] = {}
    admin_only = False      # hosts: operators' business only
    has_project = True
    parent_field: Optional[str] = None  # the field stored as the document's parent

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- ownership ---------------------------------------------------------
    def resolve_project(self, ctx: Context, values: dict[str, Any]) -> str:
        given = values.pop("project_id", None)
        tenant = values.pop("tenant_id", None)
        if given and tenant and given != tenant:
            raise BadRequest("project_id and tenant_id do not match")
        given = given or tenant
        if given is None:
            return ctx.project_id or self.settings.default_project
        if not ctx.is_admin and given != ctx.project_id:
            raise BadRequest("Specifying 'project_id' or 'tenant_id' other than the "
                             "authenticated project in request requires admin privileges")
        return given

    def visible(self, r: ReadTxn, ctx: Context, doc: Document) -> bool:
        return ctx.can_see(doc)

    def check_admin_attrs(self, ctx: Context, values: dict[str, Any], given) -> None:
        if ctx.is_admin:
            return
        for name in given:
            if self.attrs[name].admin:
                raise Forbidden(f"(rule:{self.member}:{name}) is disallowed by policy")

    def load(self, r: ReadTxn, ctx: Context, id: str) -> Document:
        doc = r.get(self.collection, id)
        if doc is None or not self.visible(r, ctx, doc):
            raise not_found(self.member, id)
        return doc

    def check_owner(self, ctx: Context, doc: Document, action: str) -> None:
        """Members change only their own project's resources (shared ones are read-only)."""
        if not ctx.is_admin and doc.get("project_id") != ctx.project_id:
            raise Forbidden(f"rule:{action}_{self.member} is disallowed by policy")

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
