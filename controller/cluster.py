"""Several controllers: who is alive (etcd leases), who is master of which
switch (a rendezvous hash over the live ones), and the generation ids that
fence a master that lost its place.

Every controller connects to every switch. For each datapath id exactly one
live controller is master: the one whose hash of (controller id, dpid) is
highest (rendezvous hashing: when a controller leaves, only its switches
move, and every controller that sees the same live set picks the same
master without talking to the others). The others are slaves: they compute
the switch's desired flows as the master does, and write nothing, so a
takeover is a diff against the switch rather than a recomputation.

Liveness: each controller holds an etcd lease (TTL `lease_ttl`, kept alive
every third of it) and a key under MEMBERS_PREFIX bound to it. A controller
that dies stops keeping its lease alive; etcd deletes its key when the
lease expires, and the watch on the prefix tells the others. A controller
that cannot reach etcd for a whole TTL counts itself out (no live set, so
master of nothing): the others will have taken its switches by then, and
it must not write to them meanwhile.

Generation ids (OpenFlow 1.3 ROLE_REQUEST): OVS keeps, per switch, the
highest generation id it was sent and refuses a MASTER or SLAVE request
with an older one (OFPRRFC_STALE). A controller about to claim MASTER
writes GENERATION_KEY and uses the etcd revision of that write: revisions
only grow, so the latest claim always carries the highest id, and a master
that missed a change (partitioned, paused) is refused by the switch rather
than obeyed. A slave sends the key's current revision.

The pure part (master_for, Plan) has no etcd in it (tests/unit/test_cluster.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from controller.reconciler import ChannelError
from topology.etcd_rpc import Connection, EtcdUnavailable, etcdrpc, prefix_end  # noqa: F401 (callers catch it here)

LOG = logging.getLogger(__name__)

PREFIX = "/vmflow/cluster/"
MEMBERS_PREFIX = PREFIX + "members/"
GENERATION_KEY = PREFIX + "generation"

MASTER, SLAVE = "master", "slave"


class NotMaster(ChannelError):
    """A write (flow-mod, meter-mod, packet-out) on a switch where this
    controller is not master: refused before it is sent (ofchannel.py)."""


class RoleStale(ChannelError):
    """The switch refused a role request: it has seen a newer generation id
    (OFPRRFC_STALE), so another controller claimed it since."""


# -- the pure part -------------------------------------------------------------

def _weight(controller_id: str, dpid: int) -> int:
    digest = hashlib.blake2b(f"{controller_id}\0{dpid:016x}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def master_for(dpid: int, live: Iterable[str]) -> Optional[str]:
    """The live controller that is master of `dpid`, or None if none is live.
    Ties (a hash collision) go to the smaller id, so the choice never
    depends on the order `live` is given in."""
    best: Optional[tuple[int, str]] = None
    for cid in live:
        w = _weight(cid, dpid)
        if best is None or w > best[0] or (w == best[0] and cid < best[1]):
            best = (w, cid)
    return best[1] if best else None


@dataclass(frozen=True)
class Plan:
    """One controller's reading of the cluster: who is live, and so which
    role it holds on a switch. An empty live set (etcd unreachable for a
    whole lease TTL, or not yet joined) makes it slave everywhere."""
    me: str
    live: frozenset = frozenset()

    def master(self, dpid: int) -> Optional[str]:
        return master_for(dpid, self.live)

    def role(self, dpid: int) -> str:
        return MASTER if self.me in self.live and self.master(dpid) == self.me else SLAVE

    def moved(self, other: "Plan", dpids: Iterable[int]) -> list[int]:
        """The dpids whose role for this controller differs in `other`."""
        return [d for d in dpids if self.role(d) != other.role(d)]


def parse_endpoints(value: str) -> list[tuple[str, int]]:
    """host:port,host:port,... (an http:// prefix is allowed) -> [(host, port)].
    ValueError names the part that is wrong."""
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        bare = part.split("://", 1)[-1].rstrip("/")
        host, sep, port = bare.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"[cluster] etcd: expected host:port[,host:port...], got {part!r}")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("[cluster] etcd: no endpoint given")
    return out


def default_controller_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# -- etcd ----------------------------------------------------------------------

def _members_range() -> tuple[bytes, bytes]:
    key = MEMBERS_PREFIX.encode()
    return key, prefix_end(key)


class Membership:
    """This controller's lease and key, and the live set, watched.

    `on_change(Plan)` is called from the membership thread whenever the
    live set (as this controller can know it) changes."""

    def __init__(self, endpoints: list[tuple[str, int]], controller_id: str, *,
                 lease_ttl: int = 3, info: Optional[dict] = None,
                 on_change: Optional[Callable[[Plan], None]] = None):
        self.me = controller_id
        self.ttl = max(1, int(lease_ttl))
        # The store's client (gRPC, failover between members). Each member
        # gets a third of the TTL, the keepalive interval, to answer, so
        # one hung member does not cost a keepalive.
        self.etcd = Connection(endpoints, timeout_s=max(0.5, self.ttl / 3), each_member=True)
        self.info = dict(info or {}, id=controller_id, pid=os.getpid())
        self.on_change = on_change
        self.plan = Plan(controller_id)
        self.lease_id: Optional[int] = None
        self.last_keepalive = 0.0      # monotonic; when etcd last confirmed our lease
        self.stopping = threading.Event()
        self._changed = threading.Event()
        self._plan_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watch_end: Optional[Callable[[], None]] = None
        self._watch_thread: Optional[threading.Thread] = None
        self.watching = threading.Event()   # the members watch is open
        self.counters = {"lease_grants": 0, "keepalive_failures": 0, "plan_changes": 0,
                         "generations": 0}

    @property
    def key(self) -> str:
        return MEMBERS_PREFIX + self.me

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "Membership":
        """Join (lease and key), read the live set once, then keep both up to
        date in the background. EtcdUnavailable if etcd is not reachable
        within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._join()
                self._relist()
                break
            except EtcdUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        for name, target in (("lease", self._keepalive_loop), ("members", self._members_loop)):
            t = threading.Thread(target=target, name=f"vmflow-cluster-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Leave at once (revoke the lease), so the others take over without
        waiting for it to expire."""
        self.stopping.set()
        self._changed.set()
        if self._watch_end is not None:
            self._watch_end()
        if self.lease_id is not None:
            try:
                self.etcd.call("LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=self.lease_id),
                               service="Lease")
            except Exception as e:
                LOG.warning("cluster: lease not revoked (%s); it expires in %d s", e, self.ttl)
        # The loops wake on `stopping`; one may be inside a call, which ends
        # within the call timeout. Then the channels can go.
        for t in self._threads + [self._watch_thread]:
            if t is not None and t is not threading.current_thread():
                t.join(len(self.etcd.endpoints) * self.etcd.timeout_s + 0.5)
        self.etcd.close()

    # -- the lease ------------------------------------------------------------
    def _join(self) -> None:
        got = self.etcd.call("LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=self.ttl, ID=0),
                             service="Lease")
        self.lease_id = int(got.ID)
        self.etcd.call("Put", etcdrpc.PutRequest(key=self.key.encode(),
                                                 value=json.dumps(self.info).encode(),
                                                 lease=self.lease_id))
        self.last_keepalive = time.monotonic()
        self.counters["lease_grants"] += 1
        LOG.info("cluster: %s joined (lease %x, TTL %d s)", self.me, self.lease_id, self.ttl)

    def _keepalive_loop(self) -> None:
        every = self.ttl / 3
        while not self.stopping.wait(every):
            try:
                got = self.etcd.call("LeaseKeepAlive",
                                     etcdrpc.LeaseKeepAliveRequest(ID=self.lease_id),
                                     service="Lease")
                if got.TTL <= 0:
                    # Expired (we were cut off too long): the others dropped
                    # us; join again with a new lease.
                    LOG.warning("cluster: lease %x expired; joining again", self.lease_id or 0)
                    self._join()
                else:
                    self.last_keepalive = time.monotonic()
            except EtcdUnavailable as e:
                self.counters["keepalive_failures"] += 1
                LOG.warning("cluster: lease keepalive failed: %s", e)
            except Exception:
                self.counters["keepalive_failures"] += 1
                LOG.exception("cluster: lease keepalive")
            if time.monotonic() - self.last_keepalive >= self.ttl:
                self._publish(frozenset())   # counted out: stop writing
            self._changed.set()

    # -- the live set -----------------------------------------------------------
    def _relist(self) -> None:
        key, end = _members_range()
        got = self.etcd.call("Range", etcdrpc.RangeRequest(key=key, range_end=end,
                                                           keys_only=True))
        live = frozenset(kv.key.decode()[len(MEMBERS_PREFIX):] for kv in got.kvs)
        if time.monotonic() - self.last_keepalive >= self.ttl:
            live = frozenset()
        self._publish(live)

    def _publish(self, live: frozenset) -> None:
        with self._plan_lock:
            if live == self.plan.live:
                return
            old, self.plan = self.plan, Plan(self.me, live)
            self.counters["plan_changes"] += 1
        LOG.info("cluster: live controllers %s (were %s)", sorted(live), sorted(old.live))
        if self.on_change is not None:
            try:
                self.on_change(self.plan)
            except Exception:
                LOG.exception("cluster: applying the live set")

    def _start_watch(self) -> None:
        """A watch on the members' prefix; every event just wakes the
        members loop, which re-lists (the list, not the events, is the truth).
        When the member serving it dies, the stream ends, so does this
        thread, and the members loop opens a new watch on another member."""
        key, end = _members_range()

        def run():
            stop = None
            try:
                stream, stop = self.etcd.watch(etcdrpc.WatchCreateRequest(key=key, range_end=end))
                self._watch_end = stop
                self.watching.set()
                if self.stopping.is_set():
                    stop()
                for resp in stream:
                    if resp.canceled:
                        LOG.warning("cluster: members watch canceled by etcd: %s",
                                    resp.cancel_reason)
                        break
                    if resp.events:
                        self._changed.set()
            except Exception as e:
                if not self.stopping.is_set():
                    LOG.warning("cluster: members watch ended: %s", e)
            finally:
                self.watching.clear()
                if stop is not None:
                    stop()   # also after its member died: frees gRPC's request thread
            self._changed.set()   # re-list, and watch again
        self._watch_thread = threading.Thread(target=run, name="vmflow-cluster-watch",
                                              daemon=True)
        self._watch_thread.start()

    def _members_loop(self) -> None:
        # The watch gives the speed; the re-list every third of a TTL is the
        # safety net for a watch that died with its etcd member.
        while not self.stopping.is_set():
            if self._watch_thread is None or not self._watch_thread.is_alive():
                self._start_watch()
            self._changed.wait(self.ttl / 3)
            self._changed.clear()
            if self.stopping.is_set():
                return
            try:
                self._relist()
            except EtcdUnavailable as e:
                LOG.warning("cluster: members not read: %s", e)
                self.stopping.wait(self.ttl / 3)   # not a busy loop while etcd is away
            except Exception:
                LOG.exception("cluster: reading members")
                self.stopping.wait(self.ttl / 3)

    # -- generation ids -----------------------------------------------------------
    def next_generation(self) -> int:
        """A generation id higher than any handed out before: the etcd
        revision of a write to GENERATION_KEY."""
        got = self.etcd.call("Put", etcdrpc.PutRequest(key=GENERATION_KEY.encode(),
                                                       value=self.me.encode()))
        self.counters["generations"] += 1
        return int(got.header.revision)

    def current_generation(self) -> int:
        """The newest generation id handed out (0 before the first)."""
        kvs = self.etcd.call("Range", etcdrpc.RangeRequest(key=GENERATION_KEY.encode())).kvs
        return int(kvs[0].mod_revision) if kvs else 0

    def status(self) -> dict:
        return {"id": self.me, "live": sorted(self.plan.live), "lease_ttl": self.ttl,
                "lease_id": self.lease_id, "counters": dict(self.counters),
                "watching": self.watching.is_set(),
                "since_keepalive_s": round(time.monotonic() - self.last_keepalive, 3)}

