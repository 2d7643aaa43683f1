"""Property-based fuzzing of the ARP and DHCP handlers: random, truncated and
mutated packets never raise, and whatever is answered is well formed."""
from __future__ import annotations

import dpkt
from hypothesis import HealthCheck, given, settings, strategies as st

from apps import dhcp_options as o
from apps.arp import ArpApp
from apps.dhcp import DhcpApp
from dhcp_arp_fixtures import (DHCP_IP, VM2_IP, VM_IP, VM_MAC, Counter, arp_request, dhcp_client,
                               ip, make_view, packet_in)

VIEW = make_view()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(app_cls, data, port_id="port-vm1-aaaaaaaa"):
    app = app_cls()
    rt = Counter()
    app.bind(rt)
    outs = list(app.packet_in(packet_in(VIEW, data, port_id=port_id)))
    assert sum(rt.counts.values()) == 1          # every packet is counted exactly once
    for out in outs:
        assert out.port == 7
        eth = dpkt.ethernet.Ethernet(out.data)
        assert eth.src != b"\xff" * 6
    return outs, rt.counts


SEEDS_ARP = [arp_request(target_ip=VM2_IP), arp_request(target_ip=DHCP_IP),
             arp_request(target_ip="10.0.0.77")]
SEEDS_DHCP = [dhcp_client(1), dhcp_client(3, options=[(54, ip(DHCP_IP)), (50, ip(VM_IP))]),
              dhcp_client(3, ciaddr=VM_IP, src_ip=VM_IP), dhcp_client(8, ciaddr=VM_IP)]


def mutate(seed: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed[:cut])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    return bytes(data)


flips = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8)


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(["port-vm1-aaaaaaaa", None]))
def test_random_bytes_never_raise(data, port_id):
    for cls in (ArpApp, DhcpApp):
        run(cls, data, port_id)


@FUZZ
@given(st.sampled_from(SEEDS_ARP), st.integers(0, 60), flips)
def test_truncated_and_mutated_arp(seed, cut, changes):
    run(ArpApp, mutate(seed, cut, changes))


@FUZZ
@given(st.sampled_from(SEEDS_DHCP), st.integers(0, 700), flips)
def test_truncated_and_mutated_dhcp(seed, cut, changes):
    run(DhcpApp, mutate(seed, cut, changes))


options = st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=300)), max_size=12)


@FUZZ
@given(st.integers(1, 12), options, st.integers(0, 0xFFFF),
       st.sampled_from(["0.0.0.0", VM_IP, "10.0.0.77"]))
def test_well_formed_dhcp_with_random_options(msg_type, opts, flags, ciaddr):
    frame = dhcp_client(msg_type, flags=flags, ciaddr=ciaddr,
                        options=[(c, v[:255]) for c, v in opts])
    outs, counts = run(DhcpApp, frame)
    for out in outs:
        payload = bytes(dpkt.ethernet.Ethernet(out.data).data.data.data)
        parsed = o.parse_options(payload[240:])
        assert parsed is not None and parsed[o.OPT_MSG_TYPE][0] in (2, 5, 6)
        assert len(out.data) - 14 <= 1500


@FUZZ
@given(st.binary(max_size=400))
def test_option_parser_total(data):
    parsed = o.parse_options(data)
    assert parsed is None or isinstance(parsed, dict)


@FUZZ
@given(st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=600)), max_size=6))
def test_option_pack_parse_round_trip(opts):
    merged: dict[int, bytes] = {}
    for code, value in opts:
        merged[code] = merged.get(code, b"") + value
    assert o.parse_options(o.pack_options(opts)) == merged
