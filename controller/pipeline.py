"""The OpenFlow pipeline of every integration bridge, declared in one place.

Tables are referred to by name everywhere else; the numbers live only here.
Each stage declares the stages a flow in it may continue to (goto, resubmit,
or ct recirculation), what happens to a packet no flow matches (the table
miss, which the compiler emits from this declaration), and which apps may
write it in which priority band. `check()` holds a flow to that declaration;
the compiler counts and logs a flow that breaks it, and the unit tests fail
on one.

Stages decide logically and only `output` touches physical ports: classify
turns an ofport into keys, l2_lookup turns a destination MAC into a port key
(or "the uplink"), and output turns keys back into ofports and VLAN tags.
Floods are copies through `ingress_firewall`, one per receiver, so a
broadcast is filtered by every receiver's rules like a unicast packet is.

Registers and metadata carry what a stage learned for the stages after it:

    metadata  network key of the packet's network (set by classify)
    reg6      port key of the VM port the packet came from (0: from an uplink)
    reg7      where the packet goes (set by l2_lookup): a local port's key, or
              OUT_KEY_UPLINK for "the uplink of the packet's network"
    reg5      ROUTED once routing has routed the packet on this host (dvr), so
              the neighbour step and pre_output tell routed frames apart
    reg4      the key of the local VM port a packet from an external network is
              DNATed to (nat: floating IPs, port forwarding), carried across the
              ct() recirculation in nat_in
    reg3      bit 0: an IPv4 packet from an external network is longer than the
              tenant network's MTU (check_pkt_larger at classify, nat)

Conntrack zones are 16 bits. A VM port's firewall zone is its port key
(1..PORT_KEY_MAX = 0xBFFF, topology/api/kinds/ports.py), and a router's
external side (floating-IP and SNAT translation, apps/nat.py) uses
EXTERNAL_ZONE_BASE + (router key - 1) % EXTERNAL_ZONES, 0xC000..0xFFFF: the two
ranges never meet. Routers more than EXTERNAL_ZONES apart in key share a zone,
which only matters if they also share an outside peer, port and tenant address.

Port and network keys are small integers the store allocates once per port and
network (`_key` in the stored body); they are stable across restarts, so flows
computed by two controller runs are identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

# Registers, by what they hold.
REG_IN_PORT_KEY = "reg6"
REG_OUT_PORT_KEY = "reg7"
# reg7's value for "leave by the uplink of the packet's network". Port keys
# stay below 2**16 (topology/api/kinds/ports.py), so it never names a port.
OUT_KEY_UPLINK = 0x80000000
REG_ROUTED = "reg5"
ROUTED = 1
REG_NAT_PORT = "reg4"

EXTERNAL_ZONE_BASE = 0xC000
EXTERNAL_ZONES = 0x4000


def external_zone(router_key: int) -> int:
    """The conntrack zone of a router's external side (see the module doc)."""
    return EXTERNAL_ZONE_BASE + (int(router_key) - 1) % EXTERNAL_ZONES

# The app id of the flows the compiler writes from this declaration (misses).
PIPELINE_APP_ID = 0


@dataclass(frozen=True)
class Stage:
    name: str
    number: int
    next: tuple[str, ...]                 # stages a flow here may continue to
    miss: Optional[str]                   # None: a packet no flow matches is dropped
    writers: Mapping[str, tuple[int, int]]  # app name -> (lowest, highest) priority
    doc: str
    miss_doc: str = ""
    # A metered stage holds only flows whose one instruction is a QoS meter,
    # reached by resubmit, and is numbered after every other stage (see
    # METERED_LAST below).
    metered: bool = False


# A "table" is what the rest of the code has always called a stage.
Table = Stage

PIPELINE: tuple[Stage, ...] = (
    Stage("classify", 0, next=("port_security", "l2_lookup", "nat_in", "egress_meter"), miss=None,
          writers={"l2": (100, 100), "qos": (110, 111), "dvr": (115, 121), "nat": (125, 126)},
          doc="Where did the packet come from? "
              "Priority 126 (nat): on an external network's uplink, an ARP request "
              "for a floating IP bound to a port of this host is answered in the "
              "switch with the host's external_mac (a copy goes to the controller, "
              "which learns the asker's MAC), and an ARP reply to a floating IP "
              "goes to the controller (the answer to its own neighbour request). "
              "Priority 125 (nat): IPv4 to this host's external_mac and a floating "
              "IP (or port-forwarded address, or a router gateway address on its "
              "snat host): the tag is stripped, check_pkt_larger(tenant MTU + 14) "
              "sets reg3 bit 0, metadata = the external network, then nat_in. "
              "Priority 120-121: a frame on an uplink whose source is another host's "
              "registered DVR MAC was routed there (dvr): as the flow below, and its "
              "source becomes the gateway MAC of the destination subnet's router "
              "interface (121: per interface subnet by ipv4_dst, where a network has "
              "several; 120: the network's first interface). "
              "Priority 116: another host's external_mac in the DVR MAC range that no "
              "flow above took is dropped (dvr), apart from the count below. "
              "Priority 115: any other source in the DVR MAC range on an uplink is "
              "dropped (dvr); that flow's packet counter counts unregistered DVR MACs. "
              "Priority 111: for a local VM port whose QoS policy marks DSCP, a flow "
              "for its IPv4 (in_port, eth_type) that does what priority 100 does, "
              "sets ip_dscp and, if the port has an egress QoS meter, resubmits to "
              "egress_meter. "
              "Priority 110: for a local VM port with an egress QoS meter, a flow "
              "(in_port) that does what priority 100 does and resubmits to "
              "egress_meter: egress (from the VM) is metered at classification. "
              "Priority 100: a flow per local VM port (in_port) that puts the port "
              "key in reg6 and the network key in metadata, then port_security; a "
              "flow per (uplink, VLAN id) of each network present on the host that "
              "strips the tag (untagged for flat networks), sets the network key and "
              "goes straight to l2_lookup: the sending host already ran the VM stages.",
          miss_doc="Anything else, an unknown port or VLAN included, is dropped. A "
                   "bridge no host claims has only this flow."),
    Stage("port_security", 5, next=("services",), miss=None,
          writers={"l2": (100, 100)},
          doc="Baseline anti-spoofing. Priority 100: for a port with port security on, "
              "a flow per (MAC, IPv4 address or CIDR) it owns, fixed IPs and allowed "
              "address pairs, for IPv4 and for ARP (sender MAC and address must match "
              "too); a DHCP DISCOVER/REQUEST and an ARP probe from 0.0.0.0 so a VM can "
              "get an address. For a port with port security off, one flow passing all "
              "it sends.",
          miss_doc="Everything else from a VM is dropped."),
    Stage("services", 10, next=("egress_firewall",), miss="egress_firewall",
          writers={"l2": (10, 10), "arp": (100, 105), "dhcp": (100, 100),
                   "metadata": (110, 110)},
          doc="Conversations vmflow answers itself. Priority 110: TCP and ARP for "
              "169.254.169.254 go to the controller (metadata). Priority 105: a "
              "gratuitous ARP request announcing one of the port's own addresses goes on "
              "into the network. Priority 104: a port's ARP request for its own address "
              "goes to the controller, so a duplicate-address probe sees no conflict. "
              "Priority 102: an ARP request for an address the store knows in the "
              "network is answered in the switch (the reply goes back out of in_port), "
              "so ARP between VMs that already talk survives a controller outage. "
              "Priority 100: other ARP requests (the ARP proxy, for what the switch "
              "cannot answer) and DHCP client packets go to the controller through the "
              "port's meter; DHCP server packets (udp source port 67) a VM sends are "
              "dropped. Priority 10: every other ARP request is dropped, so ARP fails "
              "closed. Only VM traffic gets here.",
          miss_doc="Everything else goes on to egress_firewall."),
    Stage("egress_firewall", 20, next=("egress_rules", "routing"), miss="routing",
          writers={"secgroup": (100, 100)},
          doc="Conntrack for the sending VM. Priority 100: a flow per local port with "
              "port security on sends its IPv4 through ct() in the port's own zone (the "
              "zone is the port key) and recirculates to egress_rules; for a port whose "
              "groups are stateless it goes to egress_rules without ct(). Non-IP "
              "traffic (ARP, already checked by port_security) is not the firewall's.",
          miss_doc="Ports with port security off, and non-IP traffic, go on to routing."),
    Stage("egress_rules", 21, next=("routing",), miss=None,
          writers={"secgroup": (1, 65000)},
          doc="The sending VM's outbound rules, with the connection's state known "
              "(reg6 = the port). Priority 65000: +inv is dropped; +rel passes. "
              "Priority 60000: +est passes while the rule that admitted the connection "
              "(its ct_mark) is a rule of one of the port's groups, a conjunctive match "
              "(port, +est) x (ct_mark = a rule of group G), id 2**24 + G's key: a rule "
              "removed, or the port leaving the group, cuts what it admitted. Priorities "
              "1000-1201: +new is checked against the rules in priority order (rule "
              "priority p is 1000 + 2*(100-p), a deny one above an allow, so deny wins a "
              "tie), each rule a conjunctive match with the rule's key as id: clause 1 "
              "the port (one flow per port and priority), clause 2 the rule's protocol, "
              "masked port ranges and prefix (shared by every port with the rule), "
              "clause 3 for a remote group or address group its addresses; the conj_id "
              "flow drops (deny) or commits in the port's zone with ct_mark = the rule's "
              "key and goes on.",
          miss_doc="What no rule admits is dropped: a port with no groups sends nothing."),
    Stage("nat_in", 25, next=("nat_in", "l2_lookup", "nat_out", "pre_output"), miss=None,
          writers={"nat": (1, 65000)},
          doc="Inbound from an external network (nat). Priority 120: reg3 bit 0 "
              "set (longer than the tenant network's MTU) goes to the controller "
              "through the target port's (or gateway port's) meter, which answers "
              "ICMP fragmentation needed with that MTU. Priority 100-110: untracked "
              "IPv4 to a floating IP (110 for a port forwarding's protocol and "
              "port) is DNATed to the fixed IP with ct(commit, nat(dst=...)) in "
              "the router's external zone, reg4 = the target port's key, and "
              "recirculated here; an already translated reply is un-SNATed by "
              "the same ct. Priority 100: tracked (+trk-inv) with reg4 = a port: "
              "routed into the port's network (dec_ttl, the interface's gateway "
              "MAC as source, the port's MAC as destination, metadata = its "
              "network), then l2_lookup and the port's ingress firewall, which "
              "sees the outside's true source. "
              "Centralized SNAT, on the router's snat host: priority 90, a tenant "
              "frame to the router gateway's MAC from an interface subnet is "
              "translated to the gateway address, ct(commit, nat(src=G:1024-65535)) "
              "in the router's external zone, source = the gateway port's MAC, "
              "metadata = the external network, recirculated to nat_out. Priority "
              "100: IPv4 to the gateway address goes through ct(nat) (no commit: "
              "nothing from outside starts a connection), reg4 = 2**31 | router "
              "key; a +est or +rel result is routed back to the tenant port it "
              "un-SNATed to (l2_lookup if the port is here, else pre_output to its "
              "host as a DVR-routed frame).",
          miss_doc="Anything else from outside is dropped."),
    Stage("routing", 30, next=("l2_lookup", "routing", "nat_out", "pre_output"), miss="l2_lookup",
          writers={"dvr": (1, 65000), "nat": (1, 65000)},
          doc="Priority 500 (nat): IPv4 from a local port with a floating IP, to "
              "its gateway MAC and to no connected subnet or static route (those "
              "are 1000 and up): dec_ttl, source = this host's external_mac, "
              "metadata = the external network, reg7 = the uplink, then "
              "ct(commit, nat(src=floating IP)) in the router's external zone, "
              "recirculating to nat_out. "
              "Priority 400 (nat): the same from any address of an interface "
              "subnet, for a router with SNAT: on the snat host translated as in "
              "nat_in's SNAT; elsewhere dec_ttl, destination = the router gateway "
              "port's MAC, reg5 ROUTED, reg7 the uplink, then pre_output: the frame "
              "crosses the tenant network's VLAN to the snat host. "
              "Distributed routing: IPv4 for a router interface's MAC is routed on "
              "this host, in two steps (dvr). Priority 1100: a flow per (local VM "
              "port, gateway MAC on its network, TTL 0 or 1) sends IPv4 that dec_ttl "
              "would expire to the controller through the port's meter, which answers "
              "ICMP time-exceeded from the gateway. Priorities 1000-1066: a flow per "
              "(interface, other interface's subnet) and per (interface, static "
              "route), by prefix length (2*len, +1 for a connected subnet, so the "
              "longest prefix wins and a connected subnet beats a route of the same "
              "length): dec_ttl, the source becomes the target subnet's gateway "
              "MAC, metadata the target network, reg5 ROUTED; a connected subnet "
              "resubmits to routing for the neighbour step, a static route sets the "
              "nexthop's MAC and goes to l2_lookup. Priority 60000: the neighbour "
              "step, a flow per (ROUTED, network, port address in an interface's "
              "subnet) setting the port's MAC (known from the store: no ARP) and "
              "going to l2_lookup. Priority 2: a routed packet with no neighbour is "
              "dropped. Priority 1: anything else sent to an interface's MAC (not "
              "IPv4, or no route) is dropped, so a gateway MAC never leaves the host.",
          miss_doc="Everything not for a router goes on to l2_lookup."),
    Stage("nat_out", 35, next=("pre_output",), miss=None,
          writers={"nat": (1, 65000)},
          doc="The external next hop of a translated packet (nat), from the "
              "neighbours the controller learned (kind mac_bindings). Priority "
              "200: a destination on the external subnet with a known MAC. "
              "Priority 100: one on the subnet with none yet goes to the "
              "controller (through the sending port's meter), which ARPs for it. "
              "Priority 50: anything else to the external subnet's gateway_ip "
              "MAC; priority 40: the controller ARPs for the gateway while it is "
              "unknown. Then pre_output.",
          miss_doc="Nothing learned and no way to ask: dropped."),
    Stage("l2_lookup", 40, next=("ingress_firewall", "pre_output"), miss=None,
          writers={"l2": (50, 100)},
          doc="(network, destination MAC) -> where the packet goes; nothing is output "
              "here. Priority 100: a flow per local VM port puts its key in reg7 and "
              "goes to ingress_firewall; a flow per VM port on another host puts "
              "OUT_KEY_UPLINK in reg7 and goes to pre_output. Priority 50: broadcast "
              "and multicast make one copy per local port of the network (reg7 = its "
              "key, resubmitted to ingress_firewall) and one for the uplink (resubmitted "
              "to pre_output). There is no MAC learning: every MAC is known from the "
              "store.",
          miss_doc="An unknown destination is dropped; this flow's packet counter is the "
                   "unknown-destination count."),
    Stage("ingress_firewall", 50, next=("ingress_rules", "pre_output"), miss="pre_output",
          writers={"secgroup": (100, 100)},
          doc="Conntrack for the receiving VM (reg7). Priority 100: as egress_firewall, "
              "in the receiver's zone, recirculating to ingress_rules. Every copy of a "
              "flood passes here once per receiver, so a broadcast is filtered like a "
              "unicast packet.",
          miss_doc="Receivers with port security off, the uplink's copy of a flood, and "
                   "non-IP traffic go on to pre_output."),
    Stage("ingress_rules", 51, next=("pre_output",), miss=None,
          writers={"secgroup": (1, 65000)},
          doc="The receiving VM's inbound rules, flow for flow as egress_rules with the "
              "remote side as the packet's source.",
          miss_doc="What no rule admits is dropped."),
    Stage("pre_output", 55, next=("output", "ingress_meter"), miss="output",
          writers={"dvr": (100, 199), "qos": (200, 299)},
          doc="The hook before a frame leaves. Priority 200: a flow per local VM "
              "port with an ingress QoS meter (reg7 = its key) resubmits to "
              "ingress_meter and goes on to output: traffic toward a VM is metered "
              "here, every copy of a flood included. Priority 100 (dvr): a routed "
              "frame (reg5 ROUTED) going out of the uplink gets this host's DVR MAC "
              "as its source, so no gateway MAC reaches the fabric.",
          miss_doc="Everything goes on to output unchanged."),
    Stage("output", 60, next=(), miss=None,
          writers={"l2": (100, 100), "nat": (99, 99)},
          doc="Keys back to switch ports. Priority 99 (nat): an external network "
              "present on this host only for floating IPs (no VM port of it is "
              "here, so l2 has no flow for it): its uplink, as l2 does. Priority 100: a flow per local VM port "
              "(reg7 = its key) outputs to its ofport; a flow per network present on "
              "the host (metadata = its key, reg7 = OUT_KEY_UPLINK) pushes the VLAN tag "
              "for vlan networks and outputs to the uplink of its physical network. "
              "OVS never outputs a packet to the port it came in on, so a flood is "
              "never reflected.",
          miss_doc="A packet with nowhere to go is dropped."),
    Stage("egress_meter", 70, next=(), miss=None, metered=True,
          writers={"qos": (100, 100)},
          doc="QoS meters of traffic from a VM, reached by resubmit from classify. "
              "Priority 100: a flow per local VM port with an egress QoS meter "
              "(reg6 = its key) whose one instruction is that meter; the packet "
              "then carries on in classify. The meters live in tables of their own, "
              "after every other stage, because OVS's flow-preserving restart "
              "(ovs-save) restores flows but no meters, refuses a flow that names a "
              "missing meter, and restores a bridge table by table, stopping at the "
              "first refusal: every stage above is back before the first metered "
              "flow is refused, and a resubmit that finds no flow does nothing, so "
              "until the controller re-adds the meters the port's traffic flows "
              "unmetered instead of not at all (README \"OVS restarts\").",
          miss_doc="a resubmit that finds no flow returns to the flow that "
                   "resubmitted, so the packet goes on unmetered."),
    Stage("ingress_meter", 71, next=(), miss=None, metered=True,
          writers={"qos": (100, 100)},
          doc="QoS meters of traffic toward a VM, reached by resubmit from "
              "pre_output, as egress_meter is: priority 100, a flow per local VM "
              "port with an ingress QoS meter (reg7 = its key) whose one instruction "
              "is that meter.",
          miss_doc="as in egress_meter, the packet goes on unmetered."),
)

# ovs-save's restore goes table by table and stops at the first refused flow,
# so the metered stages must come after every stage a packet needs.
METERED_LAST = all(s.metered or all(s.number < m.number for m in PIPELINE if m.metered)
                   for s in PIPELINE)
assert METERED_LAST, "metered stages must be numbered after every other stage"

STAGES: dict[str, Stage] = {s.name: s for s in PIPELINE}
TABLES = STAGES
_BY_NUMBER: dict[int, Stage] = {s.number: s for s in PIPELINE}


def table_id(name: str) -> int:
    """The OpenFlow table number of a named stage (KeyError for an unknown name)."""
    return STAGES[name].number


def table_name(number: int) -> str | None:
    s = _BY_NUMBER.get(number)
    return s.name if s else None


# The cookie names who wanted a flow, so `ovs-ofctl dump-flows` and
# `vmflow explain` read like a map:
#
#   bits 63-48  0x766d ("vm"): vmflow's space. Flows outside it belong to
#               someone else and are left alone.
#   bits 47-40  the owning app's id (controller/app.py APPS; 0: the pipeline)
#   bits 39-32  the kind of resource that wanted the flow (RESOURCE_KINDS)
#   bits 31-0   that resource's key, a small integer the store allocates once
#               (`_key` in the stored body), so a restart changes nothing
COOKIE_SPACE = 0x766D << 48
COOKIE_SPACE_MASK = 0xFFFF << 48
COOKIE_APP_SHIFT = 40
COOKIE_APP_MASK = 0xFF << COOKIE_APP_SHIFT
COOKIE_KIND_SHIFT = 32
COOKIE_KIND_MASK = 0xFF << COOKIE_KIND_SHIFT
COOKIE_KEY_MASK = 0xFFFFFFFF

# Resource kind ids in cookies -> the store kind whose `_key` follows. Never
# reuse a retired id; 0 means "no resource" (per-switch defaults).
RESOURCE_KINDS: dict[int, str] = {
    1: "ports",
    2: "networks",
    3: "security_groups",
    4: "security_group_rules",
    5: "routers",
    6: "floatingips",
    7: "qos_policies",
    8: "address_groups",
    9: "hosts",
    10: "port_forwardings",
}
RESOURCE_KIND_IDS: dict[str, int] = {v: k for k, v in RESOURCE_KINDS.items()}
_KIND_BITS: dict = {None: 0, **{v: k << COOKIE_KIND_SHIFT for k, v in RESOURCE_KINDS.items()}}


def make_cookie(app_id: int, kind: str | None = None, key: int = 0) -> int:
    """The cookie of a flow app `app_id` wants for resource (kind, key)."""
    if not 0 <= app_id <= 0xFF or not 0 <= key <= COOKIE_KEY_MASK:
        raise ValueError(f"cookie out of range: app {app_id}, key {key}")
    return COOKIE_SPACE | (app_id << COOKIE_APP_SHIFT) | _KIND_BITS[kind] | key


def decode_cookie(cookie: int) -> tuple[int, str | None, int] | None:
    """(app id, resource kind or None, key) of a vmflow cookie; None if foreign."""
    if cookie & COOKIE_SPACE_MASK != COOKIE_SPACE:
        return None
    kind_id = (cookie & COOKIE_KIND_MASK) >> COOKIE_KIND_SHIFT
    return ((cookie & COOKIE_APP_MASK) >> COOKIE_APP_SHIFT,
            RESOURCE_KINDS.get(kind_id, f"kind{kind_id}") if kind_id else None,
            cookie & COOKIE_KEY_MASK)


# Meter ids by purpose. vmflow installs, changes and deletes meters only
# inside these ranges; a meter outside them belongs to someone else.
METER_RANGES: dict[str, tuple[int, int]] = {
    "packet_in": (1, 0xFFFF),             # one per VM port: its port key
    "qos": (0x100000, 0x1FFFFF),          # one per (port, direction) with a policy
}


def meter_purpose(meter_id: int) -> Optional[str]:
    for purpose, (low, high) in METER_RANGES.items():
        if low <= meter_id <= high:
            return purpose
    return None


# -- holding flows to the declaration ---------------------------------------
def _targets(instructions) -> list[str]:
    """Every stage a flow's instructions may continue to."""
    out = []
    for ins in instructions:
        if ins[0] == "goto":
            out.append(ins[1])
        elif ins[0] == "apply":
            for a in ins[1:]:
                if a[0] == "resubmit":
                    out.append(a[1])
                elif a[0] == "ct" and a[3]:
                    out.append(a[3])
    return out


def check(app_name: str, table: str, priority: int, instructions) -> list[str]:
    """What is wrong with a flow that app_name wants, against the declaration."""
    stage = STAGES.get(table)
    if stage is None:
        return [f"{app_name}: unknown stage {table!r}"]
    problems = []
    band = stage.writers.get(app_name)
    if band is None:
        problems.append(f"{app_name} may not write {table} (writers: "
                        f"{', '.join(stage.writers) or 'none'})")
    elif not band[0] <= priority <= band[1]:
        problems.append(f"{app_name}: priority {priority} in {table} is outside its band "
                        f"{band[0]}-{band[1]}")
    meters = [ins for ins in instructions if ins[0] == "meter"]
    if meters and not stage.metered:
        problems.append(f"{app_name}: a meter instruction in {table}, which is not a metered "
                        f"stage (ovs-save could not restore the bridge past it)")
    if stage.metered and (len(meters) != 1 or len(instructions) != 1):
        problems.append(f"{app_name}: a flow in the metered stage {table} must have one "
                        f"instruction, its meter")
    for target in _targets(instructions):
        if target not in stage.next:
            problems.append(f"{app_name}: {table} may not continue to {target!r} "
                            f"(next: {', '.join(stage.next) or 'none'})")
    return problems


def describe() -> str:
    """The table map as text (for `vmflow tables` and the docs)."""
    lines = []
    for s in PIPELINE:
        nxt = ", ".join(s.next) or "-"
        miss = f"goto {s.miss}" if s.miss else "drop"
        writers = ", ".join(f"{a} {lo}-{hi}" if lo != hi else f"{a} {lo}"
                            for a, (lo, hi) in s.writers.items())
        lines.append(f"{s.number:3d} {s.name}   next: {nxt}   writers: {writers}\n"
                     f"     {s.doc}\n"
                     + (f"     No flow at priority 0: {s.miss_doc}" if s.metered else
                        f"     Priority 0 (miss, {miss}): {s.miss_doc}"))
    return "\n".join(lines)
