"""Neutron's tags (standard-attr-tag, tag-creation): labels on a resource.

PUT /v2.0/{collection}/{id}/tags             replace all (body {"tags": [...]})
GET /v2.0/{collection}/{id}/tags             list
DELETE /v2.0/{collection}/{id}/tags          remove all
PUT /v2.0/{collection}/{id}/tags/{tag}       add one (201)
GET /v2.0/{collection}/{id}/tags/{tag}       204 if present, 404 if not
DELETE /v2.0/{collection}/{id}/tags/{tag}    remove one (404 if absent)

Every change raises the resource's revision_number, as any other change does.
The list filters (tags, tags-any, not-tags, not-tags-any) live in collection.py.
"""
from __future__ import annotations

import falcon

from topology import validation as v
from topology.api.errors import BadRequest, NotFound
from topology.api.http import read_body, respond
from topology.api.kinds.base import Kind
from topology.store.base import Document, Store

# Neutron's standard-attr resources that vmflow has and that carry tags.
TAGGABLE = frozenset(("networks", "subnets", "ports", "security_groups", "floatingips"))
MAX_TAG_LEN = 255
MAX_TAGS = 64


def tag(field: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise v.Invalid(field, f"'{value!r}' is not a valid tag: a non-empty string")
    if len(value) > MAX_TAG_LEN:
        raise v.Invalid(field, f"'{value}' exceeds maximum length of {MAX_TAG_LEN}")
    if "," in value:
        # list filters take tags separated by commas
        raise v.Invalid(field, f"'{value}' must not contain a comma")
    return value


tag_list = v.unique_list_of(tag, max_items=MAX_TAGS)
ATTR = v.Attr(tag_list, list, put=False)


class Tags:
    def __init__(self, kind: Kind, store: Store):
        self.kind = kind
        self.store = store

    def _change(self, req, id: str, change) -> Document:
        ctx = req.context.auth

        def apply(txn):
            doc = self.kind.load(txn, ctx, id)
            self.kind.authorize(txn, ctx, "update", doc)
            tags = list(doc.get("tags", []))
            new = change(tags)
            if new != tags:
                if len(new) > MAX_TAGS:
                    raise v.Invalid("tags", f"more than {MAX_TAGS} items")
                doc["tags"] = new
                self.kind.touch(doc)
                self.kind.save(txn, doc)
            return doc
        return self.store.run(apply)

    def _read(self, req, id: str) -> list[str]:
        with self.store.read() as r:
            return list(self.kind.load(r, req.context.auth, id).get("tags", []))

    # -- all tags ------------------------------------------------------------
    def on_get(self, req, resp, id):
        respond(resp, falcon.HTTP_200, {"tags": self._read(req, id)})

    def on_put(self, req, resp, id):
        body = read_body(req)
        if not isinstance(body, dict) or set(body) != {"tags"}:
            raise BadRequest("Invalid input for tags. Reason: the body must be {\"tags\": [...]}")
        tags = tag_list("tags", body["tags"])
        doc = self._change(req, id, lambda old: tags)
        respond(resp, falcon.HTTP_200, {"tags": doc["tags"]})

    def on_delete(self, req, resp, id):
        self._change(req, id, lambda old: [])
        resp.status = falcon.HTTP_204

    # -- one tag -------------------------------------------------------------
    def on_get_one(self, req, resp, id, name):
        if name not in self._read(req, id):
            raise NotFound(f"Tag {name} could not be found.", "TagNotFound")
        resp.status = falcon.HTTP_204

    def on_put_one(self, req, resp, id, name):
        tag("tag", name)
        self._change(req, id, lambda old: old if name in old else old + [name])
        resp.status = falcon.HTTP_201

    def on_delete_one(self, req, resp, id, name):
        def remove(old):
            if name not in old:
                raise NotFound(f"Tag {name} could not be found.", "TagNotFound")
            return [t for t in old if t != name]
        self._change(req, id, remove)
        resp.status = falcon.HTTP_204


def matches(doc: Document, filters: dict[str, list[str]]) -> bool:
    """Neutron's tag filters; each value is a comma-separated list of tags."""
    have = set(doc.get("tags", ()))
    for name, values in filters.items():
        wanted = {t for value in values for t in value.split(",") if t}
        if name == "tags" and not wanted <= have:
            return False
        if name == "tags-any" and not wanted & have:
            return False
        if name == "not-tags" and wanted and wanted <= have:
            return False
        if name == "not-tags-any" and wanted & have:
            return False
    return True


def shown(docs: list[Document]) -> None:
    """Tags appear on every taggable resource, [] when it has none."""
    for doc in docs:
        doc.setdefault("tags", [])
