"""Which connection owns a datapath id (ofconn.Connections), the half-open
cap, and the ofp_listen syntax. The listener itself runs on real sockets and
real OVS in tests/mininet/test_ofconn_ovs.py."""
from __future__ import annotations

import threading

import pytest

from controller.ofconn import Connections, Limits, is_loopback, tls_context
from topology.config import new_conf, parse_ofp_listen


class FakeDp:
    """Just what Connections uses of a VmflowDatapath."""

    def __init__(self, dpid, peer, answers=True):
        self.id = dpid
        self.peer = peer
        self.alive = True
        self.answers = answers
        self.cert_sha256 = None
        self.counted_established = False
        self.probed = 0
        self.fenced = None

    def probe(self, timeout):
        self.probed += 1
        return self.answers and self.alive

    def fence(self, why):
        self.fenced = why
        self.alive = False


@pytest.fixture
def conns():
    return Connections(Limits(handshake_timeout=1, max_half_open=2, echo_timeout=0.1))


def test_the_first_connection_takes_a_free_datapath_id(conns):
    a = FakeDp(1, "10.0.0.1:1")
    assert conns.admit(a)
    assert conns.owner(1) is a


def test_a_second_connection_is_refused_while_the_first_answers_echo(conns):
    a, b = FakeDp(1, "10.0.0.1:1"), FakeDp(1, "10.0.0.66:2")
    assert conns.admit(a)
    assert not conns.admit(b)
    assert a.probed == 1 and a.fenced is None and conns.owner(1) is a
    snap = conns.snapshot()
    assert snap["counters"]["ofp_duplicate_dpid_refused"] == 1
    rec = snap["refused_dpids"]["0000000000000001"]
    assert rec["refused"] == 1
    assert rec["last_address"] == "10.0.0.66:2" and rec["kept_address"] == "10.0.0.1:1"


def test_every_retry_of_a_duplicate_is_refused_and_the_first_never_flaps(conns):
    a = FakeDp(7, "h1")
    assert conns.admit(a)
    for i in range(5):
        assert not conns.admit(FakeDp(7, f"h2:{i}"))
    assert conns.owner(7) is a and a.fenced is None
    assert conns.snapshot()["refused_dpids"]["0000000000000007"]["refused"] == 5


def test_a_silent_incumbent_is_closed_and_the_newcomer_takes_over(conns):
    a, b = FakeDp(1, "old", answers=False), FakeDp(1, "new")
    assert conns.admit(a)
    assert conns.admit(b)
    assert conns.owner(1) is b
    assert a.fenced, "the replaced connection must be closed, so its switch reconnects"
    assert conns.snapshot()["counters"]["ofp_duplicate_dpid_replaced"] == 1


def test_a_dead_incumbent_is_not_probed(conns):
    a, b = FakeDp(1, "old"), FakeDp(1, "new")
    assert conns.admit(a)
    a.alive = False
    assert conns.admit(b)
    assert a.probed == 0 and conns.owner(1) is b


def test_closing_the_owner_frees_the_datapath_id_and_only_the_owner_does(conns):
    a, b = FakeDp(1, "a"), FakeDp(1, "b")
    assert conns.opening() and conns.opening()
    assert conns.admit(a)
    conns.handshake_done(a)
    assert not conns.admit(b)
    conns.closed(b)              # the refused one leaving changes nothing
    assert conns.owner(1) is a
    conns.closed(a)
    assert conns.owner(1) is None
    assert conns.snapshot()["counters"]["ofp_half_open"] == 0


def test_half_open_connections_are_capped(conns):
    assert conns.opening() and conns.opening()
    assert not conns.opening()
    conns.closed(None)
    assert conns.opening()
    snap = conns.snapshot()["counters"]
    assert snap["ofp_half_open_rejected"] == 1 and snap["ofp_half_open"] == 2


def test_concurrent_newcomers_leave_one_owner(conns):
    a = FakeDp(1, "a", answers=False)
    assert conns.admit(a)
    newcomers = [FakeDp(1, f"n{i}") for i in range(8)]
    results = {}
    threads = [threading.Thread(target=lambda d=d: results.__setitem__(d.peer, conns.admit(d)))
               for d in newcomers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [p for p, ok in results.items() if ok]
    assert len(winners) == 1
    assert conns.owner(1).peer == winners[0]


def test_refusal_records_are_bounded(conns):
    for dpid in range(200):
        assert conns.admit(FakeDp(dpid, "a"))
        assert not conns.admit(FakeDp(dpid, "b"))
    assert len(conns.snapshot()["refused_dpids"]) == 64


@pytest.mark.parametrize("value, expected", [
    ("0.0.0.0:6653", ("tcp", "0.0.0.0", 6653)),
    ("tcp:127.0.0.1:6653", ("tcp", "127.0.0.1", 6653)),
    ("ssl:10.1.2.3:6653", ("ssl", "10.1.2.3", 6653)),
    ("ssl:[::1]:6653", ("ssl", "::1", 6653)),
    ("[::]:6653", ("tcp", "::", 6653)),
    (":6653", ("tcp", "0.0.0.0", 6653)),
])
def test_ofp_listen_syntax(value, expected):
    assert parse_ofp_listen(value) == expected


@pytest.mark.parametrize("value", ["6653", "ssl:6653", "tls:1.2.3.4:6653", "ssl:1.2.3.4:0",
                                   "1.2.3.4:http"])
def test_ofp_listen_rejects(value):
    with pytest.raises(ValueError, match="ofp_listen"):
        parse_ofp_listen(value)


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("::")


def test_tls_needs_all_three_files(tmp_path):
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    with pytest.raises(ValueError, match="ca_cert, certificate, private_key"):
        tls_context(conf)
    conf.set_override("ca_cert", str(tmp_path / "none.pem"), group="openflow")
    conf.set_override("certificate", str(tmp_path / "none.pem"), group="openflow")
    conf.set_override("private_key", str(tmp_path / "none.pem"), group="openflow")
    with pytest.raises(ValueError, match="certificate"):
        tls_context(conf)


def test_a_holder_that_dies_during_the_probe_leaves_the_id_to_the_newcomer(conns):
    a, b = FakeDp(1, "old"), FakeDp(1, "new")
    assert conns.admit(a)

    def probe(timeout):
        a.alive = False   # its connection ends while we wait for the echo
        return False
    a.probe = probe
    assert conns.admit(b)
    assert conns.owner(1) is b
    assert conns.snapshot()["counters"]["ofp_duplicate_dpid_replaced"] == 0


PIN = ":".join(["AB"] * 32)
OTHER = ":".join(["CD"] * 32)


def pinned(conns, pins):
    conns.pin_for = pins.get
    return conns


def test_a_pinned_host_refuses_any_other_certificate_even_first(conns):
    pinned(conns, {1: PIN})
    rogue, real = FakeDp(1, "rogue"), FakeDp(1, "real")
    rogue.cert_sha256, real.cert_sha256 = OTHER, PIN
    assert not conns.admit(rogue)
    assert conns.admit(real)
    assert not conns.admit(rogue)
    assert conns.owner(1) is real and real.probed == 0
    snap = conns.snapshot()
    assert snap["counters"]["ofp_cert_pin_refused"] == 2
    assert snap["refused_dpids"]["0000000000000001"]["last_certificate"] == OTHER


def test_a_plain_tcp_connection_never_matches_a_pin(conns):
    pinned(conns, {1: PIN})
    assert not conns.admit(FakeDp(1, "tcp"))


def test_a_pin_set_later_closes_the_connected_switch_and_lets_the_pinned_one_in(conns):
    pins = {}
    pinned(conns, pins)
    old, new = FakeDp(1, "old"), FakeDp(1, "new")
    old.cert_sha256, new.cert_sha256 = OTHER, PIN
    assert conns.admit(old)
    pins[1] = PIN
    assert conns.admit(new), "the certificate the host pins wins over a live incumbent"
    assert old.fenced and old.probed == 0 and conns.owner(1) is new


def test_enforce_pins_closes_connections_whose_certificate_is_not_pinned(conns):
    pins = {}
    pinned(conns, pins)
    a, b = FakeDp(1, "a"), FakeDp(2, "b")
    a.cert_sha256, b.cert_sha256 = OTHER, PIN
    assert conns.admit(a) and conns.admit(b)
    assert conns.enforce_pins() == 0
    pins.update({1: PIN, 2: PIN})
    assert conns.enforce_pins() == 1
    assert a.fenced and b.fenced is None


@pytest.mark.parametrize("listen, warns", [("0.0.0.0:{}", True), ("tcp:127.0.0.1:{}", False),
                                           ("[::1]:{}", False)])
def test_plain_tcp_off_loopback_warns_at_start(listen, warns, caplog):
    import socket
    from controller.runtime import open_listener
    family = socket.AF_INET6 if "::" in listen else socket.AF_INET
    with socket.socket(family) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override("ofp_listen", listen.format(port))
    with caplog.at_level("WARNING", logger="controller.runtime"):
        listener = open_listener(conf)
    try:
        assert listener.tls is None and listener.address[1] > 0
        assert any("plain TCP" in r.getMessage() for r in caplog.records) == warns
    finally:
        listener.sock.close()


# -- the listener on loopback sockets (no os-ken apps: nothing answers HELLO,
# so no connection ever finishes its handshake) --------------------------------

@pytest.fixture
def listener():
    import socket
    from controller.ofconn import Listener
    conns = Connections(Limits(handshake_timeout=1.0, max_half_open=3, echo_timeout=0.5))
    lst = Listener.bind("127.0.0.1", _free_port(), conns, None)
    threading.Thread(target=lst, daemon=True).start()
    yield lst
    try:
        lst.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    lst.sock.close()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ended(s, timeout):
    """Seconds until the peer closed s (reading what it sends), or None."""
    import socket
    import time
    start = time.monotonic()
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def _wait(cond, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_over_the_half_open_cap_a_connection_is_closed_at_accept(listener):
    import socket
    port = listener.address[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert _wait(lambda: listener.conns.half_open == 3)
    extra = socket.create_connection(("127.0.0.1", port))
    took = _ended(extra, 0.9)
    assert took is not None and took < 0.5, "the connection over the cap was not closed at once"
    counters = listener.conns.snapshot()["counters"]
    assert counters["ofp_half_open_rejected"] == 1
    # The held ones time out after the handshake timeout; then there is room again.
    for s in held:
        assert _ended(s, 3) is not None
    assert _wait(lambda: listener.conns.half_open == 0)
    assert listener.conns.snapshot()["counters"]["ofp_handshake_timeouts"] == 3
    for s in held + [extra]:
        s.close()


def test_every_connection_thread_ends_with_its_connection(listener):
    import socket
    before = threading.active_count()
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", listener.address[1]))
        if i % 2:
            s.recv(8)   # the controller's HELLO: it has nothing more to send
        s.close()
    assert _wait(lambda: threading.active_count() <= before and listener.conns.half_open == 0)
    assert listener.conns.snapshot()["counters"]["ofp_connections"] == 0


def test_client_triggered_logs_are_throttled(caplog):
    from controller.ofconn import _Throttled
    log = _Throttled(every=60)
    with caplog.at_level("INFO", logger="controller.ofconn"):
        for i in range(100):
            log("tls", 30, "handshake %d failed", i)
        log("cap", 30, "over the cap")
    # Only this test's messages: connections left by earlier tests may still
    # log on their own threads under the same logger.
    def mine():
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith(("handshake ", "over the cap"))]
    assert mine() == ["handshake 0 failed", "over the cap"]
    log.every = 0
    with caplog.at_level("INFO", logger="controller.ofconn"):
        log("tls", 30, "handshake %d failed", 100)
    assert mine()[-1] == "handshake 100 failed (and 99 more like it in the last 0s)"


# -- a connection in MAIN: the inactivity probe, and the close hook that fails
# a request in flight at once (a worker must not wait out its timeout) ----------

def _main_connection(limits):
    """A VmflowDatapath on a loopback TCP pair, put in MAIN by hand (no
    os-ken apps run here), its serve() in a thread; returns (dp, peer, thread)."""
    import socket
    import time
    from os_ken.controller.handler import MAIN_DISPATCHER
    from controller.ofconn import VmflowDatapath
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        peer = socket.create_connection(srv.getsockname())
        conn, addr = srv.accept()
    conns = Connections(limits)
    conns.opening()
    dp = VmflowDatapath(conn, addr, conns, time.monotonic() + 60)
    dp.id = 0x42
    dp.set_version(4)   # OpenFlow 1.3, as a negotiated connection
    dp.set_state(MAIN_DISPATCHER)   # admitted: the datapath id is free
    t = threading.Thread(target=dp.serve, daemon=True)
    t.start()
    return dp, peer, t


def _messages(peer, seconds):
    """OpenFlow message types the controller sent within `seconds`; the peer
    answers nothing."""
    import socket
    import struct
    import time
    types, buf = [], b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peer.settimeout(max(0.01, end - time.monotonic()))
        try:
            data = peer.recv(4096)
        except socket.timeout:
            break
        except ConnectionResetError:
            types.append("closed")
            break
        if not data:
            types.append("closed")
            break
        buf += data
        while len(buf) >= 8:
            _, t, length, _ = struct.unpack_from("!BBHI", buf)
            types.append(t)
            buf = buf[length:]
    return types


def test_a_silent_switch_is_probed_then_closed():
    dp, peer, t = _main_connection(Limits(inactivity_probe=0.5))
    try:
        seen = _messages(peer, 5)
        # SET_CONFIG (9) on entering MAIN and HELLO (0), in either order (two
        # threads), then an ECHO_REQUEST (2) after the idle time, then the close.
        assert sorted(seen[:2]) == [0, 9] and seen[2] == 2 and seen[-1] == "closed", seen
        t.join(2)
        assert not t.is_alive() and not dp.alive
    finally:
        peer.close()


def test_entering_main_asks_for_whole_packet_ins():
    """A service connection (how switches should name vmflow) gets no
    packet-in until miss_send_len is nonzero; NO_BUFFER also means whole frames."""
    import struct
    dp, peer, t = _main_connection(Limits(inactivity_probe=30))
    try:
        peer.settimeout(2)
        buf = b""
        while len(buf) < 8 + 12:
            buf += peer.recv(4096)
        msgs = {}
        while len(buf) >= 8:
            _, typ, length, _ = struct.unpack_from("!BBHI", buf)
            msgs[typ] = buf[:length]
            buf = buf[length:]
        flags, miss_send_len = struct.unpack_from("!HH", msgs[9], 8)
        assert (flags, miss_send_len) == (0, 0xFFFF)
    finally:
        peer.close()
        t.join(3)


def test_a_switch_that_answers_is_kept():
    import struct
    import time
    dp, peer, t = _main_connection(Limits(inactivity_probe=0.5))
    try:
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            peer.sendall(struct.pack("!BBHI", 4, 2, 8, 1))   # an echo request of its own
            time.sleep(0.2)
        assert dp.alive and t.is_alive()
    finally:
        peer.close()
        t.join(3)


def test_a_request_in_flight_fails_as_soon_as_the_connection_ends():
    import time
    from controller.ofchannel import OFChannel
    from controller.reconciler import ChannelError
    dp, peer, t = _main_connection(Limits(inactivity_probe=30))
    ch = OFChannel(dp, timeout=30)
    outcome = {}

    def read():
        start = time.monotonic()
        try:
            ch.read_flows()
        except ChannelError as e:
            outcome["error"] = str(e)
        outcome["took"] = time.monotonic() - start

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    peer.close()   # the switch's end: no reply will ever come
    reader.join(5)
    assert "error" in outcome and outcome["took"] < 2.5, outcome
    # And every later request fails at once, without a send.
    start = time.monotonic()
    with pytest.raises(ChannelError):
        ch.read_meters()
    assert time.monotonic() - start < 0.1
    t.join(2)


def test_a_peer_that_stops_reading_is_closed_without_blocking_the_receive_thread():
    """What a switch gone without a FIN looks like: our sends pile up. The
    probe must not wait for room in the send queue; the connection is
    closed on time anyway."""
    import time
    dp, peer, t = _main_connection(Limits(inactivity_probe=0.5))
    try:
        assert sorted(_messages(peer, 0.2)[:2]) == [0, 9]   # HELLO and SET_CONFIG are out
        # Fill the send queue (os-ken's is bounded) as a sender stuck on a dead peer would.
        taken = 0
        while dp._send_q_sem.acquire(blocking=False):
            taken += 1
        assert taken > 0
        start = time.monotonic()
        t.join(5)
        assert not t.is_alive() and not dp.alive
        assert time.monotonic() - start < 3
    finally:
        peer.close()
