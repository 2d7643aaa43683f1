"""ICMP time-exceeded for routed packets whose TTL expires (apps/dvr.py,
apps/dvr_icmp.py): the flows send them to the controller through the
sender's meter, and the packet-in answers from the sender's gateway.

The cloud is test_dvr_behaviour's: router r1 joins na 10.1.0.0/24 and nb
10.2.0.0/24, a static route 192.168.50.0/24 via the appliance 10.2.0.50.
"""
from __future__ import annotations

import ipaddress
import struct

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_dvr_behaviour import cloud, gw, ping, switch

from apps import dvr_icmp
from apps.dvr import DvrApp
from controller.app import PacketIn


@pytest.fixture
def view():
    return cloud()


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def probe(view, src="a1", dst="10.2.0.12", ttl=1, *, to=None, proto="udp", frag=0,
          payload=b"SUPERMAN" * 4) -> bytes:
    """A traceroute-style UDP probe (or an ICMP echo) from a VM to its gateway's MAC."""
    port = view.ports[src]
    if proto == "udp":
        body = dpkt.udp.UDP(sport=40000, dport=33434, data=payload)
        p = dpkt.ip.IP_PROTO_UDP
    else:
        body = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=payload))
        p = dpkt.ip.IP_PROTO_ICMP
    ip = dpkt.ip.IP(src=ipaddress.IPv4Address(port["fixed_ips"][0]["ip_address"]).packed,
                    dst=ipaddress.IPv4Address(dst).packed, p=p, ttl=ttl, id=0x1234,
                    data=body)
    eth = dpkt.ethernet.Ethernet(src=mac(port["mac_address"]),
                                 dst=mac(to or gw(view, "r1", port["network_id"])),
                                 type=0x0800, data=ip)
    frame = bytearray(bytes(eth))
    if frag:     # the fragment offset field, in 8-byte units (checksum not checked)
        frame[20:22] = struct.pack("!H", frag)
    return bytes(frame)


def answer(view, frame, src="a1"):
    return DvrApp().answer(view, view.ports[src], frame)


# -- the flows ---------------------------------------------------------------
@pytest.mark.parametrize("ttl", [0, 1])
def test_an_expiring_routed_packet_goes_to_the_controller_through_the_senders_meter(view, ttl):
    h1 = switch(view, "h1")
    assert h1.problems() == []
    t = ping(h1, view, "a1", "10.2.0.11", nw_ttl=ttl)
    assert not t.outputs
    [pin] = t.controller
    assert pin.meter == view.ports["a1"]["_key"] and pin.table == "routing"


def test_ttl_2_is_routed_and_leaves_with_ttl_1(view):
    h1 = switch(view, "h1")
    t = ping(h1, view, "a1", "10.2.0.11", nw_ttl=2)
    assert not t.controller and t.ports == [h1.ofport(view.ports["b1"])]
    assert t.outputs[0].packet["nw_ttl"] == "1"


def test_switched_packets_with_ttl_1_are_not_the_routers(view):
    h1 = switch(view, "h1")
    b1 = view.ports["b1"]
    t = h1.send(b1, eth_dst=view.ports["b2"]["mac_address"], ipv4_dst="10.2.0.12", nw_ttl=1)
    assert not t.controller and [o.port for o in t.outputs] == [100]


def test_the_ttl_flows_are_the_senders_and_only_on_its_host(view):
    h1, h2 = switch(view, "h1"), switch(view, "h2")
    # a1 is on h1: h2 has no TTL flow for it (it never routes a1's packets)
    key = view.ports["a1"]["_key"]
    mine = [f for f in h1.flows if f.table == "routing" and ("reg6", key) in f.match]
    assert len(mine) == 2 and {dict(f.match)["nw_ttl"] for f in mine} == {0, 1}
    assert not [f for f in h2.flows if f.table == "routing" and ("reg6", key) in f.match]


# -- the packet-in -------------------------------------------------------------
def test_the_reply_is_time_exceeded_from_the_senders_gateway_quoting_header_and_8_bytes(view):
    frame = probe(view, ttl=1)
    reply, outcome = answer(view, frame)
    assert outcome == "time_exceeded"
    eth = dpkt.ethernet.Ethernet(reply)
    a1 = view.ports["a1"]
    assert eth.src == mac(gw(view, "r1", "na")) and eth.dst == mac(a1["mac_address"])
    ip = eth.data
    assert isinstance(ip, dpkt.ip.IP)
    assert ipaddress.IPv4Address(ip.src) == ipaddress.IPv4Address("10.1.0.1")   # na's gateway
    assert ipaddress.IPv4Address(ip.dst) == ipaddress.IPv4Address("10.1.0.11")
    assert ip.p == dpkt.ip.IP_PROTO_ICMP and ip.ttl == 64
    raw_ip = reply[14:]
    assert dpkt.in_cksum(raw_ip[:20]) == 0
    icmp = raw_ip[20:]
    assert icmp[0] == 11 and icmp[1] == 0 and dpkt.in_cksum(icmp) == 0
    assert icmp[4:8] == b"\0\0\0\0"                     # unused
    original = frame[14:]
    assert icmp[8:] == original[:20 + 8]               # IP header + 64 bits of data
    assert struct.unpack("!HH", icmp[8 + 20:8 + 24]) == (40000, 33434)   # the UDP ports


def test_a_static_route_destination_and_ttl_0_are_answered_too(view):
    assert answer(view, probe(view, dst="192.168.50.7"))[1] == "time_exceeded"
    assert answer(view, probe(view, ttl=0))[1] == "time_exceeded"
    reply, _ = answer(view, probe(view, src="b1", dst="10.1.0.11"), src="b1")
    assert ipaddress.IPv4Address(dpkt.ethernet.Ethernet(reply).data.src) == \
        ipaddress.IPv4Address("10.2.0.1")


def test_a_short_packet_is_quoted_as_it_was(view):
    frame = probe(view, proto="icmp", payload=b"")
    reply, outcome = answer(view, frame)
    assert outcome == "time_exceeded"
    assert reply[14 + 20 + 8:] == frame[14:14 + 20 + 8]    # 20 + the 8-byte echo header


@pytest.mark.parametrize("frame_args, outcome", [
    (dict(dst="10.1.0.1"), "not_routed"),          # the gateway itself
    (dict(dst="8.8.8.8"), "not_routed"),           # no route
    (dict(dst="10.3.0.11"), "not_routed"),         # a subnet on no interface of r1
    (dict(ttl=2), "ttl_not_expired"),
    (dict(frag=5), "fragment"),
    (dict(dst="224.0.0.5"), "bad_destination"),
    (dict(to="ff:ff:ff:ff:ff:ff"), "bad_destination"),
    (dict(to="fa:16:3e:99:99:99"), "not_a_gateway"),
])
def test_what_is_not_answered(view, frame_args, outcome):
    assert answer(view, probe(view, **frame_args)) == (None, outcome)


def test_an_icmp_error_never_gets_one(view):
    frame = bytearray(probe(view, proto="icmp"))
    frame[14 + 20] = 3      # destination unreachable
    assert answer(view, bytes(frame)) == (None, "icmp_error")


@pytest.mark.parametrize("frame", [
    b"", b"\x00" * 13, b"\x00" * 14,
    bytes.fromhex("fa163e000001" "fa163e000002" "0806") + b"\x00" * 28,     # ARP
    bytes.fromhex("fa163e000001" "fa163e000002" "0800") + b"\x45\x00",      # truncated IP
    bytes.fromhex("fa163e000001" "fa163e000002" "0800") + b"\x65" + b"\x00" * 19,  # IPv6 nibble
    bytes.fromhex("fa163e000001" "fa163e000002" "0800") + b"\x43" + b"\x00" * 19,  # ihl 3
    bytes.fromhex("fa163e000001" "fa163e000002" "8100" "0001" "0800") + b"\x45" + b"\0" * 19,
])
def test_malformed_frames_are_dropped_and_counted(view, frame):
    counts = []

    class Runtime:
        def count(self, name, n=1):
            counts.append(name)

    app = DvrApp()
    app.bind(Runtime())
    port = view.ports["a1"]
    pin = PacketIn(dpid=0xA1, in_port=1, data=frame, port=port, switch=None, view=view)
    assert list(app.packet_in(pin)) == []
    assert counts == ["malformed"]


def test_a_packet_in_answers_out_of_the_port_it_came_in_on_and_counts(view):
    counts = []

    class Runtime:
        def count(self, name, n=1):
            counts.append(name)

    app = DvrApp()
    app.bind(Runtime())
    pin = PacketIn(dpid=0xA1, in_port=7, data=probe(view), port=view.ports["a1"], switch=None,
                   view=view)
    [out] = app.packet_in(pin)
    assert out.port == 7 and out.data == answer(view, probe(view))[0]
    assert counts == ["time_exceeded"]
    pin = PacketIn(dpid=0xA1, in_port=7, data=probe(view), port=None, switch=None, view=view)
    assert list(app.packet_in(pin)) == [] and counts[-1] == "unknown_port"


_FUZZ_VIEW = cloud()
_FUZZ_HEAD = probe(_FUZZ_VIEW)[:34]     # Ethernet + IP header of a probe


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_any_bytes_give_a_reply_or_an_outcome_never_an_exception(data):
    view, head = _FUZZ_VIEW, _FUZZ_HEAD
    for frame in (data, head + data, head[:14] + data):
        reply, outcome = answer(view, frame)
        assert (reply is None) == (outcome != "time_exceeded")
        if reply is not None:
            assert dvr_icmp.parse(reply)[1] == "ttl_not_expired"   # the reply's TTL is 64
