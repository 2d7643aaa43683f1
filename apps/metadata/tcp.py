"""A sans-IO TCP server endpoint: segments in, segments out, explicit time.

Nothing here touches a socket, a switch or a clock. The caller hands every
received segment to `TcpStack.segment(now, ...)` and sends what it returns;
it asks `next_deadline()` when to call `on_timer(now)` next. That keeps the
whole state machine testable with hand-made segments, loss and reordering.

What the endpoint does (RFC 793/9293, with the parts a short-lived metadata
server needs):

- Handshake: SYN -> SYN-ACK carrying our MSS; the peer's MSS option (536 when
  absent, RFC 9293 3.7.1) caps our segment size. No window scaling, SACK or
  timestamps are offered, so the peer uses none.
- Receive: in-order only. A segment beyond rcv_nxt is not kept; it is
  answered with an ACK of rcv_nxt (a duplicate ACK) so the peer retransmits.
  Data already received (a retransmission) is trimmed and re-ACKed, never
  handed to the application twice, so a retransmitted request is not
  answered twice. Our advertised window is what the receive buffer has left.
- Send: segments of at most min(MSS, peer window, congestion window) bytes;
  slow start from ten segments (RFC 6928), fast retransmit on three duplicate
  ACKs with NewReno partial-ACK retransmission, and a retransmission timer
  (RFC 6298 RTT estimate, Karn's rule, doubling backoff, a retry limit after
  which the connection is reset). A zero peer window is probed on the timer.
- Close: FIN in both directions; a connection the peer closed first is
  forgotten once our FIN is acknowledged; one we closed first waits a short
  TIME-WAIT to re-ACK a retransmitted FIN. RST (acceptable only at rcv_nxt,
  RFC 5961) drops the connection; a SYN or out-of-window RST on a live
  connection gets a challenge ACK.
- Strangers: a segment for no known connection gets a RST (never in answer
  to a RST).
- Bounds: a total and a per-scope (per VM port) connection cap, SYN over a
  cap -> RST; an idle timeout; a bounded receive buffer; requests are not
  read while the unacknowledged answer exceeds a limit; TIME-WAIT entries
  are kept in a bounded, oldest-first table.

The application is a StreamHandler per connection: it is given the receive
buffer, consumes at most one request from it and returns the bytes to send
and whether to close afterwards.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Protocol

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

MOD = 1 << 32
DEFAULT_PEER_MSS = 536
MIN_MSS = 64


def seq_add(a: int, n: int) -> int:
    return (a + n) % MOD


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number in [-2**31, 2**31)."""
    d = (a - b) % MOD
    return d - MOD if d >= (1 << 31) else d


@dataclass(frozen=True, slots=True)
class Segment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    mss: Optional[int] = None          # MSS option, if present

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies (data, plus one for SYN and FIN)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1024        # over all scopes
    max_per_scope: int = 16            # per VM port
    idle_timeout: float = 30.0
    mss: int = 1460                    # what we advertise; we send no more than the peer's
    rcv_buf: int = 16384               # request bytes held (window we advertise)
    snd_limit: int = 65536             # stop reading requests while this much is unacknowledged
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 10.0
    max_retries: int = 8
    syn_retries: int = 5
    time_wait: float = 2.0
    initial_cwnd_segments: int = 10


class StreamHandler(Protocol):
    def on_data(self, inbuf: bytearray) -> tuple[bytes, bool]:
        """Consume at most one request from inbuf (deleting what it used).

        Returns (bytes to send, close after sending). (b"", False) means no
        complete request is buffered yet.
        """


Output = list[tuple[Any, Segment]]
Counter = Callable[[str], None]


def reset_for(seg: Segment) -> Optional[Segment]:
    """The RST answering a segment that belongs to no connection (RFC 9293 3.10.7.1)."""
    if seg.has(RST):
        return None
    if seg.has(ACK):
        return Segment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    return Segment(seg.dst_port, seg.src_port, 0, seq_add(seg.seq, seg.seg_len), RST | ACK, 0)


class Connection:
    """One connection from SYN-RECEIVED to closed.

    Sequence numbers we send are kept as offsets from our ISS (SYN = 0, data
    byte i = 1 + i, FIN = 1 + data length), plain integers that never wrap;
    they are turned into 32-bit numbers only on the wire.
    """

    def __init__(self, limits: Limits, handler: StreamHandler, syn: Segment, iss: int,
                 now: float, count: Counter):
        self.limits = limits
        self.handler = handler
        self.count = count
        self.local_port = syn.dst_port
        self.remote_port = syn.src_port
        self.established = False
        self.closed = False               # forget me
        self.time_wait = False            # forget me, but remember for TIME-WAIT
        # receive side
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.inbuf = bytearray()
        self.peer_fin = False
        # send side (offsets from iss)
        self.iss = iss
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0
        self.sndbuf = bytearray()         # data from offset 1 + sent_base on
        self.sent_base = 0                # data bytes acknowledged and dropped from sndbuf
        self.data_len = 0                 # data bytes ever queued
        self.fin_queued = False
        self.fin_first = False            # our FIN was queued before the peer's arrived
        peer_mss = syn.mss if syn.mss else DEFAULT_PEER_MSS
        self.mss = max(MIN_MSS, min(peer_mss, limits.mss))
        self.snd_wnd = syn.window
        self.cwnd = limits.initial_cwnd_segments * self.mss
        self.ssthresh = 1 << 30
        self.dupacks = 0
        self.recover: Optional[int] = None
        # timers
        self.rto = limits.rto_initial
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self.rtt_probe: Optional[tuple[int, float]] = None   # (offset acked when, sent at)
        self.retries = 0
        self.rto_deadline: Optional[float] = None
        self.last_activity = now
        self.heap_deadline: Optional[float] = None

    # -- helpers ---------------------------------------------------------
    @property
    def fin_off(self) -> int:
        return 1 + self.data_len

    def _wire(self, off: int) -> int:
        return seq_add(self.iss, off)

    def _window(self) -> int:
        return max(0, min(0xFFFF, self.limits.rcv_buf - len(self.inbuf)))

    def _seg(self, off: int, flags: int, payload: bytes = b"", mss: Optional[int] = None) -> Segment:
        return Segment(self.local_port, self.remote_port, self._wire(off), self.rcv_nxt,
                       flags, self._window(), payload, mss)

    def _ack_seg(self) -> Segment:
        return self._seg(self.snd_nxt, ACK)

    def _rst(self) -> Segment:
        return Segment(self.local_port, self.remote_port, self._wire(self.snd_nxt), 0, RST, 0)

    def _syn_ack(self) -> Segment:
        return self._seg(0, SYN | ACK, mss=self.limits.mss)

    def deadline(self) -> Optional[float]:
        if self.closed:
            return None
        idle = self.last_activity + self.limits.idle_timeout
        return idle if self.rto_deadline is None else min(idle, self.rto_deadline)

    def syn_ack(self, now: float) -> list[Segment]:
        self.snd_nxt = self.snd_max = 1
        self.rto_deadline = now + self.rto
        return [self._syn_ack()]

    # -- input -----------------------------------------------------------
    def on_segment(self, seg: Segment, now: float) -> list[Segment]:
        out: list[Segment] = []
        off = seq_diff(seg.seq, self.rcv_nxt)
        if seg.has(RST):
            if off == 0:
                self.closed = True
                self.count("metadata.tcp.reset_by_peer")
            elif 0 < off < max(1, self._window()):
                out.append(self._ack_seg())           # challenge ACK (RFC 5961 3.2)
            return out
        if seg.has(SYN):
            if not self.established and seg.seq == self.irs and not seg.has(ACK):
                return [self._syn_ack()]              # our SYN-ACK was lost
            self.count("metadata.tcp.challenge_ack")
            return [self._ack_seg()]                  # RFC 5961 4.2
        if not seg.has(ACK):
            self.count("metadata.tcp.no_ack")
            return out
        rel_ack = self.snd_una + seq_diff(seg.ack, self._wire(self.snd_una))
        if not self.established:
            if rel_ack != 1:
                return [Segment(self.local_port, self.remote_port, seg.ack, 0, RST, 0)]
            self.established = True
        self.last_activity = now
        if rel_ack > self.snd_max:
            self.count("metadata.tcp.ack_too_new")
            return [self._ack_seg()]
        self._process_ack(seg, rel_ack, now, out)
        need_ack = self._process_data(seg, off)
        self._pump()
        self._transmit(now, out)
        if need_ack and not out:
            out.append(self._ack_seg())
        self._check_done()
        return out

    def _process_ack(self, seg: Segment, rel_ack: int, now: float, out: list[Segment]) -> None:
        if rel_ack < self.snd_una:
            return                                    # old ACK
        flight = self.snd_max - self.snd_una
        if rel_ack > self.snd_una:
            acked = rel_ack - self.snd_una
            self.snd_una = rel_ack
            self.snd_nxt = max(self.snd_nxt, rel_ack)
            drop = min(self.data_len, rel_ack - 1) - self.sent_base
            if drop > 0:
                del self.sndbuf[:drop]
                self.sent_base += drop
            if self.rtt_probe and rel_ack >= self.rtt_probe[0]:
                self._rtt_sample(now - self.rtt_probe[1])
                self.rtt_probe = None
            if self.retries:
                self.retries = 0
                self._rto_from_estimate()           # undo the backoff
            self.dupacks = 0
            if self.recover is not None:
                if rel_ack >= self.recover:
                    self.recover = None
                    self.cwnd = self.ssthresh
                else:                                  # partial ACK: next hole
                    self._retransmit_one(out)
            elif self.cwnd < self.ssthresh:
                self.cwnd += min(acked, self.mss)
            else:
                self.cwnd += max(1, self.mss * self.mss // self.cwnd)
            self.cwnd = min(self.cwnd, 1 << 20)
            self.rto_deadline = (now + self.rto) if self.snd_una < self.snd_max else None
        elif (flight > 0 and not seg.payload and not seg.has(FIN)
              and seg.window == self.snd_wnd):
            self.dupacks += 1
            if self.dupacks == 3 and self.recover is None:
                self.count("metadata.tcp.fast_retransmit")
                self.ssthresh = max(flight // 2, 2 * self.mss)
                self.cwnd = self.ssthresh
                self.recover = self.snd_max
                self._retransmit_one(out)
        self.snd_wnd = seg.window

    def _retransmit_one(self, out: list[Segment]) -> None:
        save = self.snd_nxt
        self.snd_nxt = self.snd_una
        self._send_from_una(out, budget=self.mss)
        self.snd_nxt = max(save, self.snd_nxt)
        self.rtt_probe = None

    def _rtt_sample(self, r: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self._rto_from_estimate()

    def _rto_from_estimate(self) -> None:
        if self.srtt is None:
            self.rto = self.limits.rto_initial
        else:
            self.rto = min(self.limits.rto_max,
                           max(self.limits.rto_min, self.srtt + max(0.01, 4 * self.rttvar)))

    def _process_data(self, seg: Segment, off: int) -> bool:
        """Take in-order data and FIN; True when an ACK is owed."""
        if not seg.payload and not seg.has(FIN):
            return False
        if off > 0:
            self.count("metadata.tcp.out_of_order")
            return True                               # duplicate ACK of rcv_nxt
        data = seg.payload[-off:] if off < 0 else seg.payload
        if off < 0:
            self.count("metadata.tcp.duplicate")
        if data:
            if self.peer_fin:
                return True
            room = self._window()
            take = data[:room]
            if self.fin_queued:
                pass                                  # we are closing: read and discard
            else:
                self.inbuf += take
            self.rcv_nxt = seq_add(self.rcv_nxt, len(take))
            if len(take) < len(data):
                self.count("metadata.tcp.window_overrun")
                return True
        fin_at = seq_add(seg.seq, len(seg.payload))
        if seg.has(FIN) and not self.peer_fin and fin_at == self.rcv_nxt:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.peer_fin = True
        return True

    def _pump(self) -> None:
        """Let the application answer buffered requests while the send side has room."""
        if not self.established:
            return
        while not self.fin_queued and len(self.sndbuf) < self.limits.snd_limit:
            data, close = self.handler.on_data(self.inbuf)
            if data:
                self.sndbuf += data
                self.data_len += len(data)
            if close:
                self._queue_fin()
            if not data and not close:
                break
        if self.peer_fin and not self.fin_queued and len(self.sndbuf) < self.limits.snd_limit:
            self._queue_fin()                         # every complete request is answered

    def _queue_fin(self) -> None:
        self.fin_queued = True
        self.fin_first = not self.peer_fin
        self.inbuf.clear()

    # -- output ----------------------------------------------------------
    def _transmit(self, now: float, out: list[Segment]) -> None:
        window = min(self.snd_wnd, self.cwnd)
        budget = self.snd_una + window - self.snd_nxt
        sent = self._send_from_una(out, budget, now)
        if sent == 0 and self.snd_wnd == 0 and self._unsent() > 0 and self.snd_nxt == self.snd_una:
            if self.rto_deadline is None:             # persist timer for a zero window
                self.rto_deadline = now + self.rto
        if self.snd_una < self.snd_max and self.rto_deadline is None:
            self.rto_deadline = now + self.rto

    def _unsent(self) -> int:
        end = self.fin_off + 1 if self.fin_queued else self.fin_off
        return end - self.snd_nxt

    def _send_from_una(self, out: list[Segment], budget: int, now: Optional[float] = None) -> int:
        """Send from snd_nxt up to budget bytes of data (FIN piggybacks). Returns bytes sent."""
        sent = 0
        while True:
            start = self.snd_nxt                      # offset of first data byte to send
            avail = max(0, self.fin_off - start)      # data bytes not yet sent from here
            n = min(self.mss, avail, max(0, budget - sent))
            fin = (self.fin_queued and start + n == self.fin_off)
            if n == 0 and not (fin and start == self.fin_off):
                break
            lo = start - 1 - self.sent_base
            payload = bytes(self.sndbuf[lo:lo + n])
            flags = ACK | (PSH if n and start + n == self.fin_off else 0) | (FIN if fin else 0)
            out.append(self._seg(start, flags, payload))
            self.snd_nxt = start + n + (1 if fin else 0)
            if self.snd_nxt > self.snd_max:
                if now is not None and self.rtt_probe is None and self.retries == 0:
                    self.rtt_probe = (self.snd_nxt, now)
                self.snd_max = self.snd_nxt
            sent += n
            if fin:
                break
        return sent

    # -- timers ----------------------------------------------------------
    def on_timer(self, now: float) -> list[Segment]:
        if self.closed:
            return []
        if now >= self.last_activity + self.limits.idle_timeout:
            self.count("metadata.tcp.idle_timeout")
            self.closed = True
            return [self._rst()]
        if self.rto_deadline is None or now < self.rto_deadline:
            return []
        limit = self.limits.max_retries if self.established else self.limits.syn_retries
        if self.retries >= limit:
            self.count("metadata.tcp.retry_abort")
            self.closed = True
            return [self._rst()]
        self.retries += 1
        self.rto = min(self.limits.rto_max, self.rto * 2)
        self.rto_deadline = now + self.rto
        self.rtt_probe = None
        if not self.established:
            self.count("metadata.tcp.retransmit")
            return [self._syn_ack()]
        out: list[Segment] = []
        flight = self.snd_max - self.snd_una
        if flight > 0:
            self.count("metadata.tcp.retransmit")
            self.ssthresh = max(flight // 2, 2 * self.mss)
            self.cwnd = self.mss
            self.recover = None
            self.dupacks = 0
            self.snd_nxt = self.snd_una               # go back N
            self._send_from_una(out, self.mss)
        elif self._unsent() > 0 and self.snd_wnd == 0:
            self.count("metadata.tcp.window_probe")
            self._send_from_una(out, 1)
        else:
            self.rto_deadline = None
        return out

    def _check_done(self) -> None:
        if self.fin_queued and self.peer_fin and self.snd_una > self.fin_off:
            if self.fin_first:
                self.time_wait = True
            self.closed = True


@dataclass
class _TimeWait:
    rcv_nxt: int
    snd_seq: int
    deadline: float
    ctx: Any


class TcpStack:
    """Every connection of one server, keyed by (scope, remote address, ports)."""

    def __init__(self, handler_factory: Callable[[Any], StreamHandler],
                 limits: Limits = Limits(), rng: Optional[random.Random] = None,
                 count: Optional[Counter] = None):
        self.handler_factory = handler_factory
        self.limits = limits
        self.rng = rng or random.SystemRandom()
        self.count: Counter = count if count is not None else (lambda name: None)
        self.conns: dict[Hashable, Connection] = {}
        self.ctx: dict[Hashable, Any] = {}
        self.per_scope: dict[Hashable, int] = {}
        self.time_wait: OrderedDict[Hashable, _TimeWait] = OrderedDict()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._tick = itertools.count()

    def __len__(self) -> int:
        return len(self.conns)

    # -- input -----------------------------------------------------------
    def segment(self, now: float, scope: Hashable, remote: Hashable, ctx: Any,
                seg: Segment) -> Output:
        key = (scope, remote, seg.src_port, seg.dst_port)
        conn = self.conns.get(key)
        if conn is None:
            return self._no_connection(now, key, scope, ctx, seg)
        out = conn.on_segment(seg, now)
        ctx = self.ctx[key]
        self._after(key, conn, now)
        return [(ctx, s) for s in out]

    def _no_connection(self, now: float, key, scope, ctx, seg: Segment) -> Output:
        tw = self.time_wait.get(key)
        if tw is not None:
            if seg.has(SYN) and not seg.has(ACK) and seq_diff(seg.seq, tw.rcv_nxt) > 0:
                del self.time_wait[key]               # a new incarnation (RFC 9293 3.10.7.4)
            else:
                if seg.has(FIN) and not seg.has(RST):
                    return [(ctx, Segment(seg.dst_port, seg.src_port, tw.snd_seq, tw.rcv_nxt, ACK, 0))]
                if seg.has(RST):
                    del self.time_wait[key]
                return []
        if seg.flags & (SYN | ACK | RST | FIN) == SYN:
            if len(self.conns) >= self.limits.max_connections:
                self.count("metadata.tcp.syn_over_total_cap")
                return self._reset(ctx, seg)
            if self.per_scope.get(scope, 0) >= self.limits.max_per_scope:
                self.count("metadata.tcp.syn_over_port_cap")
                return self._reset(ctx, seg)
            conn = Connection(self.limits, self.handler_factory(ctx), seg,
                              self.rng.getrandbits(32), now, self.count)
            self.conns[key] = conn
            self.ctx[key] = ctx
            self.per_scope[scope] = self.per_scope.get(scope, 0) + 1
            self.count("metadata.tcp.accepted")
            out = conn.syn_ack(now)
            self._after(key, conn, now)
            return [(ctx, s) for s in out]
        if not seg.has(RST):
            self.count("metadata.tcp.rst_unknown")
        return self._reset(ctx, seg)

    def _reset(self, ctx, seg: Segment) -> Output:
        rst = reset_for(seg)
        return [(ctx, rst)] if rst else []

    def _after(self, key, conn: Connection, now: float) -> None:
        if conn.closed:
            self._forget(key, conn, now)
            return
        d = conn.deadline()
        if d is not None and d != conn.heap_deadline:
            conn.heap_deadline = d
            heapq.heappush(self._heap, (d, next(self._tick), key))
            if len(self._heap) > 4 * len(self.conns) + 64:
                self._compact()

    def _compact(self) -> None:
        self._heap = [e for e in self._heap
                      if (c := self.conns.get(e[2])) is not None and c.heap_deadline == e[0]]
        heapq.heapify(self._heap)

    def _forget(self, key, conn: Connection, now: float) -> None:
        del self.conns[key]
        ctx = self.ctx.pop(key)
        scope = key[0]
        n = self.per_scope.get(scope, 0) - 1
        if n > 0:
            self.per_scope[scope] = n
        else:
            self.per_scope.pop(scope, None)
        if conn.time_wait:
            self.time_wait[key] = _TimeWait(conn.rcv_nxt, conn._wire(conn.snd_nxt),
                                            now + self.limits.time_wait, ctx)
            self.time_wait.move_to_end(key)
            while len(self.time_wait) > self.limits.max_connections:
                self.time_wait.popitem(last=False)

    # -- time --------------------------------------------------------------
    def next_deadline(self) -> Optional[float]:
        while self._heap:
            d, _, key = self._heap[0]
            c = self.conns.get(key)
            if c is not None and c.heap_deadline == d:
                break
            heapq.heappop(self._heap)
        best = self._heap[0][0] if self._heap else None
        if self.time_wait:
            tw = next(iter(self.time_wait.values())).deadline
            best = tw if best is None else min(best, tw)
        return best

    def on_timer(self, now: float) -> Output:
        out: Output = []
        while self._heap and self._heap[0][0] <= now:
            d, _, key = heapq.heappop(self._heap)
            conn = self.conns.get(key)
            if conn is None or conn.heap_deadline != d:
                continue
            conn.heap_deadline = None
            ctx = self.ctx[key]
            out.extend((ctx, s) for s in conn.on_timer(now))
            self._after(key, conn, now)
        while self.time_wait:
            key, tw = next(iter(self.time_wait.items()))
            if tw.deadline > now:
                break
            del self.time_wait[key]
        return out

    def state_size(self) -> int:
        """Connections, TIME-WAIT entries and timer entries held (for bounds checks)."""
        return len(self.conns) + len(self.time_wait) + len(self._heap)
