"""A stalled store never reaches the data plane (issue 16).

Another process holds the SQLite store's WAL read locks for 40 s, so every
read the controller makes waits on them (about 10 s each, then fails with
"locking protocol"); on etcd (both_stores), every member of the cluster is
stopped (SIGSTOP) for 40 s, so every read waits out its deadline. Before, the controller read the store under the lock
its packet-in services answer under, so ARP, DHCP and metadata stalled
behind it. Checked: two VMs that talk lose no ping, a fresh udhcpc gets its
lease and a flushed neighbour is resolved again, over and over, during the
stall, the status
file keeps being written and says store_ok false with the real time of the
last successful read, and all is well again after.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
from harness import parse_ping, wait_for

pytestmark = pytest.mark.mininet

LOCK_S = 40
# SQLite's WAL-index locks are bytes 120.. of the -shm file: 120 WRITE,
# 121 CHECKPOINT, 122 RECOVER, 123-127 READ0-READ4. A reader needs one of
# the read locks (or RECOVER to rebuild the index): holding all of them is a
# read lock on the whole store. A process of its own: POSIX locks are per
# process, and SQLite in this process would not see them as another's.
LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 6, 122)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""
# etcd's stall: every member frozen, then thawed even if the test dies first.
FREEZER = """
import os, signal, sys, time
pids = [int(p) for p in sys.argv[2:]]
for p in pids:
    os.kill(p, signal.SIGSTOP)
print("locked", flush=True)
try:
    time.sleep(float(sys.argv[1]))
finally:
    for p in pids:
        os.kill(p, signal.SIGCONT)
"""


def stall_store(cloud, seconds: float) -> subprocess.Popen:
    """A process that stalls the cloud's store for `seconds`, and prints
    "locked" once it has."""
    if cloud.etcd is not None:
        pids = [str(m.proc.pid) for m in cloud.etcd.members]
        return subprocess.Popen([sys.executable, "-c", FREEZER, str(seconds)] + pids,
                                stdout=subprocess.PIPE, text=True)
    return subprocess.Popen([sys.executable, "-c", LOCKER, f"{cloud.store_path}-shm",
                             str(seconds)], stdout=subprocess.PIPE, text=True)


@pytest.mark.both_stores
def test_a_40s_store_read_lock_loses_no_ping_and_dhcp_and_arp_still_answer(cloud_factory):
    cloud = cloud_factory()
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n", cidr="10.9.0.0/24", vlan=109, enable_dhcp=True)
    x, y = cloud.add_vm(h1, net, "x"), cloud.add_vm(h2, net, "y")
    fresh = cloud.add_vm(h1, net, "d", dhcp=True)   # its port exists; no address yet
    x.wait_ping(y, 20)
    wait_for(lambda: cloud.status()["synced"] and cloud.status()["store_ok"], 20, 0.2,
             "the controller to sync")
    count = int((LOCK_S + 6) / 0.1)
    pinger = x.popen(["ping", "-n", "-q", "-c", str(count), "-i", "0.1", "-W", "1", y.ip])
    locker = stall_store(cloud, LOCK_S)
    try:
        assert locker.stdout.readline().strip() == "locked"
        locked_at = time.time()
        # The status file is still written, and tells the truth about the store.
        wait_for(lambda: not cloud.status()["store_ok"], 12, 0.2, "store_ok to turn false")
        st = cloud.status()
        assert st["time"] > locked_at + 4
        assert st["store_last_read"] is not None and st["store_last_read"] <= locked_at + 1
        assert st["store_read_age"] >= 4
        print(f"store_ok false {time.time() - locked_at:.1f}s into the lock; "
              f"last read {st['store_read_age']:.1f}s before the status")
        # Each store read waits ~10 s, so packet-ins served under the lock
        # the read holds would wait that long: probe DHCP (always answered by
        # the controller) and ARP again and again until the lock is about to end.
        dhcp_s, arp_failed, rounds = [], 0, 0
        while time.time() < locked_at + LOCK_S - 4:
            started = time.monotonic()
            ip = fresh.dhcp(timeout=20)
            dhcp_s.append(time.monotonic() - started)
            assert ip == fresh.port["fixed_ips"][0]["ip_address"]
            x.arp_flush()
            arp_failed += not x.ping(y, count=1, timeout=1.0)
            fresh.arp_flush()
            arp_failed += not fresh.ping(y, count=1, timeout=1.0)
            rounds += 1
        print(f"{rounds} DHCP/ARP rounds during the stall: udhcpc bound in at most "
              f"{max(dhcp_s):.2f}s; {arp_failed} ARP resolution(s) failed")
        assert rounds >= 5 and max(dhcp_s) < 2.0 and arp_failed == 0
        assert time.time() < locked_at + LOCK_S, "the checks outlasted the lock"
        assert not cloud.status()["store_ok"]
    finally:
        locker.wait(LOCK_S + 10)
    out, _ = pinger.communicate(timeout=60)
    sent, got = parse_ping(out)
    print(f"ping x -> y through the stall: {got}/{sent}")
    assert sent == count and got == sent, out
    wait_for(lambda: cloud.status()["store_ok"], 30, 0.2, "store_ok to come back")
    st = cloud.status()
    assert st["store_last_read"] > locked_at + LOCK_S - 1
    assert "Traceback" not in cloud.controller.log(tail=400)
