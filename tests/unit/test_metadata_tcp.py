"""The sans-IO TCP endpoint of the metadata service, without a switch.

Segments are made by hand or by a small simulated client; time is a number
the test moves. Loss and reordering are simulated by dropping or holding
segments between client and endpoint.
"""
from __future__ import annotations

import random

import pytest

from apps.metadata.http import HttpSession, Request, Response
from apps.metadata.tcp import (ACK, FIN, PSH, RST, SYN, Limits, Segment, TcpStack, seq_add,
                               seq_diff)

CPORT, SPORT = 40000, 80
CLIENT_ISN = 1000


def body_for(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


def serve(req: Request) -> Response:
    """/size/N answers N patterned bytes; anything else a short text."""
    if req.target.startswith("/size/"):
        return Response(200, body_for(int(req.target[6:])))
    return Response(200, f"you asked {req.target}".encode())


def http_response(target: str, keep_alive: bool = True) -> bytes:
    from apps.metadata.http import render
    return render(serve(Request("GET", target, "HTTP/1.1", {"host": "x"})), keep_alive=keep_alive)


def get(target: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}\r\n".encode()


class Counts(dict):
    def __call__(self, name: str) -> None:
        self[name] = self.get(name, 0) + 1


def make_stack(**limits) -> tuple[TcpStack, Counts]:
    counts = Counts()
    stack = TcpStack(lambda ctx: HttpSession(serve), Limits(**limits),
                     rng=random.Random(7), count=counts)
    return stack, counts


class Conn:
    """A hand-driven client of one connection."""

    def __init__(self, stack: TcpStack, port: int = CPORT, scope="port-1", mss=1460,
                 window=65535):
        self.stack, self.port, self.scope = stack, port, scope
        self.mss, self.window = mss, window
        self.snd = CLIENT_ISN                # next seq we send
        self.rcv = None                      # next seq we expect
        self.now = 0.0

    def send(self, flags, payload=b"", seq=None, ack=None, window=None, mss=None):
        seg = Segment(self.port, SPORT, self.snd if seq is None else seq,
                      (self.rcv or 0) if ack is None else ack, flags,
                      self.window if window is None else window, payload, mss)
        return [s for _, s in self.stack.segment(self.now, self.scope, "10.0.0.5", "ctx", seg)]

    def connect(self):
        out = self.send(SYN, mss=self.mss, ack=0)
        assert len(out) == 1 and out[0].flags == SYN | ACK
        self.snd = seq_add(self.snd, 1)
        self.rcv = seq_add(out[0].seq, 1)
        assert self.send(ACK) == []
        return out[0]

    def data(self, payload: bytes, **kw):
        out = self.send(ACK | PSH, payload, **kw)
        if kw.get("seq") is None:
            self.snd = seq_add(self.snd, len(payload))
        return out

    def take(self, segs) -> bytes:
        """Accept in-order data from segs and ACK it (one cumulative ACK)."""
        got = b""
        for s in segs:
            if s.seq == self.rcv and s.payload:
                got += s.payload
                self.rcv = seq_add(self.rcv, len(s.payload))
            if s.flags & FIN and seq_add(s.seq, len(s.payload)) == self.rcv:
                self.rcv = seq_add(self.rcv, 1)
        return got


# -- handshake --------------------------------------------------------------
def test_syn_gets_syn_ack_with_our_mss_and_peer_mss_caps_segments():
    stack, _ = make_stack(mss=1460)
    c = Conn(stack, mss=500)
    synack = c.connect()
    assert synack.ack == CLIENT_ISN + 1 and synack.mss == 1460
    out = c.data(get("/size/3000"))
    assert out and all(len(s.payload) <= 500 for s in out)
    assert c.take(out) == http_response("/size/3000")


def test_no_mss_option_means_536():
    stack, _ = make_stack()
    c = Conn(stack, mss=None)
    c.connect()
    out = c.data(get("/size/2000"))
    assert max(len(s.payload) for s in out) == 536


def test_retransmitted_syn_gets_the_same_syn_ack():
    stack, _ = make_stack()
    c = Conn(stack)
    first = c.send(SYN, mss=1460, ack=0)
    again = c.send(SYN, mss=1460, ack=0)
    assert first == again and len(stack) == 1


def test_syn_ack_retransmitted_with_backoff_then_given_up():
    stack, counts = make_stack(rto_initial=1.0, syn_retries=2)
    c = Conn(stack)
    synack = c.send(SYN, mss=1460, ack=0)[0]
    assert stack.next_deadline() == pytest.approx(1.0)
    assert [s for _, s in stack.on_timer(1.0)] == [synack]
    assert stack.next_deadline() == pytest.approx(3.0)           # doubled
    assert [s for _, s in stack.on_timer(3.0)] == [synack]
    out = [s for _, s in stack.on_timer(7.0)]
    assert len(out) == 1 and out[0].flags == RST
    assert len(stack) == 0 and counts["metadata.tcp.retry_abort"] == 1


# -- data ---------------------------------------------------------------------
def test_peer_window_limits_what_is_in_flight():
    stack, _ = make_stack()
    c = Conn(stack, window=1000)
    c.connect()
    out = c.data(get("/size/5000"))
    assert sum(len(s.payload) for s in out) <= 1000
    got = c.take(out)
    while len(got) < len(http_response("/size/5000")):
        out = c.send(ACK)
        assert out and sum(len(s.payload) for s in out) <= 1000
        got += c.take(out)
    assert got == http_response("/size/5000")


def test_request_in_several_segments_is_reassembled():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    req = get("/latest/meta-data/instance-id")
    answers = []
    for i in range(0, len(req), 5):
        answers += c.data(req[i:i + 5])
    assert c.take(answers) == http_response("/latest/meta-data/instance-id")


def test_out_of_order_segment_is_re_acked_not_kept():
    stack, counts = make_stack()
    c = Conn(stack)
    c.connect()
    req = get("/a")
    first, second = req[:10], req[10:]
    out = c.send(ACK | PSH, second, seq=seq_add(c.snd, 10))
    assert len(out) == 1 and out[0].ack == c.snd and not out[0].payload   # dup ACK
    assert counts["metadata.tcp.out_of_order"] == 1
    out = c.data(first)
    assert not any(s.payload for s in out)                     # nothing complete yet
    assert out[0].ack == seq_add(CLIENT_ISN + 1, 10)
    out = c.data(second)
    assert c.take(out) == http_response("/a")


def test_retransmitted_request_is_re_acked_and_answered_once():
    stack, counts = make_stack()
    c = Conn(stack)
    c.connect()
    req = get("/once")
    start = c.snd
    got = c.take(c.data(req))
    assert got == http_response("/once")
    again = c.send(ACK | PSH, req, seq=start)                # the client did not see our ACK
    assert len(again) == 1 and not again[0].payload and again[0].ack == c.snd
    assert counts["metadata.tcp.duplicate"] == 1


def test_partly_new_segment_keeps_only_the_new_part():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    req = get("/overlap")
    start = c.snd
    c.data(req[:20])
    out = c.send(ACK | PSH, req, seq=start)                  # overlaps the first 20 bytes
    c.snd = seq_add(start, len(req))
    assert c.take(out) == http_response("/overlap")


# -- retransmission -------------------------------------------------------------
def test_lost_answer_is_resent_on_a_timer_with_backoff():
    stack, counts = make_stack(rto_initial=1.0)
    c = Conn(stack)
    c.connect()
    lost = c.data(get("/size/100"))                         # never arrives
    assert lost and stack.next_deadline() == pytest.approx(1.0)
    c.now = 1.0
    again = [s for _, s in stack.on_timer(1.0)]
    assert again[0].seq == lost[0].seq and again[0].payload == lost[0].payload[:len(again[0].payload)]
    assert stack.next_deadline() == pytest.approx(3.0)       # 1 s, then 2 s
    again2 = [s for _, s in stack.on_timer(3.0)]
    assert again2 == again
    assert stack.next_deadline() == pytest.approx(7.0)
    assert counts["metadata.tcp.retransmit"] == 2
    c.now = 3.5
    assert c.take(again2) == http_response("/size/100")
    c.send(ACK)
    assert stack.conns[next(iter(stack.conns))].snd_una == stack.conns[next(iter(stack.conns))].snd_max


def test_three_duplicate_acks_trigger_fast_retransmit():
    stack, counts = make_stack()
    c = Conn(stack)
    c.connect()
    out = c.data(get("/size/10000"))
    assert len(out) >= 5
    c.take(out[:1])                                          # out[1] lost, later ones arrive
    c.send(ACK)                                              # acknowledges out[0]
    for _ in range(3):                                       # out[2], out[3], out[4] arrive
        dup = c.send(ACK)
    assert counts["metadata.tcp.fast_retransmit"] == 1
    assert any(s.seq == out[1].seq and s.payload == out[1].payload for s in dup)


def test_retries_exhausted_resets_the_connection():
    stack, counts = make_stack(rto_initial=0.5, max_retries=3)
    c = Conn(stack)
    c.connect()
    c.data(get("/x"))
    t = 0.0
    for _ in range(10):
        d = stack.next_deadline()
        if d is None:
            break
        t = d
        out = [s for _, s in stack.on_timer(t)]
    assert len(stack) == 0 and out[-1].flags & RST
    assert counts["metadata.tcp.retry_abort"] == 1


def test_zero_window_is_probed():
    stack, counts = make_stack(rto_initial=1.0)
    c = Conn(stack, window=0)
    c.connect()
    out = c.data(get("/size/100"))
    assert not any(s.payload for s in out)
    probe = [s for _, s in stack.on_timer(stack.next_deadline())]
    assert len(probe) == 1 and len(probe[0].payload) == 1
    assert counts["metadata.tcp.window_probe"] == 1


# -- shutdown -------------------------------------------------------------------
def test_client_fin_is_acked_answered_with_fin_and_forgotten():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    c.take(c.data(get("/a")))
    out = c.send(ACK | FIN)
    c.snd = seq_add(c.snd, 1)
    assert len(out) == 1 and out[0].flags & FIN and out[0].ack == c.snd
    c.take(out)
    assert c.send(ACK) == [] and len(stack) == 0
    assert stack.time_wait == {}                             # the peer closed first


def test_connection_close_means_we_fin_first_and_keep_a_time_wait():
    stack, _ = make_stack(time_wait=2.0)
    c = Conn(stack)
    c.connect()
    out = c.data(get("/bye", close=True))
    assert out[-1].flags & FIN
    assert c.take(out) == http_response("/bye", keep_alive=False)
    c.send(ACK)
    assert len(stack) == 1                                   # FIN-WAIT-2
    out = c.send(ACK | FIN)
    assert len(out) == 1 and out[0].flags == ACK
    assert len(stack) == 0 and len(stack.time_wait) == 1
    again = c.send(ACK | FIN)                                # our ACK was lost
    assert len(again) == 1 and again[0].flags == ACK and again[0].ack == seq_add(c.snd, 1)
    stack.on_timer(2.5)
    assert len(stack.time_wait) == 0


def test_fin_retransmitted_when_unacknowledged():
    stack, _ = make_stack(rto_initial=1.0)
    c = Conn(stack)
    c.connect()
    c.take(c.data(get("/a")))
    c.send(ACK)
    out = c.send(ACK | FIN)
    c.snd = seq_add(c.snd, 1)
    assert out[0].flags & FIN
    again = [s for _, s in stack.on_timer(stack.next_deadline())]
    assert again[0].flags & FIN and again[0].seq == out[0].seq


def test_unknown_connection_gets_rst_but_rst_gets_nothing():
    stack, counts = make_stack()
    c = Conn(stack)
    out = c.send(ACK, b"hello", ack=12345)
    assert len(out) == 1 and out[0].flags == RST and out[0].seq == 12345
    out = c.send(PSH, b"hi", seq=500)
    assert out[0].flags == RST | ACK and out[0].ack == 502 and out[0].seq == 0
    assert c.send(RST, seq=1) == []
    assert c.send(RST | ACK, seq=1, ack=1) == []
    assert counts["metadata.tcp.rst_unknown"] == 2
    assert len(stack) == 0


def test_rst_at_rcv_nxt_closes_and_elsewhere_gets_a_challenge_ack():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    out = c.send(RST, seq=seq_add(c.snd, 5))
    assert len(out) == 1 and out[0].flags == ACK and len(stack) == 1
    assert c.send(RST, seq=seq_add(c.snd, 100000)) == []
    assert c.send(RST) == [] and len(stack) == 0


def test_syn_on_established_connection_gets_a_challenge_ack():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    out = c.send(SYN, seq=99, ack=0)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == c.snd
    assert len(stack) == 1


# -- keep-alive ---------------------------------------------------------------------
def test_several_requests_on_one_connection_and_pipelined():
    stack, _ = make_stack()
    c = Conn(stack)
    c.connect()
    for path in ("/1", "/2", "/3"):
        assert c.take(c.data(get(path))) == http_response(path)
    pipelined = get("/4") + get("/size/3000") + get("/6")
    expected = http_response("/4") + http_response("/size/3000") + http_response("/6")
    assert c.take(c.data(pipelined)) == expected
    assert len(stack) == 1


def test_a_flood_of_pipelined_requests_is_read_only_as_answers_drain():
    stack, _ = make_stack(snd_limit=20000, rcv_buf=4096)
    c = Conn(stack, window=65535)
    c.connect()
    req = get("/size/9000")
    burst = req * (4096 // len(req))
    out = c.data(burst)
    conn = next(iter(stack.conns.values()))
    assert len(conn.sndbuf) < 20000 + 9500                  # stopped reading
    assert conn.inbuf                                        # the rest waits
    got = c.take(out)
    for _ in range(100):
        out = c.send(ACK)
        if not out:
            break
        got += c.take(out)
    assert got == http_response("/size/9000") * (4096 // len(req))


# -- bounds -----------------------------------------------------------------------------
def test_caps_per_port_and_total_refuse_syn_with_rst():
    stack, counts = make_stack(max_per_scope=2, max_connections=3)
    Conn(stack, port=1).connect()
    Conn(stack, port=2).connect()
    out = Conn(stack, port=3).send(SYN, ack=0)
    assert out[0].flags == RST | ACK and counts["metadata.tcp.syn_over_port_cap"] == 1
    Conn(stack, port=4, scope="port-2").connect()
    out = Conn(stack, port=5, scope="port-3").send(SYN, ack=0)
    assert out[0].flags == RST | ACK and counts["metadata.tcp.syn_over_total_cap"] == 1
    assert len(stack) == 3


def test_idle_connection_is_reset_and_forgotten():
    stack, counts = make_stack(idle_timeout=5.0)
    c = Conn(stack)
    c.connect()
    c.take(c.data(get("/a")))
    c.send(ACK)
    assert stack.next_deadline() == pytest.approx(5.0)
    out = [s for _, s in stack.on_timer(5.0)]
    assert out[0].flags == RST and len(stack) == 0
    assert counts["metadata.tcp.idle_timeout"] == 1
    assert stack.state_size() == 0


def test_time_wait_table_is_bounded():
    stack, _ = make_stack(max_connections=4, max_per_scope=4)
    for p in range(10):
        c = Conn(stack, port=100 + p)
        c.connect()
        c.take(c.data(get("/x", close=True)))
        c.send(ACK)
        c.send(ACK | FIN)
    assert len(stack) == 0 and len(stack.time_wait) == 4


def test_seq_arithmetic_wraps():
    assert seq_add(0xFFFFFFFF, 2) == 1
    assert seq_diff(1, 0xFFFFFFFF) == 2
    assert seq_diff(0xFFFFFFFF, 1) == -2


def test_connection_across_sequence_wrap():
    stack = TcpStack(lambda ctx: HttpSession(serve), Limits(), rng=random.Random(1))
    stack.rng = type("R", (), {"getrandbits": staticmethod(lambda n: 0xFFFFFF00)})()
    c = Conn(stack)
    c.snd = 0xFFFFFFF0
    c.connect()
    got = c.take(c.data(get("/size/4000")))
    assert got == http_response("/size/4000")


# -- loss and reordering, simulated ------------------------------------------------------
class SimClient:
    """A client TCP good enough to fetch over a lossy, reordering link:
    in-order delivery with an out-of-order queue, cumulative ACKs,
    retransmission of its own SYN/request/FIN on a timer."""

    def __init__(self, port: int, requests: list[bytes]):
        self.port = port
        self.iss = random.Random(port).getrandbits(32)
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.rcv = None
        self.ooo: dict[int, Segment] = {}
        self.got = b""
        self.out_data = b"".join(requests)
        self.fin_sent = False
        self.fin_rcvd = False
        self.rto_at = None
        self.expect_len = None

    def start(self, now):
        self.snd_nxt = seq_add(self.iss, 1)
        self.rto_at = now + 0.3
        return [Segment(self.port, SPORT, self.iss, 0, SYN, 65535, b"", 1000)]

    def _data_segments(self):
        if self.rcv is None:
            return [Segment(self.port, SPORT, self.iss, 0, SYN, 65535, b"", 1000)]
        off = seq_diff(self.snd_una, self.iss) - 1
        segs = []
        if off < len(self.out_data):
            chunk = self.out_data[off:off + 100]
            segs.append(Segment(self.port, SPORT, self.snd_una, self.rcv, ACK | PSH, 65535, chunk))
        return segs

    def on_timer(self, now):
        if self.rto_at is None or now < self.rto_at:
            return []
        self.rto_at = now + 0.3
        segs = self._data_segments()
        if self.done and not self.fin_sent:
            return []
        return segs

    @property
    def done(self):
        return self.expect_len is not None and len(self.got) >= self.expect_len

    def on_segment(self, s: Segment, now):
        out = []
        if s.flags & RST:
            raise AssertionError("connection reset")
        if s.flags & SYN:
            if self.rcv is None:
                self.rcv = seq_add(s.seq, 1)
                self.snd_una = seq_add(self.iss, 1)
                out.append(Segment(self.port, SPORT, self.snd_una, self.rcv, ACK, 65535))
                out += self._send_all()
            else:
                out.append(Segment(self.port, SPORT, self.snd_nxt, self.rcv, ACK, 65535))
            return out
        if seq_diff(s.ack, self.snd_una) > 0:
            self.snd_una = s.ack
        if s.payload or s.flags & FIN:
            if seq_diff(s.seq, self.rcv) > 0:
                self.ooo[s.seq] = s
            elif s.seq == self.rcv:
                self._accept(s)
                while self.rcv in self.ooo:
                    self._accept(self.ooo.pop(self.rcv))
            out.append(Segment(self.port, SPORT, self.snd_nxt, self.rcv, ACK, 65535))
        return out

    def _send_all(self):
        segs = []
        off = 0
        while off < len(self.out_data):
            chunk = self.out_data[off:off + 100]
            segs.append(Segment(self.port, SPORT, seq_add(self.iss, 1 + off), self.rcv,
                                ACK | PSH, 65535, chunk))
            off += 100
        self.snd_nxt = seq_add(self.iss, 1 + len(self.out_data))
        return segs

    def _accept(self, s: Segment):
        self.got += s.payload
        self.rcv = seq_add(self.rcv, len(s.payload))
        if s.flags & FIN:
            self.rcv = seq_add(self.rcv, 1)
            self.fin_rcvd = True


def run_lossy(seed: int, loss: float, reorder: float, n_clients: int = 3,
              size: int = 30000) -> tuple[list[SimClient], TcpStack, Counts]:
    rng = random.Random(seed)
    stack, counts = make_stack(rto_initial=0.3, rto_min=0.05, max_retries=30)
    requests = [get(f"/size/{size}"), get("/small"), get(f"/size/{size // 3}", close=True)]
    expected = b"".join(http_response(f"/size/{size}") for _ in [0]) + http_response("/small") + \
        http_response(f"/size/{size // 3}", keep_alive=False)
    clients = {40000 + i: SimClient(40000 + i, requests) for i in range(n_clients)}
    for c in clients.values():
        c.expect_len = len(expected)
    inflight: list[tuple[float, str, int, Segment]] = []   # (deliver at, direction, port, seg)
    now = 0.0

    def transmit(direction, port, segs):
        for s in segs:
            if rng.random() < loss:
                continue
            delay = 0.001 + (rng.random() * 0.05 if rng.random() < reorder else 0)
            inflight.append((now + delay, direction, port, s))

    for p, c in clients.items():
        transmit("up", p, c.start(now))
    for _ in range(200000):
        if all(c.done and c.fin_rcvd for c in clients.values()) and not stack.conns:
            break
        inflight.sort(key=lambda e: e[0])
        candidates = [e[0] for e in inflight[:1]]
        d = stack.next_deadline()
        if d is not None:
            candidates.append(d)
        candidates += [c.rto_at for c in clients.values() if c.rto_at is not None and not c.done]
        now = max(now, min(candidates))
        while inflight and inflight[0][0] <= now:
            _, direction, port, seg = inflight.pop(0)
            if direction == "up":
                for _, s in stack.segment(now, "port-1", "10.0.0.5", "ctx", seg):
                    transmit("down", s.dst_port, [s])
            else:
                transmit("up", port, clients[port].on_segment(seg, now))
        for _, s in stack.on_timer(now):
            transmit("down", s.dst_port, [s])
        for p, c in clients.items():
            if not c.done:
                transmit("up", p, c.on_timer(now))
            elif c.fin_rcvd and not c.fin_sent:
                c.fin_sent = True
                fin = Segment(p, SPORT, c.snd_nxt, c.rcv, ACK | FIN, 65535)
                transmit("up", p, [fin])
        if now > 600:
            break
    for c in clients.values():
        assert c.got == expected
    return list(clients.values()), stack, counts


@pytest.mark.parametrize("seed", range(6))
def test_whole_answers_through_loss_and_reordering(seed):
    clients, stack, counts = run_lossy(seed, loss=0.15, reorder=0.3)
    assert counts.get("metadata.tcp.retransmit", 0) + counts.get("metadata.tcp.fast_retransmit", 0) > 0


def test_whole_answers_without_loss_but_reordered():
    run_lossy(99, loss=0.0, reorder=0.5)
