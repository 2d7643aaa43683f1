"""Routers (Neutron's router and extraroute extensions), always distributed.

A router is a document with a stable `_key`; its interfaces are real ports
(device_owner network:router_interface_distributed, device_id the router's
id) holding the subnet's gateway IP or, when added by port, that port's
address. The controller routes between them on every host that has a port
on one of their networks (apps/dvr.py); nothing here knows about hosts.

`distributed` is read-only and true and `ha` is false: there is no other
kind of router.

`external_gateway_info` ({network_id, enable_snat, external_fixed_ips}) joins
the router to a `router:external` network through a gateway port
(device_owner network:router_gateway, owned by no project, as Neutron's),
which holds the gateway IP: allocated on the external subnet, or the one
requested. Setting, replacing and clearing the info creates, replaces and
removes that port in the same transaction. Where the router's SNAT runs is
not stored: topology/placement.py computes it from the hosts, and the router
shows it as `vmflow:snat_host` (and `status` ERROR when SNAT is wanted and no
host may carry it).
"""
from __future__ import annotations

import ipaddress
from typing import Optional

import falcon

from topology import ipam, placement
from topology import validation as v
from topology.api import policy
from topology.api.collection import read_body, respond
from topology.api.errors import BadRequest, InUse, NotFound, not_found
from topology.api.kinds import fip_refs
from topology.api.kinds.base import UNSET, Kind, common_attrs
from topology.api.kinds.ports import (_fixed_ip, assign_fixed_ips, default_fixed_ips,
                                      port_owner, release_fixed_ips)
from topology.store.base import Document, Store, Txn

KEY_NAMESPACE, KEY_MAX = "router-key", 0xFFFFFF
INTERFACE_OWNER = "network:router_interface_distributed"
GATEWAY_OWNER = "network:router_gateway"
GATEWAY_FIELD = "external_gateway_info"
GATEWAY_KEYS = ("network_id", "enable_snat", "external_fixed_ips")
MAX_ROUTES = 64


def is_interface(port: Document) -> bool:
    return port.get("device_owner") == INTERFACE_OWNER


def _route(field, value):
    if not isinstance(value, dict) or set(value) != {"destination", "nexthop"}:
        raise v.Invalid(field, f"'{value!r}' must be an object with destination and nexthop")
    return {"destination": v.ipv4_cidr(f"{field}.destination", value["destination"]),
            "nexthop": v.ipv4_address(f"{field}.nexthop", value["nexthop"])}


class GatewayRequest(dict):
    """external_gateway_info as requested: clean values, and which keys the
    caller gave (policy rules name them, as Neutron's do)."""
    given: tuple[str, ...] = ()


def _gateway_info(field, value):
    """null or {} clears the gateway; otherwise network_id is required."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise v.Invalid(field, f"'{value!r}' is not a dictionary")
    unknown = sorted(set(value) - set(GATEWAY_KEYS))
    if unknown:
        raise v.Invalid(field, f"unrecognized key(s) {', '.join(unknown)}; "
                               f"expected {', '.join(GATEWAY_KEYS)}")
    if "network_id" not in value:
        raise v.Invalid(f"{field}.network_id", "required to set a gateway")
    out = GatewayRequest(
        network_id=v.uuid_str(f"{field}.network_id", value["network_id"]),
        enable_snat=v.boolean(f"{field}.enable_snat", value.get("enable_snat", True)),
        external_fixed_ips=UNSET if value.get("external_fixed_ips") is None else
        v.list_of(_fixed_ip, max_items=8)(f"{field}.external_fixed_ips",
                                          value["external_fixed_ips"]))
    out.given = tuple(k for k in GATEWAY_KEYS if k in value)
    return out


def _read_only_true(field, value):
    if value not in (True, "true", "True"):
        raise v.Invalid(field, "vmflow routers are always distributed; only true is accepted")
    return True


def _read_only_false(field, value):
    if value not in (False, "false", "False"):
        raise v.Invalid(field, "vmflow routers are never HA; only false is accepted")
    return False


def interfaces(txn, router_id: str) -> list[Document]:
    return [p for p in txn.list("ports") if is_interface(p) and p.get("device_id") == router_id]


def gateway_port(txn, router: Document) -> Optional[Document]:
    info = router.get(GATEWAY_FIELD)
    if not info or not info.get("network_id"):
        return None
    return next((p for p in txn.list("ports", parent_id=info["network_id"])
                 if p.get("device_owner") == GATEWAY_OWNER and p.get("device_id") == router["id"]),
                None)


def routers_for_fip(txn, subnet_id: str, external_network_id: str) -> list[Document]:
    """Routers with an interface on this subnet and a gateway on that external
    network: the way between a floating IP and a fixed IP."""
    found = {}
    subnet = txn.get("subnets", subnet_id)
    if subnet is None:
        return []
    for port in txn.list("ports", parent_id=subnet["network_id"]):
        if is_interface(port) and any(ip["subnet_id"] == subnet_id for ip in port["fixed_ips"]):
            router = txn.get("routers", port["device_id"])
            info = router.get(GATEWAY_FIELD) if router else None
            if info and info.get("network_id") == external_network_id:
                found[router["id"]] = router
    return [found[k] for k in sorted(found)]


class Routers(Kind):
    collection = "routers"
    member = "router"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"status", "vmflow:snat_host"})
    computed = frozenset({"status", "vmflow:snat_host"})
    attrs = {
        **common_attrs(),
        "admin_state_up": v.Attr(v.boolean, True),
        "routes": v.Attr(v.unique_list_of(_route, max_items=MAX_ROUTES), list),
        "external_gateway_info": v.Attr(_gateway_info, None),
        "distributed": v.Attr(_read_only_true, True),
        "ha": v.Attr(_read_only_false, False),
    }

    def __init__(self, settings, ports_kind=None):
        super().__init__(settings)
        self.ports = ports_kind

    def authorize(self, r, ctx, action, doc, given=()):
        # Neutron's rules name the gateway's keys: a member sets network_id,
        # enable_snat and external_fixed_ips are the admin's
        # (create_router:external_gateway_info:enable_snat, ...).
        names = list(given)
        info = doc.get(GATEWAY_FIELD)
        if GATEWAY_FIELD in names and isinstance(info, GatewayRequest):
            names += [f"{GATEWAY_FIELD}:{k}" for k in info.given]
        super().authorize(r, ctx, action, doc, names)

    def create(self, txn, ctx, values):
        if values.get("routes"):
            # No interface yet: no nexthop can be on a connected subnet.
            self._check_routes(values["routes"], [])
        requested = values.pop(GATEWAY_FIELD)
        doc = self.new_doc(ctx, values)
        doc["status"] = "ACTIVE"
        doc[GATEWAY_FIELD] = None
        self.give_key(txn, doc, KEY_NAMESPACE, KEY_MAX)
        self._set_gateway(txn, ctx, doc, requested)
        self.save(txn, doc)
        return doc

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        if "routes" in changes:
            self._check_routes(changes["routes"], self._connected(txn, doc["id"]))
        if GATEWAY_FIELD in changes:
            self._set_gateway(txn, ctx, doc, changes.pop(GATEWAY_FIELD))
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        if interfaces(txn, doc["id"]):
            raise InUse(f"Router {doc['id']} still has ports", "RouterInUse")
        self._set_gateway(txn, ctx, doc, None)
        super().delete(txn, ctx, doc)

    # -- gateway ---------------------------------------------------------------
    def _set_gateway(self, txn: Txn, ctx, router: Document, requested) -> None:
        """Make the router's gateway port match the request (None: no gateway)."""
        current = router.get(GATEWAY_FIELD)
        port = gateway_port(txn, router)
        if requested is None:
            if current:
                self._check_unused(txn, router, current.get("network_id"))
                if port is not None:
                    self._remove_port(txn, port)
            router[GATEWAY_FIELD] = None
            return
        network = self._external_network(txn, ctx, requested["network_id"])
        ips = requested["external_fixed_ips"]
        if current and current.get("network_id") == network["id"] and port is not None:
            if ips is not UNSET:
                owner = port_owner(port["id"])
                new = self._gateway_ips(lambda: assign_fixed_ips(
                    txn, network["id"], ips, owner, current=port["fixed_ips"]))
                release_fixed_ips(txn, [ip for ip in port["fixed_ips"] if ip not in new])
                port["fixed_ips"] = new
                self.ports.touch(port)
                self.ports.save(txn, port)
        else:
            if current:
                self._check_unused(txn, router, current.get("network_id"))
                if port is not None:
                    self._remove_port(txn, port)
            port = self._add_port(txn, ctx, router, network, ips)
        router[GATEWAY_FIELD] = {"network_id": network["id"],
                                 "enable_snat": requested["enable_snat"],
                                 "external_fixed_ips": [dict(ip) for ip in port["fixed_ips"]]}

    @staticmethod
    def _external_network(txn, ctx, network_id: str) -> Document:
        network = txn.get("networks", network_id)
        if network is None or not policy.check(ctx, "get_network",
                                               policy.Target(network, lambda: network)):
            raise not_found("network", network_id)
        if not network.get("router:external"):
            raise BadRequest(f"Invalid input for {GATEWAY_FIELD}.network_id. Reason: network "
                             f"{network_id} is not an external network (router:external is "
                             "false)", "BadRequest")
        return network

    @staticmethod
    def _gateway_ips(assign):
        try:
            return assign()
        except v.Invalid as e:
            raise v.Invalid(f"{GATEWAY_FIELD}.external_fixed_ips", e.reason) from None

    def _add_port(self, txn, ctx, router, network, ips) -> Document:
        port = self.ports.build(txn, ctx, {
            "name": "", "description": "", "network_id": network["id"],
            "project_id": None, "tenant_id": None, "admin_state_up": True,
            "mac_address": None, "fixed_ips": [], "device_id": router["id"],
            "device_owner": GATEWAY_OWNER, "binding:host_id": "", "binding:profile": {},
            "binding:vnic_type": "normal", "allowed_address_pairs": [],
            "port_security_enabled": False, "security_groups": [], "qos_policy_id": None,
        }, network)
        owner = port_owner(port["id"])
        if ips is UNSET:
            port["fixed_ips"] = default_fixed_ips(txn, network["id"], owner)
            if not port["fixed_ips"]:
                raise BadRequest(f"Invalid input for {GATEWAY_FIELD}.network_id. Reason: "
                                 f"external network {network['id']} has no subnet to take "
                                 "a gateway IP from", "BadRequest")
        else:
            port["fixed_ips"] = self._gateway_ips(
                lambda: assign_fixed_ips(txn, network["id"], ips, owner))
        # The gateway port belongs to no project, as Neutron's: no tenant
        # sees or changes it through the port API.
        port["project_id"] = port["tenant_id"] = ""
        self.ports.save(txn, port)
        return port

    @staticmethod
    def _remove_port(txn, port) -> None:
        txn.release_owner(port_owner(port["id"]))
        txn.delete("ports", port["id"])

    @staticmethod
    def _check_unused(txn, router: Document, network_id: str) -> None:
        if fip_refs.using_router(txn, router["id"]):
            raise InUse(f"Gateway cannot be updated for router {router['id']}, since a "
                        f"gateway to external network {network_id} is required by one or "
                        "more floating IPs.", "RouterExternalGatewayInUseByFloatingIp")

    def present(self, r, docs):
        out = super().present(r, docs)
        hosts = None
        for doc, shown in zip(docs, out):
            info = doc.get(GATEWAY_FIELD)
            if not info:
                shown["vmflow:snat_host"] = None
                continue
            if hosts is None:
                hosts = r.list("hosts")
            host = placement.snat_host(doc, hosts)
            shown["vmflow:snat_host"] = host
            if info.get("enable_snat") and host is None:
                shown["status"] = "ERROR"
        return out

    @staticmethod
    def _connected(txn, router_id: str) -> list[str]:
        return [txn.get("subnets", ip["subnet_id"])["cidr"]
                for p in interfaces(txn, router_id) for ip in p["fixed_ips"]]

    @staticmethod
    def _check_routes(routes: list[dict], connected: list[str]) -> None:
        nets = [ipaddress.ip_network(c) for c in connected]
        for route in routes:
            hop = ipaddress.ip_address(route["nexthop"])
            if not any(hop in n for n in nets):
                raise BadRequest(f"Invalid format for routes: {route}, the nexthop "
                                 f"{route['nexthop']} is not connected with router",
                                 "InvalidRoutes")

    # -- interfaces ------------------------------------------------------------
    def add_interface(self, txn: Txn, ctx, router: Document, ports_kind,
                      subnet_id: Optional[str], port_id: Optional[str]) -> dict:
        self.check_owner(ctx, router, "update")
        if port_id is not None:
            port = txn.get("ports", port_id)
            if port is None or port.get("project_id") != router["project_id"] and not ctx.is_admin:
                raise not_found("port", port_id)
            if port.get("device_owner") or port.get("device_id"):
                raise InUse(f"Port {port_id} has owner {port.get('device_owner') or port.get('device_id')} "
                            "and therefore cannot be used as a router interface", "PortInUse")
            if len(port["fixed_ips"]) != 1:
                raise BadRequest(f"Router port {port_id} must have exactly one fixed IP",
                                 "BadRequest")
            subnet = txn.get("subnets", port["fixed_ips"][0]["subnet_id"])
            self._check_overlap(txn, router, subnet)
            port["device_owner"] = INTERFACE_OWNER
            port["device_id"] = router["id"]
            ports_kind.touch(port)
            ports_kind.save(txn, port)
        else:
            subnet = txn.get("subnets", subnet_id)
            # Another project's subnet is not there for a member: routing
            # into it would join that project's network to this router.
            if subnet is None or (subnet.get("project_id") != router["project_id"]
                                  and not ctx.is_admin):
                raise not_found("subnet", subnet_id)
            network = txn.get("networks", subnet["network_id"])
            if subnet.get("gateway_ip") is None:
                raise BadRequest(f"Bad router request: Subnet {subnet_id} does not have a "
                                 "gateway IP", "BadRequest")
            owner = ipam.ip_owner(txn, subnet["id"], subnet["gateway_ip"])
            if owner is not None:
                raise InUse(f"IP address {subnet['gateway_ip']} already allocated in subnet "
                            f"{subnet_id}", "IpAddressInUse")
            self._check_overlap(txn, router, subnet)
            port = ports_kind.build(txn, ctx, {
                "name": "", "description": "", "network_id": network["id"],
                "project_id": router["project_id"], "admin_state_up": True,
                "mac_address": None, "fixed_ips": [], "device_id": router["id"],
                "device_owner": INTERFACE_OWNER, "binding:host_id": "", "binding:profile": {},
                "binding:vnic_type": "normal", "allowed_address_pairs": [],
                "port_security_enabled": False, "security_groups": [],
            }, network)
            # The gateway is outside the pools and claim_ip refuses it on
            # purpose; the router interface is the one owner it may have.
            txn.claim(ipam.ip_namespace(subnet["id"]), subnet["gateway_ip"],
                      port_owner(port["id"]))
            port["fixed_ips"] = [{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}]
            ports_kind.save(txn, port)
        self.touch(router)
        self.save(txn, router)
        return self._info(router, port)

    def remove_interface(self, txn: Txn, ctx, router: Document,
                         subnet_id: Optional[str], port_id: Optional[str]) -> dict:
        self.check_owner(ctx, router, "update")
        mine = interfaces(txn, router["id"])
        if port_id is not None:
            port = next((p for p in mine if p["id"] == port_id), None)
            if port is None:
                raise NotFound(f"Router {router['id']} does not have an interface with id "
                               f"{port_id}", "RouterInterfaceNotFound")
            if subnet_id is not None and all(ip["subnet_id"] != subnet_id
                                             for ip in port["fixed_ips"]):
                raise InUse(f"Subnet {subnet_id} is not on port {port_id}", "SubnetMismatchForPort")
        else:
            port = next((p for p in mine if any(ip["subnet_id"] == subnet_id
                                                for ip in p["fixed_ips"])), None)
            if port is None:
                raise NotFound(f"Router {router['id']} has no interface on subnet {subnet_id}",
                               "RouterInterfaceNotFoundForSubnet")
        remaining = [r for r in router.get("routes") or ()]
        connected = [txn.get("subnets", ip["subnet_id"])["cidr"]
                     for p in mine if p["id"] != port["id"] for ip in p["fixed_ips"]]
        nets = [ipaddress.ip_network(c) for c in connected]
        stranded = [r for r in remaining
                    if not any(ipaddress.ip_address(r["nexthop"]) in n for n in nets)]
        if stranded:
            raise InUse(f"Router interface for subnet {port['fixed_ips'][0]['subnet_id']} on "
                        f"router {router['id']} cannot be deleted, as it is required by one "
                        "or more routes.", "RouterInterfaceInUseByRoute")
        removed = [ipaddress.ip_network(txn.get("subnets", ip["subnet_id"])["cidr"])
                   for ip in port["fixed_ips"]]
        if fip_refs.using_subnets(txn, router["id"], lambda addr: any(
                ipaddress.ip_address(addr) in n for n in removed)):
            raise InUse(f"Router interface for subnet {port['fixed_ips'][0]['subnet_id']} on "
                        f"router {router['id']} cannot be deleted, as it is required by one "
                        "or more floating IPs.", "RouterInterfaceInUseByFloatingIP")
        info = self._info(router, port)
        txn.release_owner(port_owner(port["id"]))
        txn.delete("ports", port["id"])
        self.touch(router)
        self.save(txn, router)
        return info

    @staticmethod
    def _check_overlap(txn, router: Document, subnet: Document) -> None:
        new = ipaddress.ip_network(subnet["cidr"])
        for port in interfaces(txn, router["id"]):
            for ip in port["fixed_ips"]:
                other = txn.get("subnets", ip["subnet_id"])
                if other is not None and ipaddress.ip_network(other["cidr"]).overlaps(new):
                    raise InUse(
                        f"Cidr {subnet['cidr']} of subnet {subnet['id']} overlaps with cidr "
                        f"{other['cidr']} of subnet {other['id']} on router {router['id']}",
                        "RouterInterfaceOverlap")

    @staticmethod
    def _info(router: Document, port: Document) -> dict:
        subnets = [ip["subnet_id"] for ip in port["fixed_ips"]]
        return {"id": router["id"], "subnet_id": subnets[0] if subnets else None,
                "subnet_ids": subnets, "port_id": port["id"], "network_id": port["network_id"],
                "tenant_id": router["project_id"], "project_id": router["project_id"]}


class RouterInterfaces:
    """PUT /v2.0/routers/{id}/add_router_interface and .../remove_router_interface."""

    def __init__(self, kind: Routers, ports_kind, store: Store):
        self.kind = kind
        self.ports = ports_kind
        self.store = store

    @staticmethod
    def _body(req) -> tuple[Optional[str], Optional[str]]:
        body = read_body(req)
        if not isinstance(body, dict) or not ({"subnet_id", "port_id"} & set(body)):
            raise BadRequest("Bad router request: Either subnet_id or port_id must be "
                             "specified")
        extra = set(body) - {"subnet_id", "port_id"}
        if extra:
            raise BadRequest(f"Unrecognized attribute(s) '{', '.join(sorted(extra))}'")
        subnet_id = v.uuid_str("subnet_id", body["subnet_id"]) if "subnet_id" in body else None
        port_id = v.uuid_str("port_id", body["port_id"]) if "port_id" in body else None
        return subnet_id, port_id

    def on_put_add(self, req, resp, id):
        subnet_id, port_id = self._body(req)
        if subnet_id and port_id:
            raise BadRequest("Bad router request: Cannot specify both subnet-id and port-id")

        def add(txn):
            router = self.kind.load(txn, req.context.auth, id)
            return self.kind.add_interface(txn, req.context.auth, router, self.ports,
                                           subnet_id, port_id)
        info = self.store.run(add)
        respond(resp, falcon.HTTP_200, info)

    def on_put_remove(self, req, resp, id):
        subnet_id, port_id = self._body(req)

        def remove(txn):
            router = self.kind.load(txn, req.context.auth, id)
            return self.kind.remove_interface(txn, req.context.auth, router, subnet_id, port_id)
        info = self.store.run(remove)
        respond(resp, falcon.HTTP_200, info)

