"""OpenFlow connections: the listener, each connection's threads, and which
connection owns a datapath id.

os-ken 4.x's own listener (os_ken/controller/controller.py) leaks two native
threads per closed connection. Its Datapath.serve() ends the receive loop,
then calls hub.kill() on the send thread, which is a no-op under the native
hub, and hub.joinall() on it; the send thread blocks in send_q.get() for a
message that never comes, so the join never returns either: the `serve`
thread and the `_send_loop` thread live forever, with the Datapath, its
queue and its buffers. Because serve() never returns, Datapath.close() is
never called and os-ken never reports the connection dead (DEAD_DISPATCHER)
unless something later happens to be sent to it. Its receive loop also
closes the socket while the send thread may still be in sendall() on it,
and has no handshake deadline, so a client that never says HELLO is held
forever.

Here every connection has exactly two threads, and both end when it ends:

    ofp-conn  TLS handshake, then the receive loop (os-ken's parser and
              handlers, as os-ken runs them); when it ends it shuts the
              socket down, wakes and joins the sender, closes the socket and
              reports the datapath dead
    ofp-send  drains the send queue; a failed send shuts the socket down, so
              the receive loop ends too: a connection is never half alive

A connection that has not entered MAIN (HELLO, FEATURES_REPLY, port
descriptions) within handshake_timeout is closed, and at most max_half_open
such connections are held; beyond that a new one is closed at accept.

A switch that vanishes without a FIN (its host lost, its process frozen) is
found by an inactivity probe, as OVS does from its side: a connection in
MAIN that received nothing for inactivity_probe seconds is sent an echo
request, and is closed if nothing arrives for inactivity_probe more. When a
connection ends, whatever was registered with add_close_hook (the
OFChannel's close, which fails every request in flight) runs at once in the
receive thread, not after os-ken's DEAD event has gone through the app's
event queue: a worker never waits out its request timeout on a dead switch.

On entering MAIN the switch is sent OFPT_SET_CONFIG with miss_send_len
OFPCML_NO_BUFFER. Switches should name vmflow as a *service* controller
(`type=service` in OVS's Controller table, README "OVS restarts"): OVS
flushes a bridge's flows whenever its set of primary controllers goes from
none to some, which `ovs-ctl restart` does to every bridge right after
restoring its flows; and a service connection gets no packet-in or
port-status until it sets a nonzero miss_send_len.

Duplicate datapath ids (Connections.admit): a connection claiming a datapath
id that a live connection already holds does not replace it. The incumbent
is sent an echo request; if it answers within echo_timeout, it keeps the
datapath and the newcomer is refused and closed; if not, the incumbent is
closed and the newcomer takes over, so a switch that lost its connection
without a FIN gets back in. The first live connection wins: a newcomer
cannot forge the incumbent's liveness, and with TLS only a holder of a
certificate signed by the configured CA connects at all. Two bridges that
share a datapath id by mistake do not flap: the second is refused on every
try while the first keeps its flows. Every refusal is counted and listed in
the status file (status.py).

Whenever a connection is dropped it is closed, so the switch notices and
reconnects; os-ken's reporting of the dead datapath comes after the close.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import os_ken.base.app_manager  # noqa: F401  (before os-ken's controller: import cycle)
from os_ken.controller import ofp_event
from os_ken.controller.controller import Datapath
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
from os_ken.ofproto import ofproto_common, ofproto_parser

LOG = logging.getLogger(__name__)

POLL_S = 1.0                 # how often a silent connection checks its deadline
MAX_REFUSAL_RECORDS = 64     # datapath ids whose refusals the status lists one by one
REFUSAL_LOG_S = 30.0         # a refusal for one datapath id is logged at most this often
PROBE_DATA = b"vmflow-owner-probe"
COUNTS = ("accepted", "half_open_rejected", "handshake_timeouts", "tls_failures",
          "duplicate_dpid_refused", "duplicate_dpid_replaced", "cert_pin_refused")
OFPT_ECHO_REPLY = 3          # the same in every OpenFlow version


class _Throttled:
    """Logs what any client can trigger at will (a failed TLS handshake, a
    handshake timeout, garbage instead of OpenFlow) at most once per
    `every` seconds per kind; the next message says how many were held back."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}

    def __call__(self, kind: str, level: int, msg: str, *args, exc_info=False) -> None:
        now = time.monotonic()
        with self._lock:
            last, held = self._state.get(kind, (float("-inf"), 0))
            if now - last < self.every:
                self._state[kind] = (last, held + 1)
                return
            self._state[kind] = (now, 0)
        if held:
            msg += " (and %d more like it in the last %.0fs)"
            args += (held, self.every)
        LOG.log(level, msg, *args, exc_info=exc_info)


THROTTLED = _Throttled()


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 10.0
    max_half_open: int = 256
    echo_timeout: float = 3.0
    inactivity_probe: float = 5.0

    @classmethod
    def from_conf(cls, conf) -> "Limits":
        o = conf.openflow
        return cls(o.handshake_timeout, o.max_half_open, o.echo_timeout, o.inactivity_probe)


def tls_context(conf) -> ssl.SSLContext:
    """The server context for ssl:HOST:PORT: our key and certificate, and a
    switch certificate signed by ca_cert required. ValueError names what is
    missing or unreadable."""
    o = conf.openflow
    missing = [name for name in ("ca_cert", "certificate", "private_key") if not getattr(o, name)]
    if missing:
        raise ValueError("ofp_listen ssl:... needs [openflow] " + ", ".join(missing))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(o.certificate, o.private_key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"[openflow] certificate {o.certificate} / private_key "
                         f"{o.private_key}: {e}") from None
    try:
        ctx.load_verify_locations(o.ca_cert)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"[openflow] ca_cert {o.ca_cert}: {e}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Connections:
    """Who is connected, who owns which datapath id, and the counts."""

    def __init__(self, limits: Limits = Limits(),
                 pin_for: Optional[Callable[[int], Optional[str]]] = None):
        self.limits = limits
        # dpid -> the SHA-256 fingerprint its switch certificate must have
        # (the host's switch_cert_sha256), or None when the host pins none.
        self.pin_for = pin_for or (lambda dpid: None)
        self._lock = threading.Lock()
        self._owners: dict[int, "VmflowDatapath"] = {}
        self._live: set = set()
        self.half_open = 0
        # Every count listed from the start, so a reader sees 0, not nothing.
        self.counters: Counter = Counter(dict.fromkeys(COUNTS, 0))
        self._refusals: "OrderedDict[int, dict]" = OrderedDict()
        self._refusal_logged_at: dict[int, float] = {}

    # -- accept and close ------------------------------------------------------
    def opening(self) -> bool:
        """A connection was accepted: False (and counted) when over the cap."""
        with self._lock:
            if self.half_open >= self.limits.max_half_open:
                self.counters["half_open_rejected"] += 1
                return False
            self.half_open += 1
            self.counters["accepted"] += 1
            return True

    def started(self, dp: "VmflowDatapath") -> None:
        with self._lock:
            self._live.add(dp)

    def handshake_done(self, dp: "VmflowDatapath") -> None:
        with self._lock:
            if not dp.counted_established:
                dp.counted_established = True
                self.half_open -= 1

    def closed(self, dp: Optional["VmflowDatapath"]) -> None:
        """The connection is gone (dp None: it died before it had a datapath)."""
        with self._lock:
            if dp is None or not dp.counted_established:
                self.half_open -= 1
                if dp is not None:
                    dp.counted_established = True
            if dp is not None:
                self._live.discard(dp)
                if dp.id is not None and self._owners.get(dp.id) is dp:
                    del self._owners[dp.id]

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def owner(self, dpid: int) -> Optional["VmflowDatapath"]:
        with self._lock:
            return self._owners.get(dpid)

    # -- duplicate datapath ids ----------------------------------------------------
    def admit(self, dp: "VmflowDatapath") -> bool:
        """May dp (its handshake done) take its datapath id? Called in dp's
        own receive thread; may wait up to echo_timeout for the incumbent."""
        dpid = dp.id
        pin = self.pin_for(dpid)
        if pin is not None and dp.cert_sha256 != pin:
            with self._lock:
                self._refuse(dpid, dp, self._owners.get(dpid),
                             "its certificate is not the one the host pins", "cert_pin_refused")
            return False
        with self._lock:
            incumbent = self._owners.get(dpid)
            if incumbent is None or not incumbent.alive:
                self._owners[dpid] = dp
                return True
            if pin is not None and incumbent.cert_sha256 != pin:
                # The pin changed under the incumbent; the newcomer has it.
                self._owners[dpid] = dp
                self.counters["duplicate_dpid_replaced"] += 1
                loser, why = incumbent, "its certificate is not the one the host pins"
            else:
                loser = None
        if loser is None:
            answered = incumbent.probe(self.limits.echo_timeout)
            with self._lock:
                current = self._owners.get(dpid)
                if current is None or not current.alive:
                    self._owners[dpid] = dp   # the holder went away while we asked
                    return True
                if current is incumbent and not answered:
                    self._owners[dpid] = dp
                    self.counters["duplicate_dpid_replaced"] += 1
                    loser = incumbent
                    why = f"no answer to an echo request in {self.limits.echo_timeout:.1f}s"
                else:
                    self._refuse(dpid, dp, current,
                                 "its datapath id is held by a live connection",
                                 "duplicate_dpid_refused")
                    return False
        LOG.warning("datapath %016x: the connection from %s is closed (%s); %s takes over",
                    dpid, loser.peer, why, dp.peer)
        loser.fence("replaced by a new connection for its datapath id")
        return True

    def enforce_pins(self) -> int:
        """Close every connection whose certificate is not (or no longer)
        the one its host pins; returns how many. Called periodically, so a
        pin set or changed in the API also reaches switches already connected."""
        with self._lock:
            owners = list(self._owners.items())
        dropped = 0
        for dpid, dp in owners:
            pin = self.pin_for(dpid)
            if pin is not None and dp.cert_sha256 != pin and dp.alive:
                self.count("cert_pin_refused")
                dp.fence("its certificate is not the one the host pins (switch_cert_sha256)")
                dropped += 1
        return dropped

    def _refuse(self, dpid: int, dp: "VmflowDatapath", kept: Optional["VmflowDatapath"],
                why: str, counter: str) -> None:
        """Called under self._lock."""
        self.counters[counter] += 1
        rec = self._refusals.pop(dpid, None) or {"refused": 0}
        rec.update(refused=rec["refused"] + 1, last_address=dp.peer, last_at=time.time(),
                   last_certificate=dp.cert_sha256, last_reason=why,
                   kept_address=kept.peer if kept else None,
                   kept_certificate=kept.cert_sha256 if kept else None)
        self._refusals[dpid] = rec
        while len(self._refusals) > MAX_REFUSAL_RECORDS:
            old, _ = self._refusals.popitem(last=False)
            self._refusal_logged_at.pop(old, None)
        now = time.monotonic()
        if now - self._refusal_logged_at.get(dpid, float("-inf")) >= REFUSAL_LOG_S:
            self._refusal_logged_at[dpid] = now
            LOG.error("datapath %016x: refused a connection from %s (%d so far): %s%s. An "
                      "impostor, or two bridges with the same datapath id", dpid, dp.peer,
                      rec["refused"], why, f"; {kept.peer} keeps it" if kept else "")

    def snapshot(self) -> dict:
        with self._lock:
            counters = {f"ofp_{k}": v for k, v in self.counters.items()}
            counters["ofp_connections"] = len(self._live)
            counters["ofp_half_open"] = self.half_open
            refusals = {f"{d:016x}": dict(r) for d, r in self._refusals.items()}
        return {"counters": counters, "refused_dpids": refusals}


class VmflowDatapath(Datapath):
    """os-ken's Datapath with our serve(): see the module doc."""

    _probe_xids = itertools.count(0x7F000000)   # out of the way of the datapath's own xids

    def __init__(self, sock, address, conns: Connections, deadline: float):
        # Set before Datapath.__init__, which calls set_state().
        self.conns = conns
        self.deadline = deadline
        self.alive = True
        self.last_rx = time.monotonic()
        self._idle_probe_at: Optional[float] = None
        self._ended = False
        self._close_hooks: list[Callable[[], None]] = []
        self.counted_established = False
        self.peer = _peer(address)
        self.cert_sha256 = _cert_sha256(sock)
        self._probes: dict[int, threading.Event] = {}
        self._probe_lock = threading.Lock()
        # OpenSSL must not read and write one connection from two threads at
        # once; plain sockets need no lock.
        self._io_lock = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._shut = False
        super().__init__(sock, address)

    # -- state ------------------------------------------------------------------
    def set_state(self, state):
        if state == MAIN_DISPATCHER and self.state != MAIN_DISPATCHER and self.id is not None:
            if not self.conns.admit(self):
                self.fence("refused its datapath id (the refusal is logged and in the status)")
                return
            self.conns.handshake_done(self)
            # Before anything a worker sends: packet-ins and port-status on a
            # service connection (see the module doc), whole frames on any.
            self.send_msg(self.ofproto_parser.OFPSetConfig(
                self, self.ofproto.OFPC_FRAG_NORMAL, self.ofproto.OFPCML_NO_BUFFER))
        super().set_state(state)

    def add_close_hook(self, fn: Callable[[], None]) -> None:
        """Call fn (once, in the receive thread) when the connection ends; at
        once if it already has."""
        with self._probe_lock:
            if not self._ended:
                self._close_hooks.append(fn)
                return
        fn()

    def _run_close_hooks(self) -> None:
        with self._probe_lock:
            self._ended = True
            hooks, self._close_hooks = self._close_hooks, []
        for fn in hooks:
            try:
                fn()
            except Exception:
                LOG.exception("OpenFlow connection from %s: close hook failed", self.peer)

    def close(self):
        """os-ken's way to drop a datapath: here it shuts the connection down,
        and the receive thread reports it dead once both threads are done."""
        self.fence("closed by the controller")

    def fence(self, why: str) -> None:
        if self.alive:
            args = (self.peer, f" (datapath {self.id:016x})" if self.id is not None else "", why)
            if self.state == MAIN_DISPATCHER:
                LOG.info("OpenFlow connection from %s%s: %s", *args)
            else:
                THROTTLED("fence", logging.INFO, "OpenFlow connection from %s%s: %s", *args)
        self.alive = False
        self._shutdown()

    def _shutdown(self) -> None:
        # The socket level, also for a TLS socket: SSLSocket.shutdown drops
        # its SSL object, which the receive thread may be using right now.
        self._shut = True
        try:
            socket.socket.shutdown(self.socket, socket.SHUT_RDWR)
        except OSError:
            pass

    # -- liveness probe ---------------------------------------------------------
    def probe(self, timeout: float) -> bool:
        """True when the switch answers an echo request within timeout."""
        if not self.alive:
            return False
        xid = next(self._probe_xids) & self.ofproto.MAX_XID
        answered = threading.Event()
        with self._probe_lock:
            self._probes[xid] = answered
        try:
            req = self.ofproto_parser.OFPEchoRequest(self, data=PROBE_DATA)
            req.set_xid(xid)
            if not self.send_msg(req):
                return False
            return answered.wait(timeout) and self.alive
        finally:
            with self._probe_lock:
                self._probes.pop(xid, None)

    # -- sending -----------------------------------------------------------------
    def send(self, buf, close_socket=False):
        self._send_q_sem.acquire()
        q = self.send_q   # read once: the sender sets it to None when it ends
        if q is None:
            self._send_q_sem.release()
            return False
        q.put((buf, close_socket))
        return True

    def _send_nowait(self, buf) -> bool:
        """send() for the receive thread, which must never block on a full
        send queue: that is how a peer gone without a FIN looks, and the
        probe is there to find it. A probe not sent still starts the clock."""
        if not self._send_q_sem.acquire(blocking=False):
            return False
        q = self.send_q
        if q is None:
            self._send_q_sem.release()
            return False
        q.put((buf, False))
        return True

    def _send_loop(self):
        try:
            while True:
                buf, close_socket = self.send_q.get()
                if buf is None:
                    break   # the receive thread's wake-up: no semaphore slot was taken
                self._send_q_sem.release()
                if self._io_lock is None:
                    self.socket.sendall(buf)
                else:
                    with self._io_lock:
                        self.socket.sendall(buf)
                if close_socket:
                    break
        except OSError as e:
            if not self._shut:
                # A client gone during its handshake is routine (probes, port scans).
                log = LOG.info if self.state == MAIN_DISPATCHER else LOG.debug
                log("OpenFlow connection from %s: send failed (%s); closing", self.peer, e)
        finally:
            q, self.send_q = self.send_q, None
            try:
                while True:
                    buf, _ = q.get_nowait()
                    if buf is not None:
                        self._send_q_sem.release()
            except queue.Empty:
                pass
            self.alive = False
            self._shutdown()

    # -- receiving ------------------------------------------------------------------
    def serve(self):
        self.conns.started(self)
        sender = threading.Thread(target=self._send_loop, daemon=True,
                                  name=f"ofp-send-{self.peer}")
        sender.start()
        try:
            self.send_msg(self.ofproto_parser.OFPHello(self))
            self._recv_loop()
        except Exception:
            # os-ken's parser raises on what it cannot read; anyone can send that.
            THROTTLED("error", logging.ERROR, "OpenFlow connection from %s%s failed", self.peer,
                      f" (datapath {self.id:016x})" if self.id is not None else "",
                      exc_info=True)
        finally:
            self.alive = False
            self._shutdown()
            q = self.send_q
            if q is not None:
                try:
                    q.put_nowait((None, False))
                except queue.Full:
                    pass   # the sender is busy with a send that now fails, and ends
            sender.join()
            try:
                self.socket.close()
            except OSError:
                pass
            self.conns.closed(self)
            self.is_active = False
            self._run_close_hooks()
            Datapath.set_state(self, DEAD_DISPATCHER)
            with self._probe_lock:
                for ev in self._probes.values():
                    ev.set()

    def _read(self) -> Optional[bytes]:
        """Up to 64 KiB; b"" at the end; None when nothing came for POLL_S
        (or until the handshake deadline, if sooner)."""
        sock = self.socket
        if self._io_lock is None or not sock.pending():
            wait = min(POLL_S, self.conns.limits.inactivity_probe / 2)
            if self.state != MAIN_DISPATCHER:
                wait = min(wait, max(0.0, self.deadline - time.monotonic()))
            if not self._poll.poll(wait * 1000):
                return None
        if self._io_lock is None:
            return sock.recv(65536)
        with self._io_lock:
            try:
                return sock.recv(65536)
            except (ssl.SSLWantReadError, socket.timeout):
                return None

    def _recv_loop(self):
        buf = bytearray()
        hdr_len = ofproto_common.OFP_HEADER_SIZE
        while self.alive:
            if self.state != MAIN_DISPATCHER and time.monotonic() >= self.deadline:
                self.conns.count("handshake_timeouts")
                self.fence("no OpenFlow handshake within the handshake timeout")
                return
            try:
                data = self._read()
            except OSError:
                return
            if data is None:
                if self.state == MAIN_DISPATCHER and not self._idle(time.monotonic()):
                    return
                continue
            if not data:
                return
            self.last_rx = time.monotonic()
            self._idle_probe_at = None
            buf += data
            while len(buf) >= hdr_len and self.alive:
                version, msg_type, msg_len, xid = ofproto_parser.header(buf)
                if msg_len < hdr_len:
                    self.fence(f"message with impossible length {msg_len}")
                    return
                if len(buf) < msg_len:
                    break
                self._dispatch(version, msg_type, msg_len, xid, bytes(buf[:msg_len]))
                del buf[:msg_len]

    def _idle(self, now: float) -> bool:
        """The inactivity probe; False when the connection was closed for it."""
        limit = self.conns.limits.inactivity_probe
        if self._idle_probe_at is None:
            if now - self.last_rx >= limit:
                self._idle_probe_at = now
                req = self.ofproto_parser.OFPEchoRequest(self, data=b"vmflow-idle-probe")
                req.set_xid(next(self._probe_xids) & self.ofproto.MAX_XID)
                req.serialize()
                self._send_nowait(req.buf)
        elif now - self._idle_probe_at >= limit:
            LOG.warning("OpenFlow connection from %s (datapath %016x): nothing received "
                        "for %.1fs, not even an answer to an echo request; closing",
                        self.peer, self.id, now - self.last_rx)
            self.fence("no answer to an inactivity probe")
            return False
        return True

    def _dispatch(self, version, msg_type, msg_len, xid, raw: bytes) -> None:
        msg = ofproto_parser.msg(self, version, msg_type, msg_len, xid, raw)
        if msg is None:
            return
        if msg_type == OFPT_ECHO_REPLY:
            with self._probe_lock:
                waiter = self._probes.get(xid)
            if waiter is not None:
                waiter.set()
        if self.ofp_brick is None:
            return
        ev = ofp_event.ofp_msg_to_ev(msg)
        state = self.state
        self.ofp_brick.send_event_to_observers(ev, state)
        for handler in self.ofp_brick.get_handlers(ev, state):
            handler(ev)


class Listener:
    """The accept loop; os-ken's OFPHandler runs it in place of its own
    OpenFlowController (runtime.py)."""

    def __init__(self, sock: socket.socket, conns: Connections, tls: Optional[ssl.SSLContext]):
        self.sock = sock
        self.conns = conns
        self.tls = tls

    @classmethod
    def bind(cls, host: str, port: int, conns: Connections,
             tls: Optional[ssl.SSLContext]) -> "Listener":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
        return cls(sock, conns, tls)

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()[:2]

    def __call__(self):
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError as e:
                if self.sock.fileno() < 0:
                    return
                THROTTLED("accept", logging.ERROR, "OpenFlow accept failed: %s", e)
                time.sleep(0.1)   # e.g. out of file descriptors: do not spin
                continue
            if not self.conns.opening():
                THROTTLED("cap", logging.WARNING, "OpenFlow connection from %s closed at "
                          "accept: %d connections are already in their handshake",
                          _peer(addr), self.conns.limits.max_half_open)
                _close(conn)
                continue
            deadline = time.monotonic() + self.conns.limits.handshake_timeout
            try:
                threading.Thread(target=self._serve, args=(conn, addr, deadline), daemon=True,
                                 name=f"ofp-conn-{_peer(addr)}").start()
            except RuntimeError as e:   # no thread to be had
                LOG.error("OpenFlow connection from %s: %s", _peer(addr), e)
                self.conns.closed(None)
                _close(conn)

    def _serve(self, conn: socket.socket, addr, deadline: float) -> None:
        dp = None
        try:
            if self.tls is not None:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError) as e:
                    self.conns.count("handshake_timeouts" if isinstance(e, socket.timeout)
                                     else "tls_failures")
                    THROTTLED("tls", logging.WARNING, "OpenFlow TLS handshake with %s "
                              "failed: %s", _peer(addr), e)
                    _close(conn)
                    self.conns.closed(None)
                    return
            dp = VmflowDatapath(conn, addr, self.conns, deadline)
        except Exception:
            LOG.exception("OpenFlow connection from %s", _peer(addr))
            _close(conn)
            self.conns.closed(None)
            return
        # From here dp.serve() reports the close (Connections.closed).
        dp.serve()


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _peer(address) -> str:
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _cert_sha256(sock) -> Optional[str]:
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
