"""DHCP server: message handling, options, addressing, flows and the app."""
from __future__ import annotations

import struct

import netaddr

from apps import dhcp_options as o
from controller.app import APP_IDS
from apps.dhcp import DhcpApp, dhcp_answer
from controller.flow import app_cookie
from dhcp_arp_fixtures import (DHCP_IP, DHCP_MAC, VM_IP, VM_MAC, Counter, dhcp_client, ip, mac,
                               make_view, packet_in, parse_reply, switch)
from topology.config import new_conf

S = o.Settings(lease_time=3600, dns_domain="example.org")


def answer(frame, view=None, port_id="port-vm1-aaaaaaaa"):
    view = view or make_view()
    return dhcp_answer(frame, view.ports.get(port_id) if port_id else None, view, S)


def decode_routes(value: bytes):
    routes, i = [], 0
    while i < len(value):
        width = value[i]
        n = (width + 7) // 8
        dest = value[i + 1:i + 1 + n] + b"\x00" * (4 - n)
        router = value[i + 1 + n:i + 5 + n]
        routes.append((f"{netaddr.IPAddress(int.from_bytes(dest, 'big'))}/{width}",
                       str(netaddr.IPAddress(int.from_bytes(router, "big")))))
        i += 5 + n
    return routes


def test_discover_gets_offer_with_every_option():
    reply, outcome = answer(dhcp_client(1, xid=0xabcdef))
    assert outcome == "offer"
    eth, i, u, d, opts = parse_reply(reply)
    assert eth.src == mac(DHCP_MAC) and eth.dst == mac(VM_MAC)          # unicast: no broadcast flag
    assert i.src == ip(DHCP_IP) and i.dst == ip(VM_IP)
    assert (u.sport, u.dport) == (67, 68)
    assert d.op == 2 and d.xid == 0xabcdef and d.yiaddr == struct.unpack("!I", ip(VM_IP))[0]
    assert d.ciaddr == 0 and bytes(d.chaddr[:6]) == mac(VM_MAC)
    assert opts[53] == b"\x02"
    assert opts[54] == ip(DHCP_IP)
    assert opts[1] == ip("255.255.255.0")
    assert opts[3] == ip("10.0.0.1")
    assert opts[6] == ip("10.0.0.53") + ip("8.8.8.8")
    assert opts[15] == b"example.org"
    assert opts[12] == b"vm-one"
    assert opts[26] == struct.pack("!H", 1450)
    assert struct.unpack("!I", opts[51])[0] == 3600
    assert struct.unpack("!I", opts[58])[0] == 1800
    assert struct.unpack("!I", opts[59])[0] == 3150
    assert decode_routes(opts[121]) == [("169.254.169.254/32", DHCP_IP), ("0.0.0.0/0", "10.0.0.1")]


def test_checksums_are_right():
    import dpkt
    reply, _ = answer(dhcp_client(1))
    eth = dpkt.ethernet.Ethernet(reply)
    i = eth.data
    claimed_ip, claimed_udp = i.sum, i.data.sum
    i.sum = 0
    i.data.sum = 0
    again = dpkt.ethernet.Ethernet(bytes(eth))
    assert (again.data.sum, again.data.data.sum) == (claimed_ip, claimed_udp)
    assert i.len == len(reply) - 14 and i.data.ulen == i.len - 20


def test_host_routes_no_gateway_and_hostname_from_port():
    view = make_view(gateway=None, dns=(), hostname=None, mtu=None,
                     host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},
                                  {"destination": "fd00::/8", "nexthop": "fd00::1"}])
    reply, _ = answer(dhcp_client(1), view)
    opts = parse_reply(reply)[4]
    assert 3 not in opts and 6 not in opts and 26 not in opts
    assert opts[12] == b"host-10-0-0-5"
    assert decode_routes(opts[121]) == [("192.168.0.0/16", "10.0.0.254"),
                                        ("169.254.169.254/32", DHCP_IP)]


def test_hostname_fallbacks():
    port = {"dns_name": "web1.example.org"}
    assert o.hostname_for(port, {"hostname": "db.cloud"}, "10.0.0.5") == "db"
    assert o.hostname_for(port, None, "10.0.0.5") == "web1"
    assert o.hostname_for({"dns_name": ""}, {"hostname": "\u00e9"}, "10.0.0.5") == "host-10-0-0-5"


def test_host_route_for_metadata_or_default_replaces_ours():
    view = make_view(host_routes=[{"destination": "169.254.169.254/32", "nexthop": "10.0.0.3"},
                                  {"destination": "0.0.0.0/0", "nexthop": "10.0.0.4"}])
    opts = parse_reply(answer(dhcp_client(1), view)[0])[4]
    assert decode_routes(opts[121]) == [("169.254.169.254/32", "10.0.0.3"), ("0.0.0.0/0", "10.0.0.4")]


def test_broadcast_flag_is_honoured():
    eth, i, *_ = parse_reply(answer(dhcp_client(1, flags=0x8000))[0])
    assert eth.dst == b"\xff" * 6 and i.dst == b"\xff" * 4


def test_request_selecting_ack_and_nak_and_other_server():
    sel = [(54, ip(DHCP_IP)), (50, ip(VM_IP))]
    reply, outcome = answer(dhcp_client(3, options=sel))
    assert outcome == "ack"
    _, _, _, d, opts = parse_reply(reply)
    assert opts[53] == b"\x05" and d.yiaddr == struct.unpack("!I", ip(VM_IP))[0]
    reply, outcome = answer(dhcp_client(3, options=[(54, ip(DHCP_IP)), (50, ip("10.0.0.77"))]))
    assert outcome == "nak"
    eth, i, _, d, opts = parse_reply(reply)
    assert opts[53] == b"\x06" and opts[54] == ip(DHCP_IP) and d.yiaddr == 0
    assert 51 not in opts and 1 not in opts
    assert eth.dst == b"\xff" * 6 and i.dst == b"\xff" * 4
    assert answer(dhcp_client(3, options=[(54, ip("10.0.0.3")), (50, ip(VM_IP))])) == \
        (None, "other_server")


def test_request_init_reboot():
    assert answer(dhcp_client(3, options=[(50, ip(VM_IP))]))[1] == "ack"
    assert answer(dhcp_client(3, options=[(50, ip("192.168.1.5"))]))[1] == "nak"


def test_request_renewing_is_unicast_and_acked_to_ciaddr():
    frame = dhcp_client(3, ciaddr=VM_IP, src_ip=VM_IP, dst_ip=DHCP_IP, dst_mac=DHCP_MAC)
    reply, outcome = answer(frame)
    assert outcome == "ack"
    eth, i, _, d, opts = parse_reply(reply)
    assert eth.dst == mac(VM_MAC) and i.dst == ip(VM_IP)
    assert d.ciaddr == struct.unpack("!I", ip(VM_IP))[0] and 51 in opts
    # rebinding: broadcast, ciaddr set
    assert answer(dhcp_client(3, ciaddr=VM_IP, src_ip=VM_IP))[1] == "ack"
    assert answer(dhcp_client(3, ciaddr="10.0.0.77", src_ip="10.0.0.77"))[1] == "nak"
    # neither ciaddr nor requested address nor server id: not a valid REQUEST
    assert answer(dhcp_client(3)) == (None, "malformed")


def test_release_decline_inform():
    assert answer(dhcp_client(7, ciaddr=VM_IP)) == (None, "release")
    assert answer(dhcp_client(4, options=[(50, ip(VM_IP)), (54, ip(DHCP_IP))])) == (None, "decline")
    reply, outcome = answer(dhcp_client(8, ciaddr=VM_IP, src_ip=VM_IP))
    assert outcome == "inform"
    eth, i, _, d, opts = parse_reply(reply)
    assert opts[53] == b"\x05" and d.yiaddr == 0 and i.dst == ip(VM_IP)
    assert 51 not in opts and 58 not in opts and 59 not in opts
    assert opts[1] == ip("255.255.255.0") and 121 in opts
    assert answer(dhcp_client(2)) == (None, "unexpected_type")


def test_unknown_clients_get_nothing():
    assert answer(dhcp_client(1, chaddr="fa:16:3e:12:34:56")) == (None, "unknown_client")
    assert answer(dhcp_client(1), port_id=None) == (None, "unknown_client")
    assert answer(dhcp_client(1), make_view(enable_dhcp=False)) == (None, "no_address")
    view = make_view()
    del view.docs["ports"]["port-dhcp-cccccc"]
    view._reindex()
    assert answer(dhcp_client(1), view) == (None, "no_server")


def test_malformed_and_not_dhcp():
    good = dhcp_client(1)
    assert answer(good[:100]) == (None, "malformed")
    assert answer(dhcp_client(1, sport=67, dport=68)) == (None, "malformed")
    no_type = bytearray(good)
    no_type[14 + 28 + 240] = 0                     # option 53 -> pad, its length byte -> pad
    no_type[14 + 28 + 241] = 0
    assert answer(bytes(no_type)) == (None, "malformed")
    truncated_option = good[:14 + 28 + 240] + bytes([53, 5, 1])
    assert answer(truncated_option) == (None, "malformed")


def test_reply_fits_client_max_size():
    many = [{"destination": f"172.{i}.0.0/16", "nexthop": "10.0.0.254"} for i in range(16, 40)]
    view = make_view(host_routes=many, hostname="h" * 63)
    reply, _ = answer(dhcp_client(1), view)
    assert len(reply) - 14 <= 576
    opts = parse_reply(reply)[4]
    assert 121 in opts and 1 in opts and 51 in opts
    big, _ = answer(dhcp_client(1, options=[(57, struct.pack("!H", 1500))]), view)
    assert 12 in parse_reply(big)[4] and len(big) > len(reply)


def test_long_option_split_and_rejoined():
    packed = o.pack_options([(121, bytes(300))])
    assert packed[0] == 121 and packed[1] == 255 and packed[257] == 121 and packed[258] == 45
    assert o.parse_options(packed) == {121: bytes(300)}


def test_flows():
    view = make_view()
    app = DhcpApp()
    sw = switch(view, 1)
    (client,) = app.port_flows(view, sw, view.ports["port-vm1-aaaaaaaa"])
    assert client.table == "services" and client.cookie == app_cookie(APP_IDS["dhcp"], "ports", 5)
    assert dict(client.match) == {"reg6": 5, "eth_type": 0x0800, "ip_proto": 17,
                                  "udp_src": 68, "udp_dst": 67}
    assert client.instructions == (("apply", ("controller", 5)),)
    assert list(app.port_flows(view, sw, view.ports["port-vm2-bbbbbbbb"])) == []
    assert list(app.port_flows(view, sw, view.ports["port-dhcp-cccccc"])) == []
    (drop,) = app.switch_flows(view, sw)
    assert dict(drop.match) == {"eth_type": 0x0800, "ip_proto": 17, "udp_src": 67}
    assert drop.instructions == () and drop.table == "services"
    from controller.app import SwitchView
    assert list(app.switch_flows(view, SwitchView(dpid=9, host=None))) == []


def test_app_uses_conf_and_counts():
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override("lease_time", 600, group="dhcp")
    conf.set_override("dns_domain", "cloud.test", group="dhcp")
    app = DhcpApp(conf)
    rt = Counter()
    app.bind(rt)
    view = make_view()
    (out,) = app.packet_in(packet_in(view, dhcp_client(1), in_port=4))
    assert out.port == 4
    opts = parse_reply(out.data)[4]
    assert struct.unpack("!I", opts[51])[0] == 600 and opts[15] == b"cloud.test"
    assert list(app.packet_in(packet_in(view, dhcp_client(4, options=[(50, ip(VM_IP))])))) == []
    assert list(app.packet_in(packet_in(view, b"junk"))) == []
    assert rt.counts == {"offer": 1, "decline": 1, "malformed": 1}
