"""The controller's brain, without OpenFlow: the switch registry and what
connects the store follower to the switch workers.

Threads (os-ken's hub is native threads, so these are plain threads):

    core      follows the store (follower.py) and the switch events; asks the
              scope registry (scopes.py) what each change dirties on which
              switch and recomputes those scopes (compiler.py), all under
              `self.lock`, except the store read itself, which happens
              before the lock is taken (a stalled store must not stall the
              packet-in services that answer under the lock)
    worker    one per connected switch (switch_worker.py): takes what
              changed in that switch's desired set under the lock and
              reconciles it (reconciler.py)
    audit     every audit_interval re-reads the switches one at a time,
              outside the workers, and hands each reading to its worker,
              which repairs from it in one short sync; so a change does not
              wait for the audit's reads
    status    writes the status file (status.py) every status_interval
    dispatch  packet-ins to apps (dispatch.py)

A store that cannot be read changes nothing on the switches: workers only
ever sync against a view loaded from the store, and keep the last one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Optional

from controller import metrics, scopes
from controller.app import App
from controller.cluster import MASTER, SLAVE, EtcdUnavailable, Plan
from controller.compiler import Dirty, FlowCompiler
from controller.dropcounts import DropCounts
from controller.events import SwitchEvents
from controller.follower import RESYNC, StoreFollower
from controller.external_status import ExternalWriter, fip_host
from controller.port_status import PortStatusWriter
from controller.reconciler import MeterSpec
from controller.switch_worker import Switch
from topology.store.base import Change, Store
from topology.view import TopologyView, interface_name, parse_dpid

LOG = logging.getLogger(__name__)




# Fields no flow depends on: the status the controller writes back itself
# (ports, floating IPs) and the stamps the store moves on every write. A
# change of only these recomputes nothing; without this, every status
# write-back came back through the feed as a recompute of the port's scopes.
BOOKKEEPING = frozenset({"status", "updated_at", "revision_number"})


def only_bookkeeping(old: Optional[dict], new: Optional[dict]) -> bool:
    if old is None or new is None:
        return False
    return all(old.get(k) == new.get(k) for k in (old.keys() | new.keys()) - BOOKKEEPING)

class Controller:
    def __init__(self, conf, store: Store, apps: Iterable[App], *,
                 status_path: Optional[str] = None, status_interval: float = 1.0):
        self.conf = conf
        self.store = store
        self.apps = list(apps)
        self.compiler = FlowCompiler(self.apps)
        c = conf.controller
        self.meter_spec = MeterSpec(c.controller_rate_pps, c.controller_burst)
        self.poll_interval = c.store_poll_interval
        self.audit_interval = c.audit_interval
        self.status_path = status_path
        self.status_interval = status_interval
        self.lock = threading.RLock()
        self.switches: dict[int, Switch] = {}
        self.counters: Counter = Counter()
        self.follower = StoreFollower(store, self.counters)
        self.port_status = PortStatusWriter(store)
        self.drop_counts = DropCounts()
        self.port_status_interval = c.port_status_interval
        self.external_status = ExternalWriter(store, next((a for a in self.apps if a.name == "nat"), None))
        # Coalesced per switch, so bounded without losing what matters (events.py).
        self._events = SwitchEvents()
        self._recompute_all = False
        self.pending_events = 0   # switch events queued or being applied (status "synced")
        self._pending_lock = threading.Lock()
        self.stopping = threading.Event()
        # Set when a switch comes into sync: the status file says so at
        # once, not up to a status interval later (what `vmflow status`,
        # orchestration and the restart benchmarks wait on).
        self._status_due = threading.Event()
        self._threads: list[threading.Thread] = []
        self.dispatcher = None   # set by runtime (dispatch.Dispatcher)
        self.change_latency = metrics.change_histogram()
        # Several controllers (cluster.py): the membership and this
        # controller's plan; both None for a lone controller.
        self.cluster = None
        self.plan: Optional[Plan] = None
        self._last_generation = 0
        # Packet-ins dropped because this controller is not master of the
        # switch (the event thread adds without a lock: a count, not a ledger).
        self.packet_in_not_master = 0

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        for name, target in (("core", self._core_loop), ("audit", self._audit_loop),
                             ("status", self._status_loop),
                             ("port-status", self._port_status_loop),
                             ("external-status", self._external_status_loop)):
            t = threading.Thread(target=target, name=f"vmflow-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        self._status_due.set()
        with self.lock:
            switches = list(self.switches.values())
        for sw in switches:
            with sw.cond:
                sw.connected = False
                sw.cond.notify()
        self._events.put(None)

    # -- switch events (any thread) ------------------------------------------
    def switch_connected(self, dpid: int, channel, ports: dict[str, int]) -> None:
        if self.cluster is not None and hasattr(channel, "role"):
            # Nothing is written until the switch confirms us as master.
            channel.role = SLAVE
        self._event(("connect", dpid, channel, dict(ports)))

    def switch_disconnected(self, dpid: int, channel) -> None:
        self._event(("disconnect", dpid, channel))

    def port_changed(self, dpid: int, name: str, ofport: Optional[int]) -> None:
        self._event(("port", dpid, name, ofport))

    # -- the switch's flow monitor (the event thread; ofapp.py) ---------------
    # No controller lock here: the event thread must never wait on the core.
    # A dict lookup is atomic, and the switch's own condition guards the rest.
    def drift_reported(self, dpid: int, channel, n: int) -> None:
        """Someone else changed n of our flows on that switch: re-read and repair now."""
        sw = self.switches.get(dpid)
        if sw is not None and sw.channel is channel:
            sw.drift_reported(n)

    def monitor_paused(self, dpid: int, channel, paused: bool) -> None:
        sw = self.switches.get(dpid)
        if sw is not None and sw.channel is channel:
            sw.monitor_paused(paused)

    def _event(self, ev: tuple) -> None:
        with self._pending_lock:
            # Events this one superseded will never be applied: no longer pending.
            self.pending_events += 1 - self._events.put(ev)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    # -- the core thread -------------------------------------------------------
    def _core_loop(self) -> None:
        next_poll = 0.0
        while not self.stopping.is_set():
            timeout = max(0.0, next_poll - time.monotonic())
            events = []
            try:
                ev = self._events.get(timeout=timeout)
                events.append(ev)
                while True:
                    events.append(self._events.get_nowait())
            except queue.Empty:
                pass
            if self.stopping.is_set():
                return
            try:
                read_feed = False
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.poll_interval
                    read_feed = self.follower.due(now)
                if not read_feed and not self._recompute_all and not any(
                        ev is not None for ev in events):
                    continue   # nothing to do: leave the lock to the workers
                # The store is read before the lock is taken: a locked store
                # may hold this read for its whole busy timeout, and the lock
                # is what packet-in services answer under.
                fetched = self.follower.fetch() if read_feed else None
                with self.lock:
                    dirty: dict[int, Dirty] = {}
                    if self._recompute_all:
                        self._recompute_all = False
                        dirty = {d: Dirty(all_=True) for d in self.switches}
                    for ev in events:
                        if ev is not None:
                            self._on_switch_event(ev, dirty)
                    if fetched is not None:
                        self._follow_store(fetched, dirty)
                    self._recompute(dirty, seen=now)
            except Exception:
                # The loop must survive anything. What this round touched is
                # unknown now, so the next round recomputes every switch.
                self.counters["core_errors"] += 1
                self._recompute_all = True
                LOG.exception("controller core loop")
                time.sleep(max(self.poll_interval, 0.05))
            finally:
                with self._pending_lock:
                    self.pending_events -= sum(1 for ev in events if ev is not None)

    def _on_switch_event(self, ev: tuple, dirty: dict[int, Dirty]) -> None:
        kind, dpid = ev[0], ev[1]
        if kind == "connect":
            _, _, channel, ports = ev
            old = self.switches.pop(dpid, None)
            if old is not None:
                self._retire(old)
            sw = Switch(dpid, channel, self.meter_spec, core=self)
            sw.view.ports_by_name = ports
            self.switches[dpid] = sw
            self._assign_role(sw)
            sw.start()
            dirty[dpid] = Dirty(all_=True)
            LOG.info("switch %016x connected with %d ports", dpid, len(ports))
        elif kind == "disconnect":
            sw = self.switches.get(dpid)
            if sw is not None and sw.channel is ev[2]:
                del self.switches[dpid]
                self._retire(sw)
                LOG.info("switch %016x disconnected", dpid)
        elif kind == "port":
            _, _, name, ofport = ev
            sw = self.switches.get(dpid)
            if sw is None:
                return
            if ofport is None:
                if sw.view.ports_by_name.pop(name, None) is None:
                    return
            elif sw.view.ports_by_name.get(name) == ofport:
                return
            else:
                sw.view.ports_by_name[name] = ofport
            dirty.setdefault(dpid, Dirty()).merge(self._dirty_for_interface(sw, name))

    def _dirty_for_interface(self, sw: Switch, name: str) -> Dirty:
        """What an interface appearing or leaving on a switch touches there."""
        host = sw.view.host
        if self.view is None or host is None:
            return Dirty()
        if name in (host.get("physical_networks") or {}).values():
            return Dirty(all_=True)   # an uplink: every network's flows use it
        d = Dirty()
        for port in self.view.ports_on_host(host["name"]):
            if interface_name(port) == name:
                d.scopes.add(("port", port["id"]))
                d.scopes.add(("network", port["network_id"]))
        return d

    def _retire(self, sw: Switch) -> None:
        sw.retire()

    def _switches_for(self, scope: tuple) -> list[int]:
        """Switches where a scope is, or may now be: those that have it, and
        those of the hosts its kind says it is present on."""
        hosts = scopes.KINDS[scope[0]].hosts(self.view, scope[1])
        if hosts is None:
            return list(self.switches)
        hosts = set(hosts)
        return [d for d, sw in self.switches.items()
                if scope in sw.memo.seen or sw.view.host_name in hosts]

    # -- the store's changes, to dirty scopes ------------------------------------
    @property
    def view(self) -> Optional[TopologyView]:
        return self.follower.view

    @property
    def store_ok(self) -> bool:
        return self.follower.healthy()

    def _follow_store(self, fetched, dirty: dict[int, Dirty]) -> None:
        got = self.follower.apply(fetched)
        if got == RESYNC:
            for dpid in self.switches:
                dirty[dpid] = Dirty(all_=True)
        elif got:
            for change, old in got:
                self._apply(change, old, dirty)

    def _apply(self, change: Change, old: Optional[dict], dirty: dict[int, Dirty]) -> None:
        """What one store change dirties, and where: the scope registry says."""
        view = self.view
        assert view is not None
        new = change.body
        if only_bookkeeping(old, new):
            return
        rebuild = scopes.REBUILDS.get(change.kind)
        if rebuild is not None:
            names = set(rebuild(old, new))
            for dpid, sw in self.switches.items():
                if sw.view.host_name in names or (sw.view.host is None and
                                                  view.host_for_dpid(dpid) is not None):
                    dirty.setdefault(dpid, Dirty()).all_ = True
            # A rebuild covers the named hosts only; what the change means
            # elsewhere (another host's DVR MAC) is the scopes' to say.
        for scope in scopes.dirtied(view, change.kind, old, new):
            for dpid in self._switches_for(scope):
                dirty.setdefault(dpid, Dirty()).scopes.add(scope)

    def _recompute(self, dirty: dict[int, Dirty], seen: Optional[float] = None) -> None:
        if self.view is None:
            return
        for dpid, d in dirty.items():
            sw = self.switches.get(dpid)
            if sw is None:
                continue
            sw.view.host = self.view.host_for_dpid(dpid)
            changed = self.compiler.refresh(self.view, sw.view, sw.memo,
                                            None if d.all_ else d)
            if changed or sw.reconciler.installed is None:
                if changed and seen is not None and sw.change_seen is None:
                    sw.change_seen = seen   # the oldest change the next sync carries
                sw.poke()

    def _audit_loop(self) -> None:
        while not self.stopping.wait(self.audit_interval):
            self.audit()

    def audit(self) -> None:
        """Re-read every switch, one at a time, and have its worker repair it.

        The read (fetching and decoding every flow-stats entry, the slow
        part) happens here, outside the worker and its sync lock, so changes
        keep reaching the switch meanwhile; the worker then adopts the
        reading and repairs in one short sync. A switch without a belief
        yet, or whose read fails, is left to its worker to read itself.
        """
        with self.lock:
            switches = list(self.switches.values())
        for sw in switches:
            if self.stopping.is_set():
                return
            if not sw.connected or not self._writes_to(sw):
                continue
            if sw.reconciler.installed is None:
                sw.poke(audit=True)
                continue
            try:
                reading = sw.reconciler.read()
            except Exception as e:
                LOG.warning("switch %016x: audit read failed (%s); its worker reads again",
                            sw.dpid, e)
                sw.poke(audit=True)
                continue
            sw.poke(audit=True, reading=reading)

    # -- roles (several controllers; cluster.py) ------------------------------
    def attach_cluster(self, membership) -> None:
        """Hold roles as `membership`'s live set says, from now on."""
        self.cluster = membership
        membership.on_change = self.plan_changed
        self.plan_changed(membership.plan)

    def plan_changed(self, plan: Plan) -> None:
        """The live set changed (the membership thread): each switch's worker
        takes its new role; a new master re-reads its switch and diffs."""
        with self.lock:
            self.plan = plan
            for sw in self.switches.values():
                self._assign_role(sw)

    def _assign_role(self, sw: Switch) -> None:
        if self.plan is not None:
            sw.set_role(self.plan.role(sw.dpid))

    def role_for(self, dpid: int) -> str:
        return MASTER if self.plan is None else self.plan.role(dpid)

    def generation_for(self, role: str) -> int:
        """The generation id for a role request (a worker thread): a new one
        to claim MASTER, the newest one for SLAVE. With etcd out of reach a
        claim fails (ChannelError: the worker retries), and a slave uses the
        last id it knew: stepping down must not wait on etcd."""
        from controller.reconciler import ChannelError
        try:
            gen = (self.cluster.next_generation() if role == MASTER
                   else self.cluster.current_generation())
        except EtcdUnavailable as e:
            if role == MASTER:
                raise ChannelError(f"no generation id: {e}") from None
            return self._last_generation
        self._last_generation = max(self._last_generation, gen)
        return gen

    def _writes_to(self, sw: Switch) -> bool:
        """Whether this controller writes to that switch (master, or alone)."""
        return self.plan is None or (sw.role == MASTER and sw.want_role == MASTER)

    def _written_switches(self) -> list[Switch]:
        return [sw for sw in self.switches.values() if self._writes_to(sw)]

    def answers_packet_in(self, dpid: int) -> bool:
        if self.plan is None:
            return True
        sw = self.switches.get(dpid)
        return sw is not None and self._writes_to(sw)

    def _owned_statuses(self, updates: dict[str, str], host_of) -> dict[str, str]:
        """Several controllers: each status (a port's, a floating IP's) is
        written by the master of the switch of the host `host_of(id)` names
        (one on no known host, by the master of dpid 0), so exactly one
        controller writes it, and only one that knows. Without that, a
        slave, which installs nothing, would write DOWN over the master's
        ACTIVE every round."""
        if self.plan is None or not updates:
            return updates
        hosts = {h.get("name"): h for h in self.view.hosts.values()}
        out = {}
        for id_, status in updates.items():
            host = hosts.get(host_of(id_))
            dpid = parse_dpid(host["datapath_id"]) if host is not None else 0
            if self.plan.role(dpid) != MASTER:
                continue
            sw = self.switches.get(dpid)
            if host is not None and sw is not None and not self._writes_to(sw):
                continue   # ours by the plan, not yet confirmed by the switch
            out[id_] = status
        return out

    def _port_host(self, pid: str) -> Optional[str]:
        return (self.view.ports.get(pid) or {}).get("binding:host_id")

    def _fip_host(self, fid: str) -> Optional[str]:
        return fip_host(self.view, fid)

    # -- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from controller.status import build_status
        with self.lock:
            return build_status(self)

    def _port_status_loop(self) -> None:
        while not self.stopping.wait(self.port_status_interval):
            try:
                with self.lock:
                    updates = self.port_status.due(self.view, self._written_switches())
                    updates = self._owned_statuses(updates, self._port_host)
                self.port_status.flush(updates)
            except Exception:
                self.counters["port_status_errors"] += 1
                LOG.exception("port status write-back")

    def _external_status_loop(self) -> None:
        # Floating IP status, gratuitous ARPs and learned neighbours: a short
        # round, as a moved floating IP must be announced within a second.
        interval = min(self.port_status_interval, 0.2)
        while not self.stopping.wait(interval):
            try:
                with self.lock:
                    # Only switches this controller writes to: a slave neither
                    # marks a floating IP nor announces it.
                    updates, garps = self.external_status.due(self.view, self._written_switches())
                    updates = self._owned_statuses(updates, self._fip_host)
                send = self.dispatcher.send_packet if self.dispatcher is not None else None
                self.external_status.flush(updates, garps if send else [], send)
            except Exception:
                self.counters["external_status_errors"] += 1
                LOG.exception("external status write-back")

    def status_due(self) -> None:
        """A switch came into sync (its worker): write the status file now."""
        self._status_due.set()

    def _status_loop(self) -> None:
        from controller.status import write_status
        next_round = 0.0
        while not self.stopping.is_set():
            if self.status_path:
                try:
                    if time.monotonic() >= next_round:
                        # Switch requests, so outside the lock (dropcounts.py),
                        # once a status interval, however often the file is.
                        with self.lock:
                            switches = list(self.switches.values())
                        self.drop_counts.refresh(switches)
                        next_round = time.monotonic() + self.status_interval
                    write_status(self.status_path, self.status())
                except Exception:
                    LOG.exception("writing status file %s", self.status_path)
                    next_round = time.monotonic() + self.status_interval
            else:
                next_round = time.monotonic() + self.status_interval
            self._status_due.wait(max(0.0, next_round - time.monotonic()))
            self._status_due.clear()

    # -- lookups for packet-in ---------------------------------------------
    def port_at(self, dpid: int, ofport: int):
        """(SwitchView, VM port document or None) for a packet's ingress."""
        sw = self.switches.get(dpid)
        if sw is None or self.view is None:
            return None, None
        host = sw.view.host
        if host is None:
            return sw.view, None
        name = sw.view.interface_at(ofport)
        return sw.view, (self.view.port_on_host(host["name"], name) if name else None)

    def call_later(self, seconds: float, fn: Callable[[], Any]) -> threading.Timer:
        def run():
            try:
                with self.lock:
                    fn()
            except Exception:
                self.counters["timer_errors"] += 1
                LOG.exception("timer callback failed")
        t = threading.Timer(seconds, run)
        t.daemon = True
        t.start()
        return t
