"""A small topology and client-packet builders for the ARP and DHCP unit tests."""
from __future__ import annotations

import socket
import struct

import dpkt

from controller.app import PacketIn, SwitchView
from topology.view import TopologyView

NET = "net-1"
SUBNET = "sub-1"
VM_MAC = "fa:16:3e:00:00:05"
VM_IP = "10.0.0.5"
VM2_MAC = "fa:16:3e:00:00:06"
VM2_IP = "10.0.0.6"
DHCP_MAC = "fa:16:3e:00:00:02"
DHCP_IP = "10.0.0.2"
PAIR_MAC = "fa:16:3e:00:00:99"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def port_doc(pid, key, mac_address, ip_address, host="h1", owner="compute:nova",
             device="inst-1", pairs=(), subnet=SUBNET, network=NET):
    return {"id": pid, "network_id": network, "mac_address": mac_address,
            "fixed_ips": [{"subnet_id": subnet, "ip_address": ip_address}] if ip_address else [],
            "allowed_address_pairs": list(pairs), "port_security_enabled": True,
            "device_id": device, "device_owner": owner, "binding:host_id": host, "_key": key}


def make_view(gateway="10.0.0.1", dns=("10.0.0.53", "8.8.8.8"), host_routes=(), mtu=1450,
              hostname="vm-one", enable_dhcp=True, extra_ports=()) -> TopologyView:
    ports = [
        port_doc("port-vm1-aaaaaaaa", 5, VM_MAC, VM_IP, device="inst-1",
                 pairs=[{"ip_address": "10.0.0.100", "mac_address": PAIR_MAC},
                        {"ip_address": "10.0.0.101/32"},
                        {"ip_address": "10.0.1.0/24", "mac_address": PAIR_MAC}]),
        port_doc("port-vm2-bbbbbbbb", 6, VM2_MAC, VM2_IP, host="h2", device="inst-2"),
        port_doc("port-dhcp-cccccc", 2, DHCP_MAC, DHCP_IP, host="", owner="network:dhcp",
                 device="dhcp"),
        *extra_ports,
    ]
    data = {
        "networks": {NET: {"id": NET, "mtu": mtu, "_key": 1}},
        "subnets": {SUBNET: {"id": SUBNET, "network_id": NET, "cidr": "10.0.0.0/24",
                             "gateway_ip": gateway, "dns_nameservers": list(dns),
                             "host_routes": list(host_routes), "enable_dhcp": enable_dhcp,
                             "ip_version": 4}},
        "ports": {p["id"]: p for p in ports},
        "instances": {"inst-1": {"id": "inst-1", "hostname": hostname}} if hostname else {},
        "hosts": {"h1": {"name": "h1", "datapath_id": "0000000000000001"},
                  "h2": {"name": "h2", "datapath_id": "0000000000000002"}},
    }
    return TopologyView(1, data)


def switch(view: TopologyView, dpid=1) -> SwitchView:
    """The switch of host h<dpid>, with every port bound there plugged in."""
    host = view.host_for_dpid(dpid)
    plugged = {"tap" + p["id"][:11]: 10 + i for i, p in enumerate(view.ports_on_host(host["name"]))}
    return SwitchView(dpid=dpid, host=host, ports_by_name=plugged)


def packet_in(view, data, port_id="port-vm1-aaaaaaaa", in_port=7) -> PacketIn:
    port = view.ports.get(port_id) if port_id else None
    return PacketIn(dpid=1, in_port=in_port, data=data, port=port, switch=switch(view), view=view)


def arp_request(sender_mac=VM_MAC, sender_ip=VM_IP, target_ip=VM2_IP, op=1) -> bytes:
    a = dpkt.arp.ARP(op=op, sha=mac(sender_mac), spa=ip(sender_ip), tha=b"\x00" * 6,
                     tpa=ip(target_ip))
    return bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=mac(sender_mac),
                                        type=0x0806, data=a))


def dhcp_client(msg_type, chaddr=VM_MAC, xid=0x1234, flags=0, ciaddr="0.0.0.0",
                src_ip="0.0.0.0", dst_ip="255.255.255.255", dst_mac="ff:ff:ff:ff:ff:ff",
                options=(), sport=68, dport=67) -> bytes:
    opts = [(53, bytes([msg_type]))] + list(options)
    d = dpkt.dhcp.DHCP(op=1, xid=xid, flags=flags, ciaddr=struct.unpack("!I", ip(ciaddr))[0],
                       chaddr=mac(chaddr) + b"\x00" * 10, opts=opts)
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=bytes(d))
    u.ulen = len(u)
    i = dpkt.ip.IP(src=ip(src_ip), dst=ip(dst_ip), p=17, data=u)
    return bytes(dpkt.ethernet.Ethernet(dst=mac(dst_mac), src=mac(chaddr), type=0x0800, data=i))


def parse_reply(frame: bytes):
    """frame -> (eth, ip, udp, dhcp header, {option: value})."""
    from apps.dhcp_options import parse_options
    eth = dpkt.ethernet.Ethernet(frame)
    i = eth.data
    u = i.data
    payload = bytes(u.data)
    d = dpkt.dhcp.DHCP(payload[:240])
    return eth, i, u, d, parse_options(payload[240:])


class Counter:
    """A Runtime stand-in that records counts and packets sent."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.sent = []

    def count(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def send_packet(self, dpid, port, data):
        self.sent.append((dpid, port, data))

    def call_later(self, seconds, fn):
        return None
