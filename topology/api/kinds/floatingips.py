"""Floating IPs and their port forwardings, as Neutron's l3 and
floating-ip-port-forwarding extensions answer them.

    /v2.0/floatingips[/{id}]                                   a floating IP
    /v2.0/floatingips/{id}/port_forwardings[/{pf_id}]          its forwardings

A floating IP is an address claimed in an external subnet's IP namespace
(owner "floatingip:<id>"), bound or not to one fixed IPv4 address of a port.
Its `router_id` is derived: the router with an interface on that fixed IP's
subnet and a gateway on the floating IP's network; with none, the binding is
Neutron's 404 ExternalGatewayForFloatingIPNotFound. `status` is DOWN when
created or unbound and left to the controller while bound (it writes ACTIVE
once the floating IP's flows are on the port's host).

A port forwarding maps external IP:port (or a port range) of an unbound
floating IP to an internal port's fixed IP:port; the floating IP then takes
the forwardings' router as its `router_id`. A floating IP is either bound to
a port or has forwardings, never both. Documents: kind "floatingips" (with
`_key` from namespace "fip-key"), and kind "port_forwardings" stored under
the floating IP (parent_id), single ports also kept as "p:p" ranges, `_key`
from "pf-key".
"""
from __future__ import annotations

import uuid
from typing import Optional

import falcon

from topology import ipam
from topology import validation as v
from topology.api import policy
from topology.api.collection import _as_list, _matches
from topology.api.errors import BadRequest, InUse, NotFound, not_found
from topology.api.http import read_body, respond
from topology.api.kinds import fip_refs
from topology.api.kinds.base import Kind, public
from topology.api.kinds.routers import routers_for_fip
from topology.store.base import Document, Store

FIP_KEY, PF_KEY, KEY_MAX = "fip-key", "pf-key", 0xFFFFFF


def _ipv4s(port: Document) -> list[dict]:
    return [ip for ip in port["fixed_ips"] if "." in ip["ip_address"]]


def not_reachable(network_id: str, subnet_id: str, port_id: str) -> NotFound:
    return NotFound(f"External network {network_id} is not reachable from subnet {subnet_id}.  "
                    f"Therefore, cannot associate Port {port_id} with a Floating IP.",
                    "ExternalGatewayForFloatingIPNotFound")


def the_router(txn, network_id: str, subnet_id: str, port_id: str) -> Document:
    routers = routers_for_fip(txn, subnet_id, network_id)
    if not routers:
        raise not_reachable(network_id, subnet_id, port_id)
    return routers[0]


def visible_port(txn, ctx, port_id: str, project_id: str) -> Document:
    """A port of the floating IP's project that the caller may see (404 otherwise:
    a member learns nothing of another project's ports)."""
    port = txn.get("ports", port_id)
    if port is None or not policy.check(ctx, "get_port", policy.Target(port)) or \
            (port.get("project_id") != project_id and not policy.check(ctx, "context_is_admin")):
        raise not_found("port", port_id)
    return port


class FloatingIps(Kind):
    collection = "floatingips"
    member = "floatingip"
    shown = frozenset({"status", "router_id", "port_details", "port_forwardings"})
    attrs = {
        "description": v.Attr(v.string(255), ""),
        "project_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "tenant_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "floating_network_id": v.Attr(v.uuid_str, v.REQUIRED, put=False),
        "floating_ip_address": v.Attr(v.nullable(v.ipv4_address), None, put=False),
        "subnet_id": v.Attr(v.nullable(v.uuid_str), None, put=False),
        "port_id": v.Attr(v.nullable(v.uuid_str), None),
        "fixed_ip_address": v.Attr(v.nullable(v.ipv4_address), None),
    }

    def authorize_create(self, r, ctx, values, given):
        # Not network_id: a member may take floating IPs from any external
        # network it can see (all of them), as in Neutron.
        self.authorize(r, ctx, "create", dict(values, project_id=self.requested_project(
            ctx, values)), given)

    def create(self, txn, ctx, values):
        network = txn.get("networks", values["floating_network_id"])
        if network is None or not policy.check(ctx, "get_network",
                                               policy.Target(network, lambda: network)):
            raise not_found("network", values["floating_network_id"])
        if not network.get("router:external"):
            raise BadRequest(f"Invalid input for floating_network_id. Reason: network "
                             f"{network['id']} is not a valid external network",
                             "BadRequest")
        subnet_id = values.pop("subnet_id")
        address = values.pop("floating_ip_address")
        port_id = values.pop("port_id")
        fixed = values.pop("fixed_ip_address")
        doc = self.new_doc(ctx, values)
        owner = fip_refs.fip_owner(doc["id"])
        subnet, doc["floating_ip_address"] = self._address(txn, network, subnet_id, address,
                                                           owner)
        doc.update(_subnet_id=subnet["id"], port_id=None, fixed_ip_address=None,
                   router_id=None, status="DOWN")
        self.give_key(txn, doc, FIP_KEY, KEY_MAX)
        if port_id is not None:
            self._bind(txn, ctx, doc, port_id, fixed)
        elif fixed is not None:
            raise v.Invalid("fixed_ip_address", "given without port_id")
        self.save(txn, doc)
        return doc

    @staticmethod
    def _address(txn, network, subnet_id: Optional[str], address: Optional[str], owner: str):
        subnets = txn.list("subnets", parent_id=network["id"])
        if subnet_id is not None:
            subnets = [s for s in subnets if s["id"] == subnet_id]
            if not subnets:
                raise v.Invalid("subnet_id", f"subnet {subnet_id} is not on network "
                                             f"{network['id']}")
        if not subnets:
            raise v.Invalid("floating_network_id", f"external network {network['id']} has "
                                                   "no subnet")
        if address is not None:
            subnet = next((s for s in subnets if ipam.in_cidr(address, s["cidr"])), None)
            if subnet is None:
                raise v.Invalid("floating_ip_address", f"{address} is not in a subnet of "
                                                       f"network {network['id']}")
            try:
                ipam.claim_ip(txn, subnet, address, owner)
            except v.Invalid as e:
                raise v.Invalid("floating_ip_address", e.reason) from None
            return subnet, address
        for subnet in subnets:
            try:
                return subnet, ipam.allocate_ip(txn, subnet, owner)
            except ipam.PoolExhausted:
                continue
        raise ipam.PoolExhausted(subnets[0]["id"])

    def _bind(self, txn, ctx, fip: Document, port_id: str, fixed: Optional[str]) -> None:
        port = visible_port(txn, ctx, port_id, fip["project_id"])
        if (port.get("device_owner") or "").startswith("network:"):
            raise v.Invalid("port_id", f"port {port_id} belongs to {port['device_owner']} and "
                                       "cannot have a floating IP")
        ips = _ipv4s(port)
        if fixed is not None:
            chosen = next((ip for ip in ips if ip["ip_address"] == fixed), None)
            if chosen is None:
                raise v.Invalid("fixed_ip_address", f"port {port_id} does not have fixed "
                                                    f"ip {fixed}")
        elif not ips:
            raise v.Invalid("port_id", f"port {port_id} has no fixed IPv4 address")
        elif len(ips) > 1:
            raise v.Invalid("fixed_ip_address",
                            f"Port {port_id} has multiple fixed IPv4 addresses. Must provide "
                            "a specific IPv4 address when assigning a floating IP")
        else:
            chosen = ips[0]
        if fip_refs.forwardings(txn, fip["id"]):
            raise InUse(f"Floating IP {fip['id']} in use by Port Forwarding resources.",
                        "FipInUseByPortForwarding")
        for other in txn.list(fip_refs.FIPS):
            if other["id"] != fip["id"] and other.get("port_id") == port_id and \
                    other.get("fixed_ip_address") == chosen["ip_address"] and \
                    other["floating_network_id"] == fip["floating_network_id"]:
                raise InUse(f"Cannot associate floating IP {fip['floating_ip_address']} "
                            f"({fip['id']}) with port {port_id} using fixed IP "
                            f"{chosen['ip_address']}, as that fixed IP already has a floating "
                            f"IP on external network {fip['floating_network_id']}.",
                            "FloatingIPPortAlreadyAssociated")
        router = the_router(txn, fip["floating_network_id"], chosen["subnet_id"], port_id)
        fip.update(port_id=port_id, fixed_ip_address=chosen["ip_address"],
                   router_id=router["id"])

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        if "port_id" in changes or "fixed_ip_address" in changes:
            port_id = changes.pop("port_id", doc.get("port_id"))
            fixed = changes.pop("fixed_ip_address", None)
            if port_id is None:
                if fixed is not None:
                    raise v.Invalid("fixed_ip_address", "given without port_id")
                fip_refs.unbind(doc, bool(fip_refs.forwardings(txn, doc["id"])))
            else:
                self._bind(txn, ctx, doc, port_id, fixed)
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        # Its port forwardings go with it, as in Neutron.
        for pf in fip_refs.forwardings(txn, doc["id"]):
            fip_refs.delete_forwarding(txn, pf)
        super().delete(txn, ctx, doc)

    def present(self, r, docs):
        out = super().present(r, docs)
        for doc in out:
            port = r.get("ports", doc["port_id"]) if doc.get("port_id") else None
            doc["port_details"] = None if port is None else {
                k: port.get(k) for k in ("name", "network_id", "mac_address", "admin_state_up",
                                         "status", "device_id", "device_owner")}
            doc["port_forwardings"] = [
                {k: pf.get(k) for k in ("protocol", "internal_ip_address", "internal_port",
                                        "external_port")}
                for pf in r.list(fip_refs.PFS, parent_id=doc["id"])]
        return out


# -- port forwardings ------------------------------------------------------------

def _port_number(field, value):
    return v.integer(1, 65535, nullable=True)(field, value)


def _port_range(field, value):
    """"a:b" (or a single "a"), 1 <= a <= b <= 65535; stored as "a:b"."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise v.Invalid(field, f"'{value!r}' is not a port range a:b")
    low, sep, high = value.partition(":")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise v.Invalid(field, f"'{value}' is not a port range a:b")
    low_n, high_n = int(low), int(high) if sep else int(low)
    if not 1 <= low_n <= high_n <= 65535:
        raise v.Invalid(field, f"'{value}' is not a range within 1-65535 with a <= b")
    return f"{low_n}:{high_n}"


def _protocol(field, value):
    if isinstance(value, str) and value.lower() in ("tcp", "udp"):
        return value.lower()
    raise v.Invalid(field, f"'{value}' is not in ['tcp', 'udp']")


PF_ATTRS = {
    "protocol": v.Attr(_protocol, v.REQUIRED),
    "internal_port_id": v.Attr(v.uuid_str, v.REQUIRED),
    "internal_ip_address": v.Attr(v.ipv4_address, v.REQUIRED),
    "internal_port": v.Attr(_port_number, None),
    "external_port": v.Attr(_port_number, None),
    "internal_port_range": v.Attr(_port_range, None),
    "external_port_range": v.Attr(_port_range, None),
    # a forwarding belongs to its floating IP's project: no project of its own to give
    "description": v.Attr(v.string(255), ""),
}
PF_SHOWN = ("id", "protocol", "internal_ip_address", "internal_port", "internal_port_id",
            "external_port", "internal_port_range", "external_port_range", "description")
PF_FILTERS = frozenset(PF_SHOWN)


def _span(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high)


def _normalise(pf: dict, given: dict) -> None:
    """Single port p and range "p:p" are one thing: store both forms."""
    for side in ("internal", "external"):
        single, ranged = f"{side}_port", f"{side}_port_range"
        if given.get(single) is not None and given.get(ranged) is not None:
            raise v.Invalid(ranged, f"give {single} or {ranged}, not both")
        if given.get(single) is not None:
            pf[single] = given[single]
            pf[ranged] = f"{given[single]}:{given[single]}"
        elif given.get(ranged) is not None:
            low, high = _span(given[ranged])
            pf[ranged] = given[ranged]
            pf[single] = low if low == high else None
        elif pf.get(ranged) is None:
            raise v.Invalid(single, f"{single} or {ranged} is required")
    inner, outer = _span(pf["internal_port_range"]), _span(pf["external_port_range"])
    inner_len, outer_len = inner[1] - inner[0], outer[1] - outer[0]
    if inner_len and inner_len != outer_len:
        raise v.Invalid("internal_port_range",
                        f"{pf['internal_port_range']} must be one port or as long as "
                        f"external_port_range {pf['external_port_range']}")


def _overlap(a: str, b: str) -> bool:
    (a1, a2), (b1, b2) = _span(a), _span(b)
    return a1 <= b2 and b1 <= a2


def _shown(pf: Document) -> dict:
    return {k: pf.get(k) for k in PF_SHOWN}


class PortForwardings:
    """/v2.0/floatingips/{id}/port_forwardings[/{pf_id}]."""

    def __init__(self, fips: FloatingIps, store: Store):
        self.fips = fips
        self.store = store

    @staticmethod
    def _body(req) -> dict:
        body = read_body(req)
        if not isinstance(body, dict) or "port_forwarding" not in body or len(body) != 1:
            raise BadRequest("Unable to find 'port_forwarding' in request body")
        return body["port_forwarding"]

    @staticmethod
    def _find(txn, fip: Document, pf_id: str) -> Document:
        pf = txn.get(fip_refs.PFS, pf_id)
        if pf is None or pf.get("floatingip_id") != fip["id"]:
            raise NotFound(f"Port Forwarding {pf_id} could not be found for floating IP "
                           f"{fip['id']}.", "PortForwardingNotFound")
        return pf

    def _check(self, txn, ctx, fip: Document, pf: Document) -> Document:
        """Everything a forwarding must satisfy; returns the router it goes through."""
        if fip.get("port_id"):
            raise InUse(f"Cannot add port forwardings to floating IP "
                        f"{fip['floating_ip_address']} ({fip['id']}): it is associated with "
                        f"port {fip['port_id']} using fixed IP {fip['fixed_ip_address']}.",
                        "FloatingIPPortAlreadyAssociated")
        port = visible_port(txn, ctx, pf["internal_port_id"], fip["project_id"])
        chosen = next((ip for ip in _ipv4s(port)
                       if ip["ip_address"] == pf["internal_ip_address"]), None)
        if chosen is None:
            raise v.Invalid("internal_ip_address", f"{pf['internal_ip_address']} is not a "
                                                   f"fixed IP of port {port['id']}")
        bound = next((f for f in txn.list(fip_refs.FIPS) if f.get("port_id") == port["id"]),
                     None)
        if bound is not None:
            raise InUse(f"Cannot create port forwarding to floating IP "
                        f"{fip['floating_ip_address']} ({fip['id']}) with port {port['id']} "
                        f"using fixed IP {pf['internal_ip_address']}, as that port already "
                        f"has a binding floating IP {bound['floating_ip_address']}.",
                        "PortHasBindingFloatingIP")
        router = the_router(txn, fip["floating_network_id"], chosen["subnet_id"], port["id"])
        for other in txn.list(fip_refs.PFS):
            if other["id"] == pf["id"] or other["protocol"] != pf["protocol"]:
                continue
            if other["floatingip_id"] == fip["id"] and \
                    _overlap(other["external_port_range"], pf["external_port_range"]):
                raise InUse(f"A port forwarding of floating IP {fip['floating_ip_address']} "
                            f"already uses {pf['protocol']} external port(s) "
                            f"{other['external_port_range']} (port forwarding {other['id']}).",
                            "PortForwardingConflict")
            if other["internal_port_id"] == pf["internal_port_id"] and \
                    other["internal_ip_address"] == pf["internal_ip_address"] and \
                    _overlap(other["internal_port_range"], pf["internal_port_range"]):
                raise InUse(f"{pf['protocol']} {pf['internal_ip_address']} port(s) "
                            f"{other['internal_port_range']} already have a port forwarding "
                            f"({other['id']}).", "PortForwardingConflict")
        others = [o for o in fip_refs.forwardings(txn, fip["id"]) if o["id"] != pf["id"]]
        if others and fip.get("router_id") and fip["router_id"] != router["id"]:
            raise v.Invalid("internal_port_id",
                            f"port {port['id']} is reached through router {router['id']}, "
                            f"but floating IP {fip['id']}'s port forwardings go through "
                            f"router {fip['router_id']}")
        return router

    def _save(self, txn, fip, pf, router) -> None:
        fip_refs.save_pf(txn, pf)
        fip["router_id"] = router["id"]
        fip_refs.after_forwardings_changed(txn, fip)

    # -- collection ------------------------------------------------------------
    def on_get(self, req, resp, id):
        ctx = req.context.auth
        fields = [f for value in _as_list(req.params.get("fields", []))
                  for f in value.split(",") if f]
        filters = {k: _as_list(val) for k, val in req.params.items()
                   if k not in ("fields", "sort_key", "sort_dir", "limit", "marker")}
        for name in filters:
            if name not in PF_FILTERS:
                raise BadRequest(f"[{name}] is invalid attribute for filtering", "HTTPBadRequest")
        with self.store.read() as r:
            fip = self.fips.load(r, ctx, id)
            pfs = fip_refs.forwardings(r, fip["id"])
        for name, wanted in filters.items():
            pfs = [p for p in pfs if _matches(p, name, wanted)]
        shown = [_shown(p) for p in pfs]
        if fields:
            shown = [{f: p[f] for f in fields if f in p} for p in shown]
        respond(resp, falcon.HTTP_200, {"port_forwardings": shown})

    def on_post(self, req, resp, id):
        ctx = req.context.auth
        values = v.parse_create(PF_ATTRS, self._body(req), "port_forwarding")
        pf_id = str(uuid.uuid4())

        def create(txn):
            fip = self.fips.load(txn, ctx, id)
            self.fips.check_owner(ctx, fip, "update")
            pf = {"id": pf_id, "floatingip_id": fip["id"],
                  "project_id": fip["project_id"], "protocol": values["protocol"],
                  "internal_port_id": values["internal_port_id"],
                  "internal_ip_address": values["internal_ip_address"],
                  "internal_port_range": None, "external_port_range": None,
                  "description": values["description"]}
            _normalise(pf, values)
            router = self._check(txn, ctx, fip, pf)
            pf["_key"] = txn.allocate_key(PF_KEY, fip_refs.pf_owner(pf["id"]), low=1,
                                          high=KEY_MAX)
            self._save(txn, fip, pf, router)
            return pf
        pf = self.store.run(create)
        respond(resp, falcon.HTTP_201, {"port_forwarding": _shown(pf)})

    # -- member ----------------------------------------------------------------
    def on_get_item(self, req, resp, id, pf_id):
        with self.store.read() as r:
            fip = self.fips.load(r, req.context.auth, id)
            pf = self._find(r, fip, pf_id)
        respond(resp, falcon.HTTP_200, {"port_forwarding": _shown(pf)})

    def on_put_item(self, req, resp, id, pf_id):
        ctx = req.context.auth
        changes = v.parse_update(PF_ATTRS, self._body(req), "port_forwarding")

        def update(txn):
            fip = self.fips.load(txn, ctx, id)
            self.fips.check_owner(ctx, fip, "update")
            pf = dict(self._find(txn, fip, pf_id))
            for name in ("protocol", "internal_port_id", "internal_ip_address", "description"):
                if name in changes:
                    pf[name] = changes[name]
            _normalise(pf, changes)
            router = self._check(txn, ctx, fip, pf)
            self._save(txn, fip, pf, router)
            return pf
        pf = self.store.run(update)
        respond(resp, falcon.HTTP_200, {"port_forwarding": _shown(pf)})

    def on_delete_item(self, req, resp, id, pf_id):
        ctx = req.context.auth

        def delete(txn):
            fip = self.fips.load(txn, ctx, id)
            self.fips.check_owner(ctx, fip, "update")
            fip_refs.delete_forwarding(txn, self._find(txn, fip, pf_id))
            fip_refs.after_forwardings_changed(txn, fip)
        self.store.run(delete)
        resp.status = falcon.HTTP_204
