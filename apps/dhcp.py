"""DHCPv4 server answered by the controller, from the store.

Each DHCP-enabled network has one port with device_owner "network:dhcp"; its
address in a subnet and its MAC are the server's identity there. That port
is plugged nowhere: the services table sends every DHCP client packet
(udp 68 -> 67, whatever its destination, so unicast renewals are caught too)
of a local VM port to the controller through the port's meter, and the
answer is a packet-out back to the port it came in on. DHCP server packets
(udp source port 67) from a VM are dropped: a VM cannot play DHCP server.

Addresses are the ports' fixed IPs, so the server keeps no lease state: an
answer is a pure function of the request and the store (like Neutron's
dnsmasq with static host entries).

- DISCOVER -> OFFER of the port's address.
- REQUEST (RFC 2131 4.3.2):
  SELECTING (server id present): another server's id -> silence; the
    port's address requested -> ACK, anything else -> NAK;
  INIT-REBOOT (no server id, requested address, ciaddr 0): ACK or NAK;
  RENEWING / REBINDING (no server id, ciaddr set): ciaddr is the port's
    address -> ACK, else NAK.
- DECLINE, RELEASE: counted (a DECLINE is logged: someone else uses the
  port's address); no answer.
- INFORM -> ACK with the configuration and no address or lease.
- A client the store does not know (no VM port at in_port, or chaddr not the
  port's MAC) gets nothing. Nor does a port without an IPv4 address in a
  DHCP-enabled subnet that has a DHCP port.
Replies go where RFC 2131 4.1 says: NAK broadcast; ciaddr set -> unicast to
it; broadcast flag -> ff:ff:ff:ff:ff:ff / 255.255.255.255; else unicast to
chaddr / yiaddr.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Iterable, Optional

import dpkt
import netaddr

from apps import dhcp_options as o
from apps.addresses import ipv4 as _ipv4
from apps.addresses import mac_bytes
from controller.app import App, PacketIn, PacketOut, SwitchView
from controller.locality import is_local
from controller.flow import Flow, flow, to_controller
from controller.pipeline import REG_IN_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

LOG = logging.getLogger(__name__)

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
BOOTREQUEST, BOOTREPLY = 1, 2
CLIENT_PORT, SERVER_PORT = 68, 67
BROADCAST_FLAG = 0x8000
MAGIC = 0x63825363
FIXED_LEN = 240                      # BOOTP header + magic cookie
MIN_MAX_SIZE = 576                   # every client accepts an IP datagram this large
IP_UDP_LEN = 28
BROADCAST_MAC = b"\xff" * 6
BROADCAST_IP = b"\xff" * 4
ZERO_IP = b"\x00" * 4
SERVICES_PRIORITY = 100
ETH_TYPE_IP = 0x0800
IPPROTO_UDP = 17


@dataclass(frozen=True)
class Request:
    """What a DHCP client sent, parsed and checked."""
    msg_type: int
    xid: int
    flags: int
    ciaddr: bytes
    giaddr: bytes
    chaddr: bytes                    # 6 bytes
    options: dict

    def option_ip(self, code: int) -> Optional[bytes]:
        value = self.options.get(code)
        return value if value is not None and len(value) == 4 else None

    @property
    def max_size(self) -> int:
        value = self.options.get(o.OPT_MAX_SIZE)
        if value is not None and len(value) == 2:
            return max(MIN_MAX_SIZE, struct.unpack("!H", value)[0])
        return MIN_MAX_SIZE


@dataclass(frozen=True)
class Lease:
    """What the store says a port gets: its address in one DHCP subnet, and the server there."""
    port: Document
    subnet: Document
    network: Optional[Document]
    ip: str
    server_ip: str
    server_mac: bytes
    instance: Optional[Document]


def parse_request(frame: bytes) -> tuple[Optional[Request], str]:
    """A frame -> (Request, "ok") or (None, why it is not a usable client message)."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.Error, ValueError, IndexError, KeyError, TypeError):
        return None, "malformed"
    ip = eth.data
    if eth.type != ETH_TYPE_IP or getattr(eth, "vlan_tags", None) or not isinstance(ip, dpkt.ip.IP):
        return None, "malformed"
    udp = ip.data
    if ip.p != IPPROTO_UDP or not isinstance(udp, dpkt.udp.UDP) or ip.mf or ip.offset:
        return None, "malformed"
    if udp.sport != CLIENT_PORT or udp.dport != SERVER_PORT:
        return None, "malformed"
    payload = bytes(udp.data)
    if len(payload) < FIXED_LEN:
        return None, "malformed"
    try:
        hdr = dpkt.dhcp.DHCP(payload[:FIXED_LEN])
    except (dpkt.Error, ValueError, IndexError, KeyError, TypeError, struct.error):
        return None, "malformed"
    if hdr.op != BOOTREQUEST or hdr.hrd != 1 or hdr.hln != 6 or hdr.magic != MAGIC:
        return None, "malformed"
    options = o.parse_options(payload[FIXED_LEN:])
    if options is None:
        return None, "malformed"
    mt = options.get(o.OPT_MSG_TYPE)
    if mt is None or len(mt) != 1:
        return None, "malformed"
    return Request(msg_type=mt[0], xid=hdr.xid, flags=hdr.flags,
                   ciaddr=struct.pack("!I", hdr.ciaddr), giaddr=struct.pack("!I", hdr.giaddr),
                   chaddr=bytes(hdr.chaddr[:6]), options=options), "ok"


def find_lease(view: TopologyView, port: Optional[Document]) -> tuple[Optional[Lease], str]:
    """The port's first IPv4 address in a DHCP-enabled subnet that has a DHCP port."""
    if port is None or not port.get("network_id"):
        return None, "unknown_client"
    network_id = port["network_id"]
    server = view.dhcp_port(network_id)
    if server is None or not server.get("mac_address"):
        return None, "no_server"
    subnets = view.subnets_by_network.get(network_id, {})
    server_ips = {f.get("subnet_id"): _ipv4(f.get("ip_address")) for f in server.get("fixed_ips") or ()}
    for fip in port.get("fixed_ips") or ():
        subnet = subnets.get(fip.get("subnet_id"))
        ip = _ipv4(fip.get("ip_address"))
        if subnet is None or ip is None or not subnet.get("enable_dhcp", True):
            continue
        server_ip = server_ips.get(subnet["id"])
        if server_ip is None:
            continue
        try:
            server_mac = mac_bytes(server["mac_address"])
            netaddr.IPNetwork(subnet["cidr"])
        except (ValueError, KeyError, netaddr.AddrFormatError):
            continue
        return Lease(port=port, subnet=subnet, network=view.networks.get(network_id), ip=ip,
                     server_ip=server_ip, server_mac=server_mac,
                     instance=view.instance_for_port(port)), "ok"
    return None, "no_address"


def decide(req: Request, lease: Lease) -> tuple[Optional[int], str]:
    """(reply message type or None, outcome) for a request from a known client."""
    mine = o.ip4(lease.ip)
    t = req.msg_type
    if t == DISCOVER:
        return OFFER, "offer"
    if t == REQUEST:
        server_id = req.options.get(o.OPT_SERVER_ID)
        requested = req.option_ip(o.OPT_REQUESTED_IP)
        if server_id is not None:                                # SELECTING
            if server_id != o.ip4(lease.server_ip):
                return None, "other_server"
            return (ACK, "ack") if requested == mine else (NAK, "nak")
        if requested is not None and req.ciaddr == ZERO_IP:     # INIT-REBOOT
            return (ACK, "ack") if requested == mine else (NAK, "nak")
        if req.ciaddr != ZERO_IP:                               # RENEWING / REBINDING
            return (ACK, "ack") if req.ciaddr == mine else (NAK, "nak")
        return None, "malformed"
    if t == DECLINE:
        return None, "decline"
    if t == RELEASE:
        return None, "release"
    if t == INFORM:
        return ACK, "inform"
    return None, "unexpected_type"


def build_reply(req: Request, lease: Lease, msg_type: int, settings: o.Settings) -> bytes:
    """The Ethernet frame answering req with msg_type (OFFER, ACK or NAK)."""
    server_ip = o.ip4(lease.server_ip)
    inform = req.msg_type == INFORM
    opts: list[tuple[int, bytes]] = [(o.OPT_MSG_TYPE, bytes([msg_type])),
                                     (o.OPT_SERVER_ID, server_ip)]
    if msg_type == NAK:
        yiaddr, ciaddr = ZERO_IP, ZERO_IP
        opts.append((o.OPT_MESSAGE, b"requested address is not this client's"))
    else:
        yiaddr = ZERO_IP if inform else o.ip4(lease.ip)
        ciaddr = req.ciaddr if msg_type == ACK else ZERO_IP
        if not inform:
            opts += o.lease_options(settings)
        opts += o.config_options(lease.port, lease.subnet, lease.network, lease.server_ip,
                                 lease.instance, lease.ip, settings)
    room = req.max_size - IP_UDP_LEN - FIXED_LEN
    packed = o.fit_options(opts, room)
    dhcp = dpkt.dhcp.DHCP(op=BOOTREPLY, hrd=1, hln=6, hops=0, xid=req.xid, secs=0,
                          flags=req.flags,
                          ciaddr=struct.unpack("!I", ciaddr)[0],
                          yiaddr=struct.unpack("!I", yiaddr)[0],
                          siaddr=0, giaddr=struct.unpack("!I", req.giaddr)[0],
                          chaddr=req.chaddr + b"\x00" * 10, opts=(), data=packed)
    # RFC 2131 4.1, for a client on the link (no relay).
    if msg_type == NAK:
        dst_ip, dst_mac = BROADCAST_IP, BROADCAST_MAC
    elif req.ciaddr != ZERO_IP:
        dst_ip, dst_mac = req.ciaddr, req.chaddr
    elif req.flags & BROADCAST_FLAG:
        dst_ip, dst_mac = BROADCAST_IP, BROADCAST_MAC
    else:
        dst_ip, dst_mac = yiaddr, req.chaddr
    udp = dpkt.udp.UDP(sport=SERVER_PORT, dport=CLIENT_PORT, data=bytes(dhcp))
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=server_ip, dst=dst_ip, p=IPPROTO_UDP, ttl=64, tos=0x10, data=udp)
    eth = dpkt.ethernet.Ethernet(dst=dst_mac, src=lease.server_mac, type=ETH_TYPE_IP, data=ip)
    return bytes(eth)


def dhcp_answer(frame: bytes, port: Optional[Document], view: TopologyView,
                settings: o.Settings) -> tuple[Optional[bytes], str]:
    """One frame from a VM port -> (reply frame or None, outcome to count). Never raises."""
    req, why = parse_request(frame)
    if req is None:
        return None, why
    if port is None:
        return None, "unknown_client"
    try:
        known = req.chaddr == mac_bytes(port.get("mac_address") or "")
    except ValueError:
        known = False
    if not known:
        return None, "unknown_client"
    lease, why = find_lease(view, port)
    if lease is None:
        return None, why
    msg_type, outcome = decide(req, lease)
    if msg_type is None:
        return None, outcome
    return build_reply(req, lease, msg_type, settings), outcome


def dhcp_flows(app_id: int, view: TopologyView, sw: SwitchView, port: Document) -> list[Flow]:
    """A local VM port's DHCP client packets (any destination) go to the controller."""
    if port.get("_key") is None or not is_local(view, sw, port):
        return []
    key = port["_key"]
    return [flow(app_id, "services", SERVICES_PRIORITY,
                 {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_IP, "ip_proto": IPPROTO_UDP,
                  "udp_src": CLIENT_PORT, "udp_dst": SERVER_PORT},
                 *to_controller(key), owner=("ports", key))]


def server_drop_flows(app_id: int) -> list[Flow]:
    """DHCP server packets from any VM are dropped (only VM traffic reaches services)."""
    return [flow(app_id, "services", SERVICES_PRIORITY,
                 {"eth_type": ETH_TYPE_IP, "ip_proto": IPPROTO_UDP, "udp_src": SERVER_PORT})]


class DhcpApp(App):
    name = "dhcp"

    def __init__(self, conf=None) -> None:
        self.settings = o.Settings.from_conf(conf)
        self.runtime = None

    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        return server_drop_flows(self.app_id) if sw.host is not None else ()

    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        return dhcp_flows(self.app_id, view, sw, port)

    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        reply, outcome = dhcp_answer(pkt.data, pkt.port, pkt.view, self.settings)
        if self.runtime is not None:
            self.runtime.count(outcome)
        if outcome == "decline":
            LOG.warning("DHCPDECLINE from port %s: its address is in use by someone else",
                        pkt.port and pkt.port.get("id"))
        if reply is None:
            return ()
        return (PacketOut(pkt.in_port, reply),)
