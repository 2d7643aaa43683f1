"""What a network-function app is to the controller, and the one registry of apps.

An app is a compiler from desired state to flows, plus (optionally) a
responder to the packets its flows send to the controller. It never sends a
flow-mod itself: the reconciler diffs what every app wants against what the
switch has.

Flows are asked for per scope (controller/scopes.py) so that a change
recomputes only what it touches (a port change recomputes that port's flows
on the switches that see its network, and that network's flows there). For
a scope kind K an app defines `K_flows`:

    switch_flows(view, sw)            per switch
    network_flows(view, sw, network)  per network present on the switch
    port_flows(view, sw, port)        per port of a network present on the
                                      switch, local or remote (remote ports
                                      give e.g. forwarding to the uplink)

All must be pure functions of their arguments. Table misses are not an
app's: the compiler writes them from controller/pipeline.py.

Packet-ins are routed by cookie: the flow that sent a packet to the
controller carries its app's id, and that app's packet_in gets the packet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol

from controller.flow import Flow
from topology.store.base import Document
from topology.view import TopologyView



@dataclass(frozen=True)
class AppSpec:
    app_id: int          # carried in every flow's cookie; never reuse a retired id
    entry: str           # "module:Class", loaded when [controller] apps names it


# Every app, in one place. Id 0 is the pipeline's own (controller/pipeline.py).
APPS: dict[str, AppSpec] = {
    "l2": AppSpec(1, "apps.l2:L2App"),
    "arp": AppSpec(2, "apps.arp:ArpApp"),
    "dhcp": AppSpec(3, "apps.dhcp:DhcpApp"),
    "metadata": AppSpec(4, "apps.metadata:MetadataApp"),
    "secgroup": AppSpec(5, "apps.secgroup:SecGroupApp"),
    "dvr": AppSpec(6, "apps.dvr:DvrApp"),
    "nat": AppSpec(7, "apps.nat:NatApp"),
    "qos": AppSpec(8, "apps.qos:QosApp"),
}
APP_IDS = {name: spec.app_id for name, spec in APPS.items()}


@dataclass
class SwitchView:
    """What the controller knows of one connected bridge."""
    dpid: int
    host: Optional[Document]             # the host that claims this datapath, if any
    ports_by_name: dict[str, int] = field(default_factory=dict)   # interface name -> ofport
    _name_by_ofport: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def host_name(self) -> Optional[str]:
        return self.host["name"] if self.host else None

    def ofport(self, name: str) -> Optional[int]:
        return self.ports_by_name.get(name)

    def interface_at(self, ofport: int) -> Optional[str]:
        """The interface name at an ofport, for every packet-in: a reverse
        map checked against ports_by_name on each hit and rebuilt when stale,
        so it stays right however ports_by_name was changed."""
        name = self._name_by_ofport.get(ofport)
        if name is None or self.ports_by_name.get(name) != ofport:
            self._name_by_ofport = {p: n for n, p in self.ports_by_name.items()}
            name = self._name_by_ofport.get(ofport)
        return name


@dataclass(frozen=True)
class PacketIn:
    dpid: int
    in_port: int                 # ofport the packet entered on
    data: bytes
    port: Optional[Document]     # the VM port plugged there, if known
    switch: SwitchView
    view: TopologyView


@dataclass(frozen=True)
class PacketOut:
    port: int                    # ofport to send out of
    data: bytes


class Runtime(Protocol):
    """Services the controller offers an app outside a packet-in."""

    def send_packet(self, dpid: int, port: int, data: bytes) -> None: ...

    def call_later(self, seconds: float, fn: Callable[[], Any]) -> Any: ...

    def count(self, name: str, n: int = 1) -> None: ...


class App:
    name: str = ""

    @property
    def app_id(self) -> int:
        return APP_IDS[self.name]

    def bind(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        return ()

    def network_flows(self, view: TopologyView, sw: SwitchView, network: Document) -> Iterable[Flow]:
        return ()

    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        return ()

    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        return ()
