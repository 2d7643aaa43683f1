"""Garbage in, no exception out, and state stays bounded (hypothesis)."""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.metadata import packets
from apps.metadata.documents import Context, serve
from apps.metadata.http import REASONS, HttpSession, ParseError, Request, parse_request
from apps.metadata.tcp import ACK, PSH, RST, SYN, Limits, Segment, TcpStack, seq_add
from test_metadata_app import make_app, pin, tcp_frame
from test_metadata_documents import PORT_ID, TOKENS, make_view

LIMITS = Limits(max_connections=6, max_per_scope=3, idle_timeout=5.0, rcv_buf=2048,
                snd_limit=8192, rto_initial=0.5, max_retries=4, time_wait=1.0)
VIEW = make_view(user_data=b"u" * 20000)


def serve_view(req: Request):
    port = VIEW.ports[PORT_ID]
    return serve(req, Context(port, VIEW.instances["inst-1"], VIEW, TOKENS, 0.0))


REQUESTS = [b"GET /latest/meta-data/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /latest/user-data HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /openstack/latest/meta_data.json HTTP/1.0\r\n\r\n",
            b"PUT /latest/api/token HTTP/1.1\r\nHost: a\r\n"
            b"X-aws-ec2-metadata-token-ttl-seconds: 30\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"]

flags = st.integers(0, 0x3F)
payloads = st.one_of(st.just(b""), st.sampled_from(REQUESTS),
                     st.binary(max_size=300),
                     st.sampled_from(REQUESTS).map(lambda r: r[: len(r) // 2]))
# One step: (client port, flag bits, seq delta, ack delta, window, payload, mss, time step)
steps = st.tuples(st.integers(0, 4), flags, st.integers(-3000, 3000), st.integers(-3000, 30000),
                  st.sampled_from([0, 1, 100, 65535]), payloads,
                  st.one_of(st.none(), st.integers(0, 0xFFFF)),
                  st.sampled_from([0.0, 0.0, 0.01, 0.3, 1.0, 6.0]))


def check_bounds(stack: TcpStack):
    assert len(stack.conns) <= LIMITS.max_connections
    assert all(n <= LIMITS.max_per_scope for n in stack.per_scope.values())
    assert sum(stack.per_scope.values()) == len(stack.conns)
    assert len(stack.time_wait) <= LIMITS.max_connections
    assert len(stack._heap) <= 4 * len(stack.conns) + 64 + 1
    for c in stack.conns.values():
        assert len(c.inbuf) <= LIMITS.rcv_buf
        assert len(c.sndbuf) <= LIMITS.snd_limit + 30000        # one answer past the limit


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=60), st.integers(0, 3))
def test_random_segments_near_live_connections(script, scopes):
    stack = TcpStack(lambda ctx: HttpSession(serve_view), LIMITS, rng=random.Random(5))
    now = 0.0
    client_isn = {p: 1000 * (p + 1) for p in range(5)}
    server_isn = {}
    for port, fl, dseq, dack, win, payload, mss, dt in script:
        now += dt
        for _, s in stack.on_timer(now):
            assert s.flags & (RST | ACK)
        base_ack = server_isn.get(port, 0)
        seg = Segment(40000 + port, 80, seq_add(client_isn[port], dseq % 2**32),
                      seq_add(base_ack, dack % 2**32), fl, win, payload, mss)
        out = stack.segment(now, f"scope-{port % (scopes + 1)}", "10.0.0.5", "ctx", seg)
        for _, s in out:
            assert 0 <= s.seq < 2**32 and 0 <= s.ack < 2**32 and 0 <= s.window <= 0xFFFF
            assert len(s.payload) <= max(LIMITS.mss, 536)
            if s.flags == SYN | ACK:
                server_isn[port] = seq_add(s.seq, 1)
        check_bounds(stack)
    # everything is forgotten in the end, through timers alone
    for _ in range(200):
        d = stack.next_deadline()
        if d is None:
            break
        now = max(now, d)
        stack.on_timer(now)
    assert len(stack.conns) == 0 and len(stack.time_wait) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.binary(max_size=400)), max_size=20))
def test_handshaken_connections_fed_garbage_bytes(chunks):
    stack = TcpStack(lambda ctx: HttpSession(serve_view), LIMITS, rng=random.Random(9))
    srv = {}
    snd = {}
    for p in range(8):
        (_, synack), = stack.segment(0.0, "s", "ip", None, Segment(p, 80, 100, 0, SYN, 65535))
        srv[p] = seq_add(synack.seq, 1)
        snd[p] = 101
        stack.segment(0.0, "s", "ip", None, Segment(p, 80, 101, srv[p], ACK, 65535))
    streams = {p: b"" for p in range(8)}
    for p, data in chunks:
        out = stack.segment(0.1, "s", "ip", None, Segment(p, 80, snd[p], srv[p], ACK | PSH, 65535, data))
        snd[p] = seq_add(snd[p], len(data))
        for _, s in out:
            if s.payload and s.seq == seq_add(srv[p], len(streams[p])):
                streams[p] += s.payload
        check_bounds(stack)
    for stream in streams.values():                          # whatever came back is HTTP
        assert stream == b"" or stream.startswith(b"HTTP/1.1 ")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_request_never_raises(data):
    req, used = parse_request(data)
    if isinstance(req, Request):
        assert 0 < used <= len(data)
    elif isinstance(req, ParseError):
        assert req.status in REASONS and used == 0
    else:
        assert (req, used) == (None, 0)


methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "get", "G E T"])
segments = st.sampled_from(["latest", "2009-04-04", "openstack", "meta-data", "user-data",
                            "api", "token", "public-keys", "0", "openssh-key", "..", ".", "",
                            "network", "interfaces", "macs", "fa:16:3e:00:00:05",
                            "meta_data.json", "network_data.json", "%00", "a" * 50])
paths = st.lists(segments, max_size=7).map(lambda p: "/" + "/".join(p))
header_names = st.sampled_from(["Host", "Connection", "Content-Length",
                                "X-aws-ec2-metadata-token", "X-aws-ec2-metadata-token-ttl-seconds",
                                "X-Forwarded-For", "Transfer-Encoding", "X"])
header_values = st.one_of(st.sampled_from(["close", "keep-alive", "10", "0", "-1", "21600",
                                           "1.1", "", "x" * 100]),
                          st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                  max_size=30))


@settings(max_examples=500, deadline=None)
@given(methods, paths, st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 "]),
       st.lists(st.tuples(header_names, header_values), max_size=6), st.binary(max_size=20))
def test_random_http_requests_get_a_well_formed_answer(method, path, version, headers, tail):
    raw = f"{method} {path} {version}\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + tail
    session = HttpSession(serve_view)
    buf = bytearray(raw)
    for _ in range(5):
        out, close = session.on_data(buf)
        if not out:
            break
        assert out.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in out
        status = int(out[9:12])
        assert status in REASONS
        if close:
            break
    assert len(buf) <= len(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_packet_parse_never_raises(data):
    packets.parse(data)
    packets.parse(bytes.fromhex("ffffffffffff") + bytes(6) + b"\x08\x00" + data)
    packets.parse(bytes.fromhex("ffffffffffff") + bytes(6) + b"\x08\x06" + data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(flags, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.binary(max_size=100), st.integers(0, 2), st.booleans()),
                max_size=30))
def test_app_survives_random_frames(frames):
    app, rt, clock = make_app(max_connections=4, max_per_scope=2, idle_timeout=2.0)
    view = make_view()
    for fl, seq, ack, payload, sport, corrupt in frames:
        data = tcp_frame(fl, seq=seq, ack=ack, payload=payload, sport=40000 + sport)
        if corrupt:
            data = data[:20] + bytes([data[20] ^ 0x55]) + data[21:]
        out = list(app.packet_in(pin(view, data)))
        assert all(o.port == 10 for o in out)
        clock.t += 0.5
        for seconds, fn in rt.timers[:]:
            fn()
        rt.timers.clear()
        assert len(app.stack) <= 4
