"""The OpenFlow pipeline of every integration bridge, in one place.

Tables are referred to by name everywhere else; the numbers live only here.
Gaps between numbers leave room for stages still to come (stateful
firewall, DVR, NAT, QoS) without renumbering what is installed.

Registers and metadata carry what a stage learned for the stages after it:

    metadata  network key of the packet's network (set by classify)
    reg6      port key of the VM port the packet came from (0: from an uplink)
    reg7      port key of the VM port the packet is going to (set by l2_lookup)

Port and network keys are small integers the store allocates once per port and
network (`_key` in the stored body); they are stable across restarts, so flows
computed by two controller runs are identical.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    number: int
    doc: str


PIPELINE: tuple[Table, ...] = (
    Table("classify", 0,
          "Where did the packet come from? A VM port (matched by in_port) gets its "
          "port key in reg6 and its network key in metadata. An uplink port with "
          "a VLAN id known for that physical network gets the tag stripped and "
          "the network's key (VLAN translation in); untagged uplink traffic maps "
          "to the physical network's flat network. Uplink traffic skips the VM "
          "stages and goes straight to l2_lookup: the sending host already ran "
          "them. Anything else, including an unknown VLAN, is dropped here."),
    Table("port_security", 5,
          "Baseline anti-spoofing for VM ports with port security on: the source "
          "MAC must be the port's MAC (or an allowed pair's MAC) and the source IP "
          "one of its fixed IPs or allowed address pairs. ARP must carry the same "
          "sender. A DHCP DISCOVER/REQUEST from 0.0.0.0 and an ARP probe from "
          "0.0.0.0 are let through so a VM can get an address. Everything else "
          "from the port is dropped. Ports with port security off pass as they are."),
    Table("services", 10,
          "Conversations the controller answers itself: ARP requests (ARP proxy), "
          "DHCP client packets, and TCP to 169.254.169.254:80 (metadata) go to the "
          "controller through a per-port meter. A gratuitous ARP request announcing "
          "one of the port's own addresses (sender == target == that address) goes "
          "on, to be flooded in its network. Any other ARP request is dropped by a "
          "low-priority flow, so ARP fails closed if the proxy's flows are missing. "
          "DHCP server packets (udp source port 67) sent by a VM are dropped. "
          "Everything else goes on. Only VM traffic gets here (reg6 != 0)."),
    Table("egress_firewall", 20,
          "The sending VM's outbound security-group rules, in the conntrack zone of "
          "its vNIC. Until the stateful firewall exists this stage passes all."),
    Table("routing", 30,
          "Distributed routing: traffic for a router interface's MAC is routed on "
          "this host. Until routers exist this stage passes all."),
    Table("l2_lookup", 40,
          "(network, destination MAC) -> a local VM port (its key into reg7) or "
          "the uplink of the network's physical network, VLAN-tagged with the "
          "segmentation id for vlan networks, untagged for flat ones. Broadcast "
          "and multicast flood to the network's local ports and its uplink only. "
          "There is no MAC learning: an unknown destination is dropped and counted "
          "by the table-miss flow."),
    Table("ingress_firewall", 50,
          "The receiving VM's inbound security-group rules, in the conntrack zone "
          "of its vNIC. Until the stateful firewall exists this stage passes all."),
    Table("output", 60,
          "reg7 (destination port key) -> the switch port it is plugged into."),
)

TABLES: dict[str, Table] = {t.name: t for t in PIPELINE}


def table_id(name: str) -> int:
    """The OpenFlow table number of a named stage (KeyError for an unknown name)."""
    return TABLES[name].number


def table_name(number: int) -> str | None:
    for t in PIPELINE:
        if t.number == number:
            return t.name
    return None


# Registers, by what they hold.
REG_IN_PORT_KEY = "reg6"
REG_OUT_PORT_KEY = "reg7"

# The cookie names who wanted a flow, so `ovs-ofctl dump-flows` and
# `vmflow explain` read like a map:
#
#   bits 63-48  0x766d ("vm"): vmflow's space. Flows outside it belong to
#               someone else and are left alone.
#   bits 47-40  the owning app's id (apps/base.py APP_IDS)
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


def make_cookie(app_id: int, kind: str | None = None, key: int = 0) -> int:
    """The cookie of a flow app `app_id` wants for resource (kind, key)."""
    kind_id = RESOURCE_KIND_IDS[kind] if kind else 0
    if not 0 <= app_id <= 0xFF or not 0 <= key <= COOKIE_KEY_MASK:
        raise ValueError(f"cookie out of range: app {app_id}, key {key}")
    return (COOKIE_SPACE | (app_id << COOKIE_APP_SHIFT) | (kind_id << COOKIE_KIND_SHIFT)
            | key)


def decode_cookie(cookie: int) -> tuple[int, str | None, int] | None:
    """(app id, resource kind or None, key) of a vmflow cookie; None if foreign."""
    if cookie & COOKIE_SPACE_MASK != COOKIE_SPACE:
        return None
    kind_id = (cookie & COOKIE_KIND_MASK) >> COOKIE_KIND_SHIFT
    return ((cookie & COOKIE_APP_MASK) >> COOKIE_APP_SHIFT,
            RESOURCE_KINDS.get(kind_id, f"kind{kind_id}") if kind_id else None,
            cookie & COOKIE_KEY_MASK)


def describe() -> str:
    """The table map as text (for `vmflow tables` and the docs)."""
    lines = []
    for t in PIPELINE:
        lines.append(f"{t.number:3d} {t.name}\n     {t.doc}")
    return "\n".join(lines)
