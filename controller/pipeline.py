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

# Every flow vmflow owns carries this in the top 16 bits of its cookie; the
# owning app's id sits in the next 16 bits. Flows outside this space belong to
# someone else and are left alone.
COOKIE_SPACE = 0x766D << 48
COOKIE_SPACE_MASK = 0xFFFF << 48
COOKIE_APP_SHIFT = 32
COOKIE_APP_MASK = 0xFFFF << COOKIE_APP_SHIFT


def describe() -> str:
    """The table map as text (for `vmflow tables` and the docs)."""
    lines = []
    for t in PIPELINE:
        lines.append(f"{t.number:3d} {t.name}\n     {t.doc}")
    return "\n".join(lines)
