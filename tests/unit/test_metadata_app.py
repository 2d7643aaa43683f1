"""The metadata app: flows, frames in and out, timers through the runtime."""
from __future__ import annotations

import random
import socket

import dpkt

from controller.app import APP_IDS, PacketIn, SwitchView
from apps.metadata import MetadataApp, packets
from apps.metadata.tcp import ACK, FIN, PSH, RST, SYN, Limits, Segment
from controller.flow import app_cookie
from test_metadata_documents import PORT2_ID, PORT_ID, USER_DATA, VM_IP, VM_MAC, make_view
from topology.config import new_conf

SERVICE_MAC = "0e:a9:fe:a9:fe:fe"


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


class FakeRuntime:
    def __init__(self):
        self.counts = {}
        self.sent = []
        self.timers = []

    def count(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def send_packet(self, dpid, port, data):
        self.sent.append((dpid, port, data))

    def call_later(self, seconds, fn):
        self.timers.append((seconds, fn))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_app(**limits):
    clock = Clock()
    app = MetadataApp(new_conf(), clock=clock, rng=random.Random(3),
                      limits=Limits(**limits) if limits else None)
    rt = FakeRuntime()
    app.bind(rt)
    return app, rt, clock


def sw(view, dpid=1):
    host = view.host_for_dpid(dpid)
    return SwitchView(dpid, host, {"tap" + p["id"][:11]: 10 + i
                                   for i, p in enumerate(view.ports_on_host(host["name"]))})


def tcp_frame(flags, seq=5000, ack=0, payload=b"", src_ip=VM_IP, mss=None, sport=45000,
              dport=80, dst=packets.METADATA_IP, bad_checksum=False):
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535,
                     data=payload)
    if mss:
        t.opts = bytes([2, 4, mss >> 8, mss & 0xFF])
        t.off = 6
    ip = dpkt.ip.IP(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst), p=6, data=t)
    raw = bytes(dpkt.ethernet.Ethernet(src=mac(VM_MAC), dst=b"\xff" * 6, type=0x0800, data=ip))
    if bad_checksum:
        raw = raw[:-1] + bytes([raw[-1] ^ 0xFF]) if payload else raw[:50] + b"\x00\x00" + raw[52:]
    return raw


def pin(view, data, port_id=PORT_ID):
    return PacketIn(1, 10, data, view.ports.get(port_id) if port_id else None, sw(view), view)


def decode(frame):
    eth = dpkt.ethernet.Ethernet(frame)
    return eth, eth.data, eth.data.data


def test_flows_for_a_local_vm_port():
    app, _, _ = make_app()
    view = make_view()
    flows = list(app.port_flows(view, sw(view), view.ports[PORT_ID]))
    assert len(flows) == 2
    cookie = app_cookie(APP_IDS["metadata"], "ports", 5)
    tcp, arp = flows
    assert tcp.table == "services" and tcp.cookie == cookie and arp.cookie == cookie
    assert dict(tcp.match) == {"reg6": 5, "eth_type": 0x0800, "ip_proto": 6,
                               "ipv4_dst": "169.254.169.254", "tcp_dst": 80}
    assert dict(arp.match) == {"reg6": 5, "eth_type": 0x0806, "arp_op": 1,
                               "arp_tpa": "169.254.169.254"}
    assert tcp.instructions == (("apply", ("controller", 5)),)
    assert arp.priority > 100                                  # above the ARP proxy
    # a port bound to another host gets none here
    assert list(app.port_flows(view, sw(view), view.ports[PORT2_ID])) == []


def test_arp_for_the_metadata_address_is_answered_with_the_service_mac():
    app, rt, _ = make_app()
    view = make_view()
    a = dpkt.arp.ARP(op=1, sha=mac(VM_MAC), spa=socket.inet_aton(VM_IP), tha=b"\0" * 6,
                     tpa=socket.inet_aton("169.254.169.254"))
    req = bytes(dpkt.ethernet.Ethernet(src=mac(VM_MAC), dst=b"\xff" * 6, type=0x0806, data=a))
    (out,) = app.packet_in(pin(view, req))
    eth = dpkt.ethernet.Ethernet(out.data)
    assert out.port == 10 and eth.src == mac(SERVICE_MAC) and eth.dst == mac(VM_MAC)
    assert eth.data.op == 2 and eth.data.sha == mac(SERVICE_MAC)
    assert eth.data.spa == socket.inet_aton("169.254.169.254")
    assert eth.data.tpa == socket.inet_aton(VM_IP)
    spoof = dpkt.arp.ARP(op=1, sha=mac(VM_MAC), spa=socket.inet_aton("10.0.0.99"),
                         tha=b"\0" * 6, tpa=socket.inet_aton("169.254.169.254"))
    frame = bytes(dpkt.ethernet.Ethernet(src=mac(VM_MAC), dst=b"\xff" * 6, type=0x0806, data=spoof))
    assert list(app.packet_in(pin(view, frame))) == []
    assert rt.counts["drop.arp_spoofed_sender"] == 1


def fetch(app, view, request: bytes, sport=45000):
    """Handshake, send request, ACK everything: the bytes of the answer."""
    (synack,) = app.packet_in(pin(view, tcp_frame(SYN, seq=5000, mss=1200, sport=sport)))
    eth, ip, t = decode(synack.data)
    assert eth.src == mac(SERVICE_MAC) and eth.dst == mac(VM_MAC)
    assert socket.inet_ntoa(ip.src) == "169.254.169.254" and socket.inet_ntoa(ip.dst) == VM_IP
    assert t.flags == SYN | ACK and t.ack == 5001 and t.dport == sport
    assert dpkt.tcp.parse_opts(t.opts)[0] == (2, (1460).to_bytes(2, "big"))
    rcv = (t.seq + 1) % 2**32
    assert list(app.packet_in(pin(view, tcp_frame(ACK, seq=5001, ack=rcv, sport=sport)))) == []
    outs = list(app.packet_in(pin(view, tcp_frame(ACK | PSH, seq=5001, ack=rcv,
                                                  payload=request, sport=sport))))
    got = b""
    for _ in range(100):
        if not outs:
            break
        for o in outs:
            _, ip, t = decode(o.data)
            assert len(t.data) <= 1200
            if t.seq == rcv:
                got += t.data
                rcv = (rcv + len(t.data)) % 2**32
        outs = list(app.packet_in(pin(view, tcp_frame(ACK, seq=5001 + len(request), ack=rcv,
                                                      sport=sport))))
    return got


def test_fetch_user_data_through_frames():
    app, rt, _ = make_app()
    view = make_view()
    got = fetch(app, view, b"GET /latest/user-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n" + USER_DATA)
    assert rt.counts["tcp.accepted"] == 1 and rt.counts["http.status_200"] == 1


def test_large_answer_is_segmented_by_the_peer_mss():
    big = bytes(range(256)) * 240                               # 60 KiB
    app, _, _ = make_app()
    view = make_view(user_data=big)
    got = fetch(app, view, b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.endswith(b"\r\n\r\n" + big)


def test_source_must_be_one_of_the_ports_addresses():
    app, rt, _ = make_app()
    view = make_view()
    assert list(app.packet_in(pin(view, tcp_frame(SYN, src_ip="10.0.0.6")))) == []
    assert rt.counts["drop.spoofed_source"] == 1
    assert len(app.stack) == 0


def test_unknown_port_and_garbage_are_dropped_and_counted():
    app, rt, _ = make_app()
    view = make_view()
    assert list(app.packet_in(pin(view, tcp_frame(SYN), port_id=None))) == []
    assert rt.counts["drop.unknown_port"] == 1
    for junk in (b"", b"\x00" * 13, b"\xff" * 60, tcp_frame(SYN)[:30]):
        assert list(app.packet_in(pin(view, junk))) == []
    assert list(app.packet_in(pin(view, tcp_frame(ACK | PSH, payload=b"abc", bad_checksum=True)))) == []
    assert rt.counts["drop.tcp_checksum"] == 1
    assert list(app.packet_in(pin(view, tcp_frame(SYN, dport=81)))) == []
    assert rt.counts["drop.not_metadata"] == 1
    assert sum(v for k, v in rt.counts.items() if k.startswith("drop.")) == 7


def test_stranger_segment_gets_rst_frame():
    app, rt, _ = make_app()
    view = make_view()
    (out,) = app.packet_in(pin(view, tcp_frame(ACK, seq=1, ack=777)))
    _, _, t = decode(out.data)
    assert t.flags == RST and t.seq == 777
    assert rt.counts["tcp.rst_unknown"] == 1


def test_retransmission_goes_through_runtime_timers():
    app, rt, clock = make_app()
    view = make_view()
    (synack,) = app.packet_in(pin(view, tcp_frame(SYN, seq=5000, mss=1460)))
    assert rt.timers and rt.timers[-1][0] > 0
    seconds, fn = rt.timers[-1]
    clock.t += seconds
    fn()                                                        # SYN-ACK lost: resent
    assert len(rt.sent) == 1 and rt.sent[0][:2] == (1, 10)
    _, _, t = decode(rt.sent[0][2])
    assert t.flags == SYN | ACK and t.seq == decode(synack.data)[2].seq
    assert len(rt.timers) == 2                                  # the next wake-up is asked for


def test_port_with_no_instance_gets_404():
    app, _, _ = make_app()
    view = make_view()
    view.ports[PORT_ID]["device_id"] = ""
    got = fetch(app, view, b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 404")


def test_fin_from_vm_closes_cleanly():
    app, _, _ = make_app()
    view = make_view()
    (synack,) = app.packet_in(pin(view, tcp_frame(SYN, seq=5000)))
    rcv = (decode(synack.data)[2].seq + 1) % 2**32
    app.packet_in(pin(view, tcp_frame(ACK, seq=5001, ack=rcv)))
    (fin,) = app.packet_in(pin(view, tcp_frame(ACK | FIN, seq=5001, ack=rcv)))
    t = decode(fin.data)[2]
    assert t.flags & FIN and t.ack == 5002
    app.packet_in(pin(view, tcp_frame(ACK, seq=5002, ack=(rcv + 1) % 2**32)))
    assert len(app.stack) == 0


def test_build_tcp_round_trips_through_parse():
    seg = Segment(80, 1234, 10, 20, ACK | PSH, 999, b"abc")
    frame = packets.build_tcp(mac(SERVICE_MAC), mac(VM_MAC), VM_IP, seg)
    # parse() accepts only frames to the metadata address; check the checksums by hand
    eth = dpkt.ethernet.Ethernet(frame)
    raw = bytes(eth.data)
    assert dpkt.in_cksum(raw[:20]) == 0
    pseudo = raw[12:20] + bytes([0, 6]) + len(raw[20:]).to_bytes(2, "big")
    assert dpkt.in_cksum(pseudo + raw[20:]) == 0
    assert eth.data.data.data == b"abc" and eth.data.df
