"""controller/cluster.py's etcd part against real etcd members (started and
stopped here): leases, the watched live set, generation ids, one member of
three lost, a controller that dies."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cluster import EtcdUnavailable, Membership, parse_endpoints
from topology.etcd_cluster import EtcdCluster

TTL = 2
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(3) as c:
        yield c


def endpoints(etcd):
    return parse_endpoints(",".join(etcd.endpoints))


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_generation_ids_only_grow_and_slaves_read_the_newest(etcd):
    m = Membership(endpoints(etcd), "g").start()
    try:
        a = m.next_generation()
        b = m.next_generation()
        assert 0 < a < b == m.current_generation()
    finally:
        m.stop()


def test_a_killed_controller_leaves_the_live_set_within_its_ttl(etcd):
    seen = []
    b = Membership(endpoints(etcd), "b", lease_ttl=TTL, on_change=seen.append).start()
    child = subprocess.Popen([sys.executable, "-c", f"""
import time
from controller.cluster import Membership, parse_endpoints
Membership(parse_endpoints({",".join(etcd.endpoints)!r}), "a", lease_ttl={TTL}).start()
print("up", flush=True)
time.sleep(60)
"""], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        wait(lambda: b.plan.live == {"a", "b"}, 5)
        killed = time.monotonic()
        child.kill()
        child.wait()
        gone = wait(lambda: b.plan.live == {"b"}, TTL + 3)
        assert gone - killed <= TTL + 1
        assert [sorted(p.live) for p in seen][-2:] == [["a", "b"], ["b"]]
    finally:
        child.kill()
        b.stop()


def test_a_clean_stop_leaves_at_once(etcd):
    a = Membership(endpoints(etcd), "a2", lease_ttl=10).start()
    b = Membership(endpoints(etcd), "b2", lease_ttl=10).start()
    try:
        wait(lambda: {"a2", "b2"} <= b.plan.live and b.watching.is_set(), 5)
        stopped = time.monotonic()
        a.stop()
        assert wait(lambda: "a2" not in b.plan.live, 3) - stopped < 2   # not the 10 s TTL
    finally:
        b.stop()


def test_one_etcd_member_of_three_lost_changes_nothing(etcd):
    a = Membership(endpoints(etcd), "a3", lease_ttl=TTL).start()
    b = Membership(endpoints(etcd), "b3", lease_ttl=TTL).start()
    changes = []
    b.on_change = changes.append
    try:
        wait(lambda: {"a3", "b3"} <= b.plan.live, 5)
        etcd.kill_member(0)   # the member both clients talk to first
        time.sleep(3 * TTL)
        assert {"a3", "b3"} <= b.plan.live and changes == []
        assert a.next_generation() > 0
        # The watch moved to a live member: a controller dying now is
        # still seen within its TTL and a second.
        a.stopping.set()   # dies: no keepalive, no revoke
        died = time.monotonic()
        assert wait(lambda: "a3" not in b.plan.live, TTL + 3) - died <= TTL + 1
    finally:
        a.stop()
        b.stop()
        etcd.start_member(0, state="existing")
        etcd.wait_healthy()


def test_a_hung_etcd_member_is_passed_over(etcd):
    """A member that takes connections and never answers (stopped, or cut
    off by a partition that drops packets) costs one call its deadline;
    the next goes to another member, so no controller is counted out."""
    a = Membership(endpoints(etcd), "a4", lease_ttl=TTL).start()
    b = Membership(endpoints(etcd), "b4", lease_ttl=TTL).start()
    hung = etcd.members[a.etcd._current].proc
    try:
        wait(lambda: {"a4", "b4"} <= a.plan.live and {"a4", "b4"} <= b.plan.live, 5)
        changes = []
        a.on_change = b.on_change = changes.append
        hung.send_signal(signal.SIGSTOP)
        time.sleep(3 * TTL)
        assert {"a4", "b4"} <= a.plan.live and {"a4", "b4"} <= b.plan.live and changes == []
        assert a.next_generation() < a.next_generation()
    finally:
        hung.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
        etcd.wait_healthy()


def test_etcd_out_of_reach_counts_a_controller_out_and_back_in_it_rejoins():
    c = EtcdCluster(1).start()
    m = Membership(parse_endpoints(",".join(c.endpoints)), "lonely", lease_ttl=1).start()
    try:
        wait(lambda: m.plan.live == {"lonely"}, 5)
        c.kill_member(0)
        # Master of nothing once a whole TTL passed without etcd.
        wait(lambda: m.plan.live == frozenset(), 5)
        with pytest.raises(EtcdUnavailable):
            m.next_generation()
        # etcd back: live again (etcd renews every lease when it elects a
        # leader, so the old lease usually survives; if not, it joins anew).
        c.start_member(0, state="existing")
        wait(lambda: m.plan.live == {"lonely"}, 15)
    finally:
        m.stop()
        c.stop()
