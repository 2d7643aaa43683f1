"""The controller's brain, without OpenFlow: switch registry, store follower, workers.

Threads (os-ken's hub is native threads, so these are plain threads):

    core      follows the store and the switch events; applies them to the
              TopologyView and recomputes the touched scopes (compiler.py),
              all under `self.lock`. Every store_poll_interval it asks the
              store's cheap change hint, and reads the change feed only
              when the hint moved
    worker    one per connected switch: takes what changed in that switch's
              desired set under the lock (all of it after a (re)read) and
              reconciles it (reconciler.py). One worker per switch
              serialises everything sent to it
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

from apps.base import App, SwitchView
from controller.compiler import Dirty, FlowCompiler, SwitchFlows
from controller.events import SwitchEvents
from controller.reconciler import ChannelError, MeterSpec, Reading, SwitchReconciler
from topology.store.base import Change, HistoryCompacted, Store, StoreError
from topology.view import TopologyView, interface_name

LOG = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
RETRY_MAX_S = 10.0
# The change feed is read at least this often whatever the store's change
# hint says, a safety net for a store whose hint misses a write.
FEED_READ_MAX_S = 1.0
FEED_BATCH = 10000   # changes read from the feed at most at once


class Switch:
    """One connected datapath: what we know of it and who reconciles it."""

    def __init__(self, dpid: int, channel, meter_spec: MeterSpec):
        self.dpid = dpid
        self.channel = channel
        self.view = SwitchView(dpid, None)
        self.memo = SwitchFlows()
        self.reconciler = SwitchReconciler(dpid, channel, meter_spec)
        self.cond = threading.Condition()
        self.want_sync = False
        self.want_reread = False
        self.want_audit = False
        self.reading: Optional[Reading] = None   # the audit's read, for the worker to adopt
        self.busy = True            # from connect until the first sync succeeds
        self.connected = True
        self.connected_at = time.time()
        self.thread: Optional[threading.Thread] = None

    def poke(self, *, reread: bool = False, audit: bool = False,
             reading: Optional[Reading] = None) -> None:
        with self.cond:
            self.want_sync = True
            self.want_reread |= reread
            self.want_audit |= audit
            if reading is not None:
                if self.reading is not None:
                    self.reconciler.discard(self.reading)
                self.reading = reading
            self.busy = True
            self.cond.notify()


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
        self.view: Optional[TopologyView] = None
        self.switches: dict[int, Switch] = {}
        self.counters: Counter = Counter()
        self.store_ok = False
        self._store_error_logged = False
        # Coalesced per switch, so bounded without losing what matters (events.py).
        self._events = SwitchEvents()
        self._recompute_all = False
        self._hint: Any = None            # the store's change hint before the last feed read
        self._next_feed_read = 0.0        # monotonic time of the next unconditional feed read
        self.pending_events = 0   # switch events queued or being applied (status "synced")
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.dispatcher = None   # set by runtime (dispatch.Dispatcher)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        for name, target in (("core", self._core_loop), ("audit", self._audit_loop),
                             ("status", self._status_loop)):
            t = threading.Thread(target=target, name=f"vmflow-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            switches = list(self.switches.values())
        for sw in switches:
            with sw.cond:
                sw.connected = False
                sw.cond.notify()
        self._events.put(None)

    # -- switch events (any thread) ------------------------------------------
    def switch_connected(self, dpid: int, channel, ports: dict[str, int]) -> None:
        self._event(("connect", dpid, channel, dict(ports)))

    def switch_disconnected(self, dpid: int, channel) -> None:
        self._event(("disconnect", dpid, channel))

    def port_changed(self, dpid: int, name: str, ofport: Optional[int]) -> None:
        self._event(("port", dpid, name, ofport))

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
        while not self._stop.is_set():
            timeout = max(0.0, next_poll - time.monotonic())
            events = []
            try:
                ev = self._events.get(timeout=timeout)
                events.append(ev)
                while True:
                    events.append(self._events.get_nowait())
            except queue.Empty:
                pass
            if self._stop.is_set():
                return
            try:
                read_feed = False
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.poll_interval
                    read_feed = self._store_moved(now)
                if not read_feed and not self._recompute_all and not any(
                        ev is not None for ev in events):
                    continue   # nothing to do: leave the lock to the workers
                with self.lock:
                    dirty: dict[int, Dirty] = {}
                    if self._recompute_all:
                        self._recompute_all = False
                        dirty = {d: Dirty(all_=True) for d in self.switches}
                    for ev in events:
                        if ev is not None:
                            self._on_switch_event(ev, dirty)
                    if read_feed:
                        self._poll_store(dirty)
                    self._recompute(dirty)
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

    def _store_moved(self, now: float) -> bool:
        """Whether to read the change feed now: when the store's change hint
        moved, or FEED_READ_MAX_S after the last read; after a failed read,
        RETRY_MIN_S after it."""
        hint = None
        if not self.store_ok:
            due = now >= self._next_feed_read
        elif now >= self._next_feed_read:
            due = True
        else:
            try:
                hint = self.store.change_hint()
            except StoreError:
                return True   # the feed read fails too, and says why
            due = hint != self._hint
        if due:
            # The hint as it was before this read: a write committed during
            # the read moves it again, so it is read next time.
            if hint is None:
                try:
                    hint = self.store.change_hint()
                except StoreError:
                    pass
            self._hint = hint
            self._next_feed_read = now + FEED_READ_MAX_S
        return due

    def _on_switch_event(self, ev: tuple, dirty: dict[int, Dirty]) -> None:
        kind, dpid = ev[0], ev[1]
        if kind == "connect":
            _, _, channel, ports = ev
            old = self.switches.pop(dpid, None)
            if old is not None:
                self._retire(old)
            sw = Switch(dpid, channel, self.meter_spec)
            sw.view.ports_by_name = ports
            self.switches[dpid] = sw
            sw.thread = threading.Thread(target=self._worker, args=(sw,),
                                         name=f"vmflow-sw-{dpid:016x}", daemon=True)
            sw.thread.start()
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
                d.ports.add(port["id"])
                d.network_scopes.add(port["network_id"])
        return d

    def _retire(self, sw: Switch) -> None:
        with sw.cond:
            sw.connected = False
            sw.cond.notify()

    # -- store follower ---------------------------------------------------------
    def _poll_store(self, dirty: dict[int, Dirty]) -> None:
        try:
            if self.view is None:
                self._resync(dirty)
                return
            try:
                changes = self.store.changes_since(self.view.revision, FEED_BATCH)
            except HistoryCompacted:
                LOG.warning("change feed compacted past revision %d; resyncing", self.view.revision)
                self.counters["resyncs"] += 1
                self._resync(dirty)
                return
        except StoreError as e:
            # Keep the last view and every installed flow; try again soon.
            self._next_feed_read = time.monotonic() + RETRY_MIN_S
            self._hint = None
            self.counters["store_errors"] += 1
            if not self._store_error_logged:
                LOG.error("store unreachable (flows left as they are): %s", e)
                self._store_error_logged = True
            self.store_ok = False
            return
        if not self.store_ok:
            LOG.info("store reachable at revision %d", self.view.revision)
        self.store_ok = True
        self._store_error_logged = False
        for change in changes:
            self._apply(change, dirty)
            self.counters["changes"] += 1
        if len(changes) >= FEED_BATCH:
            self._next_feed_read = 0.0   # more may wait behind a hint that will not move again

    def _resync(self, dirty: dict[int, Dirty]) -> None:
        rev, data = self.store.snapshot()
        self.view = TopologyView(rev, data)
        self.store_ok = True
        for dpid in self.switches:
            dirty[dpid] = Dirty(all_=True)
        LOG.info("topology loaded at revision %d", rev)

    def _switches_with(self, scope: tuple) -> list[int]:
        return [d for d, sw in self.switches.items() if scope in sw.memo.seen]

    def _switches_of_host(self, name: Optional[str]) -> list[int]:
        if not name:
            return []
        return [d for d, sw in self.switches.items() if sw.view.host_name == name]

    def _apply(self, change: Change, dirty: dict[int, Dirty]) -> None:
        view = self.view
        assert view is not None
        old = view.apply(change)
        new = change.body
        docs = [d for d in (old, new) if d]

        def mark(dpids: Iterable[int], d: Dirty) -> None:
            for dpid in dpids:
                dirty.setdefault(dpid, Dirty()).merge(d)

        if change.kind == "ports":
            nets = {d["network_id"] for d in docs}
            hosts = {d.get("binding:host_id") for d in docs}
            touched = Dirty(ports={change.id}, network_scopes=set(nets))
            for net in nets:
                mark(self._switches_with(("network", net)), touched)
            for host in hosts:
                mark(self._switches_of_host(host), touched)
        elif change.kind in ("networks", "subnets"):
            net = change.id if change.kind == "networks" else None
            nets = {net} if net else {d["network_id"] for d in docs}
            for n in nets:
                mark(self._switches_with(("network", n)), Dirty(networks={n}))
        elif change.kind == "hosts":
            from topology.view import parse_dpid
            for d in docs:
                dpid = parse_dpid(d["datapath_id"])
                if dpid in self.switches:
                    mark([dpid], Dirty(all_=True))
        elif change.kind == "instances":
            ports = {p["id"] for p in view.ports.values() if p.get("device_id") == change.id}
            if ports:
                mark(self.switches, Dirty(ports=ports))
        else:
            # A kind no scope rule knows (security groups, ...): recompute all.
            mark(self.switches, Dirty(all_=True))

    def _recompute(self, dirty: dict[int, Dirty]) -> None:
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
                sw.poke()

    # -- workers ------------------------------------------------------------
    def _worker(self, sw: Switch) -> None:
        backoff = RETRY_MIN_S
        while True:
            with sw.cond:
                while sw.connected and not sw.want_sync:
                    sw.cond.wait()
                if not sw.connected:
                    return
                reread, audit, reading = sw.want_reread, sw.want_audit, sw.reading
                sw.want_sync = sw.want_reread = sw.want_audit = False
                sw.reading = None
            rec = sw.reconciler
            delta = desired = None
            with self.lock:
                ready = self.view is not None
                if ready:
                    # Only this thread drops the belief, so it is still
                    # there when the delta is applied.
                    if not (reread or audit or reading is not None or rec.installed is None
                            or rec.meters is None):
                        delta = sw.memo.take_delta()
                    if delta is None:
                        desired = sw.memo.take_all()
            if not ready:
                # Never sync before the first view: that would flush the switch.
                if reading is not None:
                    rec.discard(reading)
                continue
            try:
                if delta is not None:
                    sent = rec.sync_delta(*delta)
                else:
                    sent = rec.sync(desired, reread=reread, audit=audit, reading=reading)
                if sent:
                    LOG.info("switch %016x: %d change(s) sent", sw.dpid, sent)
                backoff = RETRY_MIN_S
                with sw.cond:
                    if not sw.want_sync:
                        sw.busy = False
            except ChannelError as e:
                LOG.error("switch %016x: %s; re-reading in %.1fs", sw.dpid, e, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, RETRY_MAX_S)
                sw.poke(reread=True)
            except Exception:
                LOG.exception("switch %016x: reconcile failed", sw.dpid)
                sw.reconciler.invalidate()
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, RETRY_MAX_S)
                sw.poke(reread=True)

    def _audit_loop(self) -> None:
        while not self._stop.wait(self.audit_interval):
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
            if self._stop.is_set():
                return
            if not sw.connected:
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

    # -- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from controller.status import build_status
        with self.lock:
            return build_status(self)

    def _status_loop(self) -> None:
        from controller.status import write_status
        while not self._stop.is_set():
            if self.status_path:
                try:
                    write_status(self.status_path, self.status())
                except Exception:
                    LOG.exception("writing status file %s", self.status_path)
            self._stop.wait(self.status_interval)

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
