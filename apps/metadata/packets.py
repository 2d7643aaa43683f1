"""Frames in and out of the metadata service (dpkt), checked strictly.

parse() turns a packet-in's bytes into an ARP request for the metadata
address or a TCP segment to it, or None (with the reason) for anything else:
a frame that is short, tagged, fragmented, has bad lengths or checksums is
refused, never raised on. The build_* functions make the answers: frames
from 169.254.169.254 with the service MAC (the one ARP for
169.254.169.254 is answered with).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Union

import dpkt

from apps.metadata.tcp import Segment

METADATA_IP = "169.254.169.254"
METADATA_IP_BYTES = socket.inet_aton(METADATA_IP)
METADATA_PORT = 80
ETH_IP = 0x0800
ETH_ARP = 0x0806
MIN_IP_HL = 20


@dataclass(frozen=True)
class ArpRequest:
    src_mac: bytes
    sender_ip: str


@dataclass(frozen=True)
class TcpPacket:
    src_mac: bytes
    src_ip: str
    segment: Segment


@dataclass(frozen=True)
class Refused:
    reason: str


Parsed = Union[ArpRequest, TcpPacket, Refused]


def _cksum_ok(data: bytes) -> bool:
    return dpkt.in_cksum(data) == 0


def parse(data: bytes) -> Parsed:
    if len(data) < 14:
        return Refused("short")
    ethertype = struct.unpack_from("!H", data, 12)[0]
    if ethertype == ETH_ARP:
        return _parse_arp(data)
    if ethertype != ETH_IP:
        return Refused("ethertype")
    raw = data[14:]
    if len(raw) < MIN_IP_HL:
        return Refused("short")
    try:
        ip = dpkt.ip.IP(raw)
    except (dpkt.dpkt.Error, struct.error, ValueError, IndexError):
        return Refused("ip_parse")
    hl = ip.hl * 4
    if ip.v != 4 or hl < MIN_IP_HL or ip.len < hl or ip.len > len(raw):
        return Refused("ip_header")
    if not _cksum_ok(raw[:hl]):
        return Refused("ip_checksum")
    if ip.mf or ip.offset:
        return Refused("fragment")
    if ip.p != dpkt.ip.IP_PROTO_TCP or ip.dst != METADATA_IP_BYTES:
        return Refused("not_metadata")
    seg_bytes = raw[hl:ip.len]
    if len(seg_bytes) < 20:
        return Refused("short")
    pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, dpkt.ip.IP_PROTO_TCP, len(seg_bytes))
    if not _cksum_ok(pseudo + seg_bytes):
        return Refused("tcp_checksum")
    try:
        tcp = dpkt.tcp.TCP(seg_bytes)
    except (dpkt.dpkt.Error, struct.error, ValueError, IndexError):
        return Refused("tcp_parse")
    off = tcp.off * 4
    if off < 20 or off > len(seg_bytes):
        return Refused("tcp_header")
    if tcp.dport != METADATA_PORT:
        return Refused("not_metadata")
    mss = None
    try:
        for opt, val in dpkt.tcp.parse_opts(tcp.opts):
            if opt == dpkt.tcp.TCP_OPT_MSS and len(val) == 2:
                mss = struct.unpack("!H", val)[0] or None
    except (dpkt.dpkt.Error, struct.error, ValueError, IndexError):
        return Refused("tcp_options")
    seg = Segment(tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags & 0x3F, tcp.win,
                  bytes(seg_bytes[off:]), mss)
    return TcpPacket(data[6:12], socket.inet_ntoa(ip.src), seg)


def _parse_arp(data: bytes) -> Parsed:
    try:
        arp = dpkt.arp.ARP(data[14:])
    except (dpkt.dpkt.Error, struct.error, ValueError, IndexError):
        return Refused("arp_parse")
    if (arp.hrd != dpkt.arp.ARP_HRD_ETH or arp.pro != ETH_IP or arp.hln != 6 or arp.pln != 4
            or len(arp.sha) != 6 or len(arp.spa) != 4 or len(arp.tpa) != 4):
        return Refused("arp_format")
    if arp.op != dpkt.arp.ARP_OP_REQUEST or arp.tpa != METADATA_IP_BYTES:
        return Refused("not_metadata")
    return ArpRequest(bytes(arp.sha), socket.inet_ntoa(arp.spa))


def build_arp_reply(service_mac: bytes, vm_mac: bytes, vm_ip: str) -> bytes:
    arp = dpkt.arp.ARP(hrd=dpkt.arp.ARP_HRD_ETH, pro=ETH_IP, hln=6, pln=4,
                       op=dpkt.arp.ARP_OP_REPLY, sha=service_mac, spa=METADATA_IP_BYTES,
                       tha=vm_mac, tpa=socket.inet_aton(vm_ip))
    return bytes(dpkt.ethernet.Ethernet(src=service_mac, dst=vm_mac, type=ETH_ARP, data=arp))


def build_tcp(service_mac: bytes, vm_mac: bytes, vm_ip: str, seg: Segment) -> bytes:
    tcp = dpkt.tcp.TCP(sport=seg.src_port, dport=seg.dst_port, seq=seg.seq, ack=seg.ack,
                       flags=seg.flags, win=seg.window, data=seg.payload)
    if seg.mss is not None:
        tcp.opts = struct.pack("!BBH", dpkt.tcp.TCP_OPT_MSS, 4, seg.mss)
        tcp.off = 6
    ip = dpkt.ip.IP(src=METADATA_IP_BYTES, dst=socket.inet_aton(vm_ip), p=dpkt.ip.IP_PROTO_TCP,
                    ttl=64, df=1, data=tcp)
    return bytes(dpkt.ethernet.Ethernet(src=service_mac, dst=vm_mac, type=ETH_IP, data=ip))
