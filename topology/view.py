"""A read-only, indexed view of the desired network state, for the controller.

Built from a store snapshot and kept current by applying the change feed.
Documents are the API's JSON shapes (see topology/store/base.py), so a reader
can check a field against the Neutron API reference directly.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional

from topology.store.base import Change, Document

ROUTER_INTERFACE = "network:router_interface_distributed"


def interface_name(port: Document) -> str:
    """The switch-side interface of a VM NIC, named the way Nova names it."""
    profile = port.get("binding:profile") or {}
    return profile.get("interface_name") or ("tap" + port["id"][:11])


def parse_dpid(value) -> int:
    """A datapath id given as an int or a hex string ("0000000000000001", "0x1")."""
    if isinstance(value, int):
        return value
    text = str(value).lower().replace(":", "")
    return int(text[2:] if text.startswith("0x") else text, 16)


def remote_refs(rule: Document) -> list[str]:
    """The remote sets a rule refers to: "sg:ID" for a remote group, "ag:ID"
    for an address group."""
    out = []
    if rule.get("remote_group_id"):
        out.append("sg:" + rule["remote_group_id"])
    if rule.get("remote_address_group_id"):
        out.append("ag:" + rule["remote_address_group_id"])
    return out


def _uncount(index: dict[str, Counter], outer: str, inner: str) -> None:
    counts = index.get(outer)
    if counts is None:
        return
    counts[inner] -= 1
    if counts[inner] <= 0:
        del counts[inner]
        if not counts:
            del index[outer]


class TopologyView:
    def __init__(self, revision: int = 0, data: Optional[dict[str, dict[str, Document]]] = None):
        self.revision = revision
        # Every kind reads as a dict, stored or not: a new kind needs no list here.
        self.docs: dict[str, dict[str, Document]] = defaultdict(dict)
        for kind, items in (data or {}).items():
            self.docs.setdefault(kind, {}).update(items)
        self._reindex()

    # -- indexes ---------------------------------------------------------
    def _reindex(self) -> None:
        self.ports_by_network: dict[str, dict[str, Document]] = defaultdict(dict)
        self.ports_by_host: dict[str, dict[str, Document]] = defaultdict(dict)
        # Packet-in handling looks ports up per packet: these keep it O(1).
        self.port_by_interface: dict[tuple[str, str], Document] = {}
        self.dhcp_port_by_network: dict[str, Document] = {}
        self.subnets_by_network: dict[str, dict[str, Document]] = defaultdict(dict)
        # How many ports of a network are bound to a host: a network is
        # present on a host while one is.
        self._nets_on_host: dict[str, Counter] = defaultdict(Counter)
        self._hosts_of_net: dict[str, Counter] = defaultdict(Counter)
        # Routers' interface ports by router, and the routers with an
        # interface on a network (how many interfaces): a host where one of
        # a router's networks is present routes for it, so the router's other
        # networks are present there too.
        self.router_ports: dict[str, dict[str, Document]] = defaultdict(dict)
        self._routers_of_net: dict[str, Counter] = defaultdict(Counter)
        self.host_by_name: dict[str, Document] = {}
        self.host_by_dpid: dict[int, Document] = {}
        # Security groups: their member ports, their rules, and who refers to
        # them (a rule's remote_group_id or remote_address_group_id, as
        # "sg:ID" / "ag:ID") -> how many rules of each referring group.
        self.ports_by_group: dict[str, dict[str, Document]] = defaultdict(dict)
        self.rules_by_group: dict[str, dict[str, Document]] = defaultdict(dict)
        self.groups_referring: dict[str, Counter] = defaultdict(Counter)
        # group -> host -> how many of its members bound there have port
        # security on (the ones its rules apply to)
        self.group_hosts: dict[str, Counter] = defaultdict(Counter)
        for p in self.docs["ports"].values():
            self._index_port(p)
        for r in self.docs["security_group_rules"].values():
            self._index_rule(r, +1)
        for s in self.docs["subnets"].values():
            self.subnets_by_network[s["network_id"]][s["id"]] = s
        for h in self.docs["hosts"].values():
            self._index_host(h)

    def _index_port(self, p: Document) -> None:
        self.ports_by_network[p["network_id"]][p["id"]] = p
        host = p.get("binding:host_id")
        if host:
            self.ports_by_host[host][p["id"]] = p
            self.port_by_interface[(host, interface_name(p))] = p
            self._nets_on_host[host][p["network_id"]] += 1
            self._hosts_of_net[p["network_id"]][host] += 1
        if p.get("device_owner") == "network:dhcp":
            self.dhcp_port_by_network[p["network_id"]] = p
        if p.get("device_owner") == ROUTER_INTERFACE and p.get("device_id"):
            self.router_ports[p["device_id"]][p["id"]] = p
            self._routers_of_net[p["network_id"]][p["device_id"]] += 1
        for g in p.get("security_groups") or ():
            self.ports_by_group[g][p["id"]] = p
            if host and p.get("port_security_enabled", True) is not False:
                self.group_hosts[g][host] += 1

    def _unindex_port(self, p: Document) -> None:
        self.ports_by_network[p["network_id"]].pop(p["id"], None)
        host = p.get("binding:host_id")
        if host:
            self.ports_by_host[host].pop(p["id"], None)
            _uncount(self._nets_on_host, host, p["network_id"])
            _uncount(self._hosts_of_net, p["network_id"], host)
            key = (host, interface_name(p))
            if self.port_by_interface.get(key) is p:
                del self.port_by_interface[key]
        if self.dhcp_port_by_network.get(p["network_id"]) is p:
            del self.dhcp_port_by_network[p["network_id"]]
        if p.get("device_owner") == ROUTER_INTERFACE and p.get("device_id"):
            ports = self.router_ports.get(p["device_id"])
            if ports is not None:
                ports.pop(p["id"], None)
                if not ports:
                    del self.router_ports[p["device_id"]]
            _uncount(self._routers_of_net, p["network_id"], p["device_id"])
        for g in p.get("security_groups") or ():
            members = self.ports_by_group.get(g)
            if members is not None:
                members.pop(p["id"], None)
                if not members:
                    del self.ports_by_group[g]
            if host and p.get("port_security_enabled", True) is not False:
                _uncount(self.group_hosts, g, host)

    def _index_rule(self, r: Document, n: int) -> None:
        group = r["security_group_id"]
        if n > 0:
            self.rules_by_group[group][r["id"]] = r
        else:
            rules = self.rules_by_group.get(group, {})
            rules.pop(r["id"], None)
            if not rules:
                self.rules_by_group.pop(group, None)
        for ref in remote_refs(r):
            if n > 0:
                self.groups_referring[ref][group] += 1
            else:
                _uncount(self.groups_referring, ref, group)

    def _index_host(self, h: Document) -> None:
        self.host_by_name[h["name"]] = h
        self.host_by_dpid[parse_dpid(h["datapath_id"])] = h

    def _unindex_host(self, h: Document) -> None:
        if self.host_by_name.get(h["name"]) is h:
            del self.host_by_name[h["name"]]
        dpid = parse_dpid(h["datapath_id"])
        if self.host_by_dpid.get(dpid) is h:
            del self.host_by_dpid[dpid]

    # -- change feed -------------------------------------------------------
    def apply(self, change: Change) -> Optional[Document]:
        """Apply one change; return the document it replaced (or None)."""
        items = self.docs.setdefault(change.kind, {})
        old = items.get(change.id)
        if old is not None:
            if change.kind == "ports":
                self._unindex_port(old)
            elif change.kind == "subnets":
                self.subnets_by_network[old["network_id"]].pop(old["id"], None)
            elif change.kind == "hosts":
                self._unindex_host(old)
            elif change.kind == "security_group_rules":
                self._index_rule(old, -1)
        if change.op == "delete":
            items.pop(change.id, None)
        else:
            new = change.body
            items[change.id] = new
            if change.kind == "ports":
                self._index_port(new)
            elif change.kind == "subnets":
                self.subnets_by_network[new["network_id"]][new["id"]] = new
            elif change.kind == "hosts":
                self._index_host(new)
            elif change.kind == "security_group_rules":
                self._index_rule(new, +1)
        self.revision = max(self.revision, change.revision)
        return old

    # -- lookups -----------------------------------------------------------
    @property
    def networks(self) -> dict[str, Document]:
        return self.docs["networks"]

    @property
    def ports(self) -> dict[str, Document]:
        return self.docs["ports"]

    @property
    def subnets(self) -> dict[str, Document]:
        return self.docs["subnets"]

    @property
    def hosts(self) -> dict[str, Document]:
        return self.docs["hosts"]

    @property
    def routers(self) -> dict[str, Document]:
        return self.docs["routers"]

    @property
    def instances(self) -> dict[str, Document]:
        return self.docs["instances"]

    def host_for_dpid(self, dpid: int) -> Optional[Document]:
        return self.host_by_dpid.get(dpid)

    def ports_on_host(self, host_name: str) -> Iterable[Document]:
        return self.ports_by_host.get(host_name, {}).values()

    # A network is present on a host where one of its ports is bound, or
    # where a network that shares a router with it is (distributed routing:
    # that host routes to it, so it needs its forwarding).
    def routers_of_network(self, network_id: str) -> set[str]:
        return set(self._routers_of_net.get(network_id, ()))

    def router_networks(self, router_id: str) -> set[str]:
        return {p["network_id"] for p in self.router_ports.get(router_id, {}).values()}

    def routed_networks(self, network_id: str) -> set[str]:
        """The networks sharing a router with this one (itself included if it has one)."""
        return {n for r in self._routers_of_net.get(network_id, ())
                for n in self.router_networks(r)}

    def bound_networks_on_host(self, host_name: str) -> set[str]:
        return set(self._nets_on_host.get(host_name, ()))

    def networks_on_host(self, host_name: str) -> set[str]:
        direct = self.bound_networks_on_host(host_name)
        out = set(direct)
        for nid in direct:
            out |= self.routed_networks(nid)
        return out

    def network_on_host(self, network_id: str, host_name: Optional[str]) -> bool:
        if not host_name:
            return False
        direct = self._nets_on_host.get(host_name, ())
        if network_id in direct:
            return True
        return any(n in direct for n in self.routed_networks(network_id))

    def bound_hosts_of_network(self, network_id: str) -> set[str]:
        return set(self._hosts_of_net.get(network_id, ()))

    def hosts_of_network(self, network_id: str) -> set[str]:
        out = self.bound_hosts_of_network(network_id)
        for nid in self.routed_networks(network_id):
            out |= self.bound_hosts_of_network(nid)
        return out

    def hosts_of_router(self, router_id: str) -> set[str]:
        return {h for n in self.router_networks(router_id) for h in self.bound_hosts_of_network(n)}

    def instance_for_port(self, port: Document) -> Optional[Document]:
        device = port.get("device_id")
        instance = self.instances.get(device) if device else None
        # device_id is the port owner's to write: another project's instance is not theirs
        return instance if instance and instance.get("project_id") == port.get("project_id") else None

    def port_on_host(self, host_name: str, interface: str) -> Optional[Document]:
        """The port bound to this host whose switch-side interface has this name."""
        return self.port_by_interface.get((host_name, interface))

    def dhcp_port(self, network_id: str) -> Optional[Document]:
        return self.dhcp_port_by_network.get(network_id)
