"""Neutron's error responses: {"NeutronError": {"type", "message", "detail"}}.

Handlers raise ApiError (or let validation, IPAM and store exceptions through);
`install` maps every one of them to the status and body Neutron would send,
so clients such as openstacksdk raise their usual exception classes.
"""
from __future__ import annotations

import json
import logging

import falcon

from topology import ipam, validation
from topology.store.base import Conflict, StoreError, TxnConflict

LOG = logging.getLogger(__name__)

# What a 503 for a busy or stalled store tells clients to wait before retrying.
STORE_RETRY_AFTER_S = 2


class ApiError(Exception):
    status = falcon.HTTP_500
    type = "HTTPInternalServerError"

    def __init__(self, message: str, type: str | None = None):
        super().__init__(message)
        self.message = message
        if type:
            self.type = type


class BadRequest(ApiError):
    status = falcon.HTTP_400
    type = "HTTPBadRequest"


class Unauthorized(ApiError):
    status = falcon.HTTP_401
    type = "HTTPUnauthorized"


class Forbidden(ApiError):
    status = falcon.HTTP_403
    type = "PolicyNotAuthorized"


class NotFound(ApiError):
    status = falcon.HTTP_404
    type = "HTTPNotFound"


class InUse(ApiError):
    status = falcon.HTTP_409
    type = "HTTPConflict"


def not_found(resource: str, id: str) -> NotFound:
    """NetworkNotFound, PortNotFound, ...: Neutron's per-resource 404."""
    name = resource.replace("_", " ").title().replace(" ", "")
    return NotFound(f"{resource.replace('_', ' ').capitalize()} {id} could not be found.",
                    f"{name}NotFound")


# What a claim namespace means, for a 409 that a person can act on.
_CONFLICT_TYPES = {
    "mac": ("MacAddressInUse", "Unable to complete operation for network. The mac address {key} is in use."),
    "vlan": ("VlanIdInUse", "Unable to create the network. The VLAN {key} on physical network {sub} is in use."),
    "flat": ("FlatNetworkInUse", "Unable to create the flat network. Physical network {sub} is in use."),
    "ip": ("IpAddressAlreadyAllocated", "IP address {key} already allocated in subnet {sub}"),
    "dpid": ("HostDatapathIdInUse", "Datapath id {key} is already used by another host."),
    "dvr-mac": ("DVRMacAddressInUse", "DVR MAC address {key} is in use."),
    "external-mac": ("ExternalMacAddressInUse", "External MAC address {key} is in use."),
    "host-name": ("HostNameInUse", "A host named {key} already exists."),
}


def conflict_error(exc: Conflict) -> InUse:
    kind, _, sub = exc.namespace.partition(":")
    if exc.key == "*":
        if kind in ("mac", "dvr-mac", "external-mac"):
            return InUse("Unable to generate a unique mac address.", "MacAddressGenerationFailure")
        return InUse(f"No free {exc.namespace} value is left.", "ResourceExhausted")
    type_, template = _CONFLICT_TYPES.get(kind, ("HTTPConflict", "{namespace} {key} is already in use."))
    return InUse(template.format(key=exc.key, sub=sub, namespace=exc.namespace), type_)


def _body(type_: str, message: str) -> str:
    return json.dumps({"NeutronError": {"type": type_, "message": message, "detail": ""}})


def error_body(type_: str, message: str) -> str:
    """The JSON of a Neutron error, for answers sent outside falcon (the API's worker)."""
    return _body(type_, message)


def _respond(resp: falcon.Response, status, type_: str, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = _body(type_, message)


def install(app: falcon.App) -> None:
    def api_error(req, resp, exc, params):
        if isinstance(exc, Unauthorized):
            resp.set_header("WWW-Authenticate", "Keystone uri='%s'" % req.prefix)
        _respond(resp, exc.status, exc.type, exc.message)

    def invalid(req, resp, exc, params):
        _respond(resp, falcon.HTTP_400, "HTTPBadRequest", str(exc))

    def conflict(req, resp, exc, params):
        err = conflict_error(exc)
        _respond(resp, err.status, err.type, err.message)

    def exhausted(req, resp, exc, params):
        _respond(resp, falcon.HTTP_409, "IpAddressGenerationFailure", str(exc))

    def store_error(req, resp, exc, params):
        LOG.warning("store error on %s %s: %s", req.method, req.path, exc)
        _respond(resp, falcon.HTTP_503, "HTTPServiceUnavailable", "The store is unavailable; retry.")
        resp.set_header("Retry-After", str(STORE_RETRY_AFTER_S))

    def txn_conflict(req, resp, exc, params):
        # Concurrent writers kept committing first for the whole store
        # timeout: nothing of this request was written, and it may be sent again.
        LOG.warning("write conflict on %s %s: %s", req.method, req.path, exc)
        _respond(resp, falcon.HTTP_409, "HTTPConflict",
                 "Concurrent updates kept conflicting with this request; nothing was "
                 "changed. Retry the request.")
        resp.set_header("Retry-After", "1")

    def http_error(req, resp, exc, params):
        # falcon's own errors (404 for unknown routes, 405, ...) in Neutron's shape
        words = [w for w in exc.title.split() if not w.isdigit()]
        text = " ".join(words) + (f": {exc.description}" if exc.description else "")
        _respond(resp, exc.status, "HTTP" + "".join(w.capitalize() for w in words), text)
        for name, value in (exc.headers or {}).items():
            resp.set_header(name, value)

    def unexpected(req, resp, exc, params):
        LOG.exception("unexpected error on %s %s", req.method, req.path)
        _respond(resp, falcon.HTTP_500, "HTTPInternalServerError",
                 "Request Failed: internal server error while processing your request.")

    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(falcon.HTTPError, http_error)
    app.add_error_handler(ApiError, api_error)
    app.add_error_handler(validation.Invalid, invalid)
    app.add_error_handler(validation.Unrecognized, invalid)
    app.add_error_handler(validation.ReadOnly, invalid)
    app.add_error_handler(Conflict, conflict)
    app.add_error_handler(ipam.PoolExhausted, exhausted)
    app.add_error_handler(StoreError, store_error)
    app.add_error_handler(TxnConflict, txn_conflict)
