"""Issue 16: the OpenFlow listener on real OVS. An impostor claiming a
connected datapath id changes nothing; two bridges sharing a datapath id do
not cut each other off; a silent holder gives way to the real switch; idle
connections time out; thousands of short connections leak no thread and no
memory (controller/ofconn.py).

    h1 ── fabric ── h2         n1 10.0.0.0/24 vlan 101: a (h1), b (h2)
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from harness import sh, wait_for
from ofclient import FakeSwitch, hello, proc_status

pytestmark = pytest.mark.mininet

CONVERGE = 20.0
HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def topo(mininet_ready, tmp_path_factory):
    from harness import Cloud
    cloud = Cloud.start(tmp_path_factory.mktemp("ofconn"),
                        {"openflow": {"handshake_timeout": HANDSHAKE_TIMEOUT,
                                      "echo_timeout": 1.0}})
    try:
        h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
        n1 = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
        a = cloud.add_vm(h1, n1, "a", ip="10.0.0.11")
        b = cloud.add_vm(h2, n1, "b", ip="10.0.0.12")
        a.wait_ping(b, CONVERGE)
        cloud.wait_controller_synced()
        yield cloud, h1, h2, a, b
    finally:
        cloud.close()


def ofp_counters(cloud) -> dict:
    return {k: v for k, v in cloud.status()["counters"].items() if k.startswith("ofp_")}


class Pinger:
    """A 10/s ping from a to b in the background; stop() -> (sent, received)."""

    def __init__(self, a, b, seconds: float):
        self.result = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", a.ping_stats(b, int(seconds * 10), 0.1)),
            daemon=True)
        self.thread.start()

    def stop(self) -> tuple[int, int]:
        self.thread.join(60)
        return self.result


def test_an_impostor_claiming_a_connected_datapath_changes_nothing(topo):
    cloud, h1, _h2, a, b = topo
    before = cloud.switch_status(h1)
    flows_before = h1.flows()
    refused_before = ofp_counters(cloud).get("ofp_duplicate_dpid_refused", 0)
    ping = Pinger(a, b, 8)
    impostors = []
    for _ in range(3):
        imp = FakeSwitch(cloud.ofp_port).handshake(h1.dpid)
        impostors.append(imp)
        assert imp.wait_closed(10), "the controller kept the impostor's connection open"
    time.sleep(2)   # anything queued for the impostor would have been sent by now
    sent, received = ping.stop()
    for imp in impostors:
        assert imp.programming() == [], f"the impostor was programmed: {imp.programming()}"
        imp.close()
    assert sent >= 70 and received == sent, f"ping a->b lost {sent - received} of {sent}"
    # The real switch never noticed: same connection, same flows, in sync.
    assert h1.connected()
    after = cloud.switch_status(h1)
    assert after["connected_at"] == before["connected_at"], "h1 was reconnected"
    assert after["in_sync"] and h1.flows() == flows_before
    st = cloud.status()
    assert st["counters"]["ofp_duplicate_dpid_refused"] == refused_before + 3
    rec = st["refused_dpids"][h1.dpid_hex]
    assert rec["refused"] >= 3
    assert rec["last_address"].startswith("127.0.0.1:")
    assert a.ping(b, count=3)


def test_an_impostor_that_leaves_does_not_take_the_switch_with_it(topo):
    """The issue's second failure: after the impostor left, the controller
    had forgotten the datapath while OVS still thought it was connected."""
    cloud, h1, _h2, a, b = topo
    before = cloud.switch_status(h1)["connected_at"]
    imp = FakeSwitch(cloud.ofp_port).handshake(h1.dpid)
    assert imp.wait_closed(10)
    imp.close()
    time.sleep(1.5)
    assert h1.dpid_hex in cloud.status()["switches"]
    assert cloud.switch_status(h1)["connected_at"] == before
    # The controller still programs h1: a new VM there gets its flows.
    c = cloud.add_vm(h1, a.network, "c", ip="10.0.0.13")
    c.wait_ping(b, CONVERGE)


def test_two_bridges_sharing_a_datapath_id_do_not_flap(topo):
    cloud, h1, _h2, a, b = topo
    before = cloud.switch_status(h1)["connected_at"]
    flows_before = h1.flows()
    refused_before = cloud.status()["refused_dpids"].get(h1.dpid_hex, {}).get("refused", 0)
    twin = f"{cloud.prefix}-twin"
    cloud._bridges.append(twin)
    sh(["ovs-vsctl", "--timeout=20", "add-br", twin, "--", "set", "bridge", twin,
        "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
        f"other-config:datapath-id={h1.dpid_hex}", "other-config:disable-in-band=true",
        *cloud._owner_ids()])
    ping = Pinger(a, b, 8)
    sh(["ovs-vsctl", "--timeout=20", "--", "--id=@c", "create", "controller",
        f"target=\"tcp:127.0.0.1:{cloud.ofp_port}\"", "max_backoff=1000",
        "connection_mode=out-of-band", "inactivity_probe=5000",
        "--", "set", "bridge", twin, "controller=@c"])
    # The twin retries every second or so; each try is refused.
    wait_for(lambda: cloud.status()["refused_dpids"].get(h1.dpid_hex, {}).get("refused", 0)
             >= refused_before + 2, 15, 0.2, "the twin bridge to be refused twice")
    sent, received = ping.stop()
    assert sent >= 70 and received == sent, f"ping a->b lost {sent - received} of {sent}"
    assert cloud.switch_status(h1)["connected_at"] == before, "h1 flapped"
    assert h1.connected() and h1.flows() == flows_before
    assert sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", twin]).count("cookie=") == 0
    sh(["ovs-vsctl", "--timeout=20", "del-br", twin])


def test_a_silent_holder_gives_way_to_the_real_switch(topo):
    """A connection that holds a datapath id but no longer answers echo
    requests (a switch gone without a FIN) is closed when the id is claimed
    again, and the new connection takes over."""
    cloud, h1, h2, a, b = topo
    # Take h2 off the controller, let a fake that never answers echo hold its id.
    sh(["ovs-vsctl", "--timeout=20", "del-controller", h2.bridge])
    wait_for(lambda: h2.dpid_hex not in cloud.status()["switches"], 15, 0.2,
             "the controller to see h2 leave")
    holder = FakeSwitch(cloud.ofp_port).handshake(h2.dpid, answer_echo=False)
    wait_for(lambda: h2.dpid_hex in cloud.status()["switches"], 10, 0.1, "the holder to connect")
    replaced = ofp_counters(cloud).get("ofp_duplicate_dpid_replaced", 0)
    since = time.time()
    cloud.connect(h2)
    assert holder.wait_closed(15), "the silent holder was not closed"
    holder.close()
    cloud.wait_controller_synced([h2], timeout=CONVERGE, since=since)
    assert ofp_counters(cloud)["ofp_duplicate_dpid_replaced"] == replaced + 1
    a.wait_ping(b, CONVERGE)


def test_connections_that_never_finish_the_handshake_are_closed(topo):
    cloud = topo[0]
    timeouts = ofp_counters(cloud).get("ofp_handshake_timeouts", 0)
    silent = socket.create_connection(("127.0.0.1", cloud.ofp_port))
    hello_only = socket.create_connection(("127.0.0.1", cloud.ofp_port))
    hello_only.sendall(hello())
    start = time.monotonic()
    for s in (silent, hello_only):
        s.settimeout(HANDSHAKE_TIMEOUT + 5)
        while True:   # the controller's HELLO and FEATURES_REQUEST, then the end
            try:
                if s.recv(4096) == b"":
                    break
            except ConnectionResetError:
                break
        s.close()
    took = time.monotonic() - start
    assert HANDSHAKE_TIMEOUT - 0.5 <= took <= HANDSHAKE_TIMEOUT + 2, took
    wait_for(lambda: ofp_counters(cloud)["ofp_handshake_timeouts"] == timeouts + 2, 5, 0.1,
             "both timeouts to be counted")


def read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the controller closed the connection early"
        buf += chunk
    return buf


def _settled(cloud) -> dict:
    """The controller's threads and RSS once no OpenFlow connection but the
    bridges' is left."""
    n_bridges = len(cloud.hosts)
    wait_for(lambda: ofp_counters(cloud)["ofp_connections"] == n_bridges, 20, 0.2,
             lambda: f"short connections to close: {ofp_counters(cloud)}")
    # Then the thread count stops moving (the last threads are on their way out).
    last = {"n": None}

    def steady():
        n = proc_status(cloud.controller.pid)["Threads"]
        same, last["n"] = n == last["n"], n
        return same

    wait_for(steady, 20, 1.0, "the controller's thread count to settle")
    return proc_status(cloud.controller.pid)


def test_2000_connect_hello_close_cycles_leak_no_thread_and_no_memory(topo):
    cloud = topo[0]
    pid = cloud.controller.pid

    def cycles(n: int, full_handshake_every: int = 0) -> None:
        for i in range(n):
            if full_handshake_every and i % full_handshake_every == 0:
                # A whole handshake as an unknown datapath, then gone: a
                # switch that reconnects goes through this.
                sw = FakeSwitch(cloud.ofp_port).handshake(0xFEED0000 + i)
                # The port descriptions, then the reconciler's first read: MAIN.
                wait_for(lambda: sw.types().count(18) >= 2, 10, 0.01, "a whole handshake")
                sw.close()
                continue
            # Close once the controller has nothing more to send: its HELLO
            # read (every other cycle), or our HELLO answered with
            # FEATURES_REQUEST. os-ken's own listener kept both threads of
            # such a connection forever.
            s = socket.create_connection(("127.0.0.1", cloud.ofp_port), timeout=10)
            read_exact(s, 8)
            if i % 2:
                s.sendall(hello())
                read_exact(s, 8)
            s.close()

    cycles(200, full_handshake_every=20)   # warm up: first-use allocations, caches
    start = _settled(cloud)
    cycles(2000, full_handshake_every=20)
    end = _settled(cloud)
    cloud.controller.assert_running()
    print(f"controller {pid}: before {start}, after 2000 cycles {end}")
    assert end["Threads"] <= start["Threads"] * 1.05, (start, end)
    assert end["VmRSS"] <= start["VmRSS"] * 1.05, (start, end)
    assert ofp_counters(cloud)["ofp_half_open"] == 0
