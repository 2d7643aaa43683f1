"""One connected switch, and the worker thread that alone talks to it.

The worker takes what changed in the switch's desired set under the
controller's lock (all of it after a (re)read) and reconciles it
(reconciler.py); one worker per switch serialises everything sent to it.
The worker never syncs before the controller has a view of the store: that
would flush the switch. A channel error re-reads the switch after a backoff.

Before its first sync the worker starts the switch's flow monitor
(flowmon.py), so a flow someone else adds, deletes or changes in our cookie
space is reported at once (drift_reported) and repaired by a re-read and a
whole diff, not at the next audit. While drift is reported and not yet
repaired, or the monitor is paused, the switch is not in sync (status.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional, Protocol

from controller.app import SwitchView
from controller.compiler import SwitchFlows
from controller.cluster import MASTER, SLAVE, RoleStale
from controller.reconciler import ChannelError, MeterSpec, Reading, SwitchReconciler

ROLE_STALE_RETRIES = 5

LOG = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
RETRY_MAX_S = 10.0


class Core(Protocol):
    """What a worker needs of the controller."""
    lock: threading.RLock
    stopping: threading.Event

    @property
    def view(self): ...


class Switch:
    """One connected datapath: what we know of it and who reconciles it."""

    def __init__(self, dpid: int, channel, meter_spec: MeterSpec, core: Optional[Core] = None):
        self.dpid = dpid
        self.channel = channel
        self.view = SwitchView(dpid, None)
        self.memo = SwitchFlows()
        self.reconciler = SwitchReconciler(dpid, channel, meter_spec)
        self.cond = threading.Condition()
        self.want_sync = False
        self.want_reread = False
        self.want_audit = False
        self.want_drift = False
        # The flow monitor: None on a channel that has none (the unit tests'
        # fakes), else "starting", "active", "paused" or "failed".
        self.monitor: Optional[str] = "starting" if hasattr(channel, "start_monitor") else None
        self.drift_reports = 0      # flow updates in our cookie space made by someone else
        self.reading: Optional[Reading] = None   # the audit's read, for the worker to adopt
        self.busy = True            # from connect until the first sync succeeds
        self.connected = True
        self.connected_at = time.time()
        self.thread: Optional[threading.Thread] = None
        self.core = core
        # When the controller read the oldest change not yet on the switch
        # (monotonic; set under the core lock), for the change-to-commit histogram.
        self.change_seen: Optional[float] = None
        # Several controllers (cluster.py): the role the cluster's plan gives
        # this controller here (set under the core lock), and the one the
        # switch confirmed. None/None for a lone controller.
        self.want_role: Optional[str] = None
        self.role: Optional[str] = None
        self.generation: Optional[int] = None
        self.role_changes = 0
        self.master_since: Optional[float] = None   # wall clock, when the switch confirmed it
        self.role_fresh = False    # master since the last sync: re-read and diff
        # Came into sync and the status file does not say so yet: told to
        # the core once the worker is idle (core.status_due).
        self.announce = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"vmflow-sw-{self.dpid:016x}",
                                       daemon=True)
        self.thread.start()

    def retire(self) -> None:
        with self.cond:
            self.connected = False
            self.cond.notify()

    def poke(self, *, reread: bool = False, audit: bool = False, drift: bool = False,
             reading: Optional[Reading] = None) -> None:
        with self.cond:
            self.want_sync = True
            self.want_reread |= reread
            self.want_audit |= audit
            self.want_drift |= drift
            if reading is not None:
                if self.reading is not None:
                    self.reconciler.discard(self.reading)
                self.reading = reading
            self.busy = True
            self.cond.notify()

    def drift_reported(self, n: int) -> None:
        """The monitor saw n foreign changes: re-read now. A reading taken
        before them would hide them, so none taken so far is adopted."""
        self.drift_reports += n
        self.reconciler.distrust_readings()
        with self.cond:
            if self.reading is not None:
                self.reconciler.discard(self.reading)
                self.reading = None
        self.poke(drift=True)

    def monitor_paused(self, paused: bool) -> None:
        """OVS stops the monitor when its updates back up, and says when it
        resumes; what changed in between is unknown, so re-read then."""
        if paused:
            LOG.warning("switch %016x: flow monitor paused by the switch", self.dpid)
            with self.cond:
                self.monitor = "paused"
            return
        LOG.info("switch %016x: flow monitor resumed; re-reading", self.dpid)
        with self.cond:
            self.monitor = "active"
        self.drift_reported(0)

    def _start_monitor(self) -> None:
        if self.monitor is None:
            return
        try:
            self.channel.start_monitor()
            self.monitor = "active"
        except ChannelError as e:
            # Drift is then found by the audit alone, as before.
            self.monitor = "failed"
            LOG.warning("switch %016x: no flow monitor (%s); drift is repaired at the audit",
                        self.dpid, e)

    # -- roles (several controllers; cluster.py) --------------------------------

    def set_role(self, role: str) -> None:
        """The plan's role for this controller here (under the core lock)."""
        if role != self.want_role:
            self.want_role = role
            if role != MASTER and self.channel is not None and hasattr(self.channel, "role"):
                # Stop writing now, not when the worker gets to it.
                self.channel.role = role
            self.poke()

    def settle_role(self) -> bool:
        """Make the switch's role for this controller the wanted one; True
        when this worker may now write (master). A slave keeps its memo warm
        and writes nothing; it is idle, not busy. Called in the worker thread
        only. ChannelError propagates to the worker's retry."""
        want = self.want_role
        if want == self.role and self.channel.role == want:
            if want != MASTER:
                self._idle()
            return want == MASTER
        core = self.core
        for attempt in range(ROLE_STALE_RETRIES):
            if want == MASTER and core.role_for(self.dpid) != MASTER:
                want = SLAVE   # the plan moved on while we asked
            try:
                gen = core.generation_for(want)
                self.generation = self.channel.role_request(want, gen)
                break
            except RoleStale as e:
                # Someone asked with a newer generation since we read ours:
                # for SLAVE, read the newest and ask again; for MASTER, claim
                # again only if the plan still says so (a newer id then).
                LOG.warning("switch %016x: %s (attempt %d)", self.dpid, e, attempt + 1)
                if core.stopping.wait(0.05 * (attempt + 1)):
                    return False
        else:
            raise ChannelError(f"switch {self.dpid:016x}: role {want} refused as stale "
                               f"{ROLE_STALE_RETRIES} times")
        if want == MASTER and self.want_role != MASTER:
            # The plan took the role away while the switch was granting it:
            # write nothing; the poke that came with the change steps down.
            self.channel.role = SLAVE
            self.role = MASTER
            return False
        if want != self.role:
            self.role_changes += 1
            LOG.info("switch %016x: now %s (generation %d)", self.dpid, want, self.generation)
        self.role = want
        if want == MASTER:
            self.role_fresh = True
            self.master_since = time.time()
            return True
        self._idle()
        return False

    def _idle(self) -> None:
        with self.cond:
            if not self.want_sync:
                self.busy = False

    def run(self) -> None:
        """The worker thread: sync whenever poked, until the switch leaves."""
        sw, core = self, self.core
        backoff = RETRY_MIN_S
        # Before the first read: a change made after it is then reported.
        sw._start_monitor()
        while True:
            with sw.cond:
                while sw.connected and not sw.want_sync:
                    sw.cond.wait()
                if not sw.connected:
                    return
                reread, audit, reading = sw.want_reread, sw.want_audit, sw.reading
                drift = sw.want_drift
                sw.want_sync = sw.want_reread = sw.want_audit = sw.want_drift = False
                sw.reading = None
            if sw.want_role is not None:
                try:
                    may_write = sw.settle_role()
                except ChannelError as e:
                    LOG.error("switch %016x: role not settled: %s; again in %.1fs",
                              sw.dpid, e, backoff)
                    may_write = False
                    if core.stopping.wait(backoff):
                        return
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    sw.poke(reread=True)
                if not may_write:
                    if reading is not None:
                        sw.reconciler.discard(reading)
                    continue
                if sw.role_fresh:
                    sw.role_fresh = False
                    reread = True   # a takeover diffs the switch against the warm memo
            rec = sw.reconciler
            delta = desired = specs = None
            with core.lock:
                ready = core.view is not None
                seen, sw.change_seen = sw.change_seen, None
                if ready:
                    # Only this thread drops the belief, so it is still
                    # there when the delta is applied.
                    if not (reread or audit or drift or reading is not None
                            or rec.installed is None or rec.meters is None):
                        delta = sw.memo.take_delta()
                    if delta is None:
                        desired = sw.memo.take_all()
                        specs = sw.memo.meter_specs()
            if not ready:
                # Never sync before the first view: that would flush the switch.
                if reading is not None:
                    rec.discard(reading)
                continue
            was_in_sync = rec.in_sync
            try:
                if delta is not None:
                    sent = rec.sync_delta(*delta)
                else:
                    sent = rec.sync(desired, reread=reread, audit=audit, drift=drift,
                                    reading=reading, meters=specs)
                if sent:
                    LOG.info("switch %016x: %d change(s) sent", sw.dpid, sent)
                latency = getattr(core, "change_latency", None)
                if seen is not None and latency is not None:
                    latency.observe(time.monotonic() - seen)
                backoff = RETRY_MIN_S
                sw.announce |= rec.in_sync and not was_in_sync
                with sw.cond:
                    if not sw.want_sync:
                        sw.busy = False
                        settled, sw.announce = sw.announce, False
                    else:
                        settled = False
                if settled and hasattr(core, "status_due"):
                    core.status_due()
            except ChannelError as e:
                LOG.error("switch %016x: %s; re-reading in %.1fs", sw.dpid, e, backoff)
                if core.stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, RETRY_MAX_S)
                sw.poke(reread=True)
            except Exception:
                LOG.exception("switch %016x: reconcile failed", sw.dpid)
                sw.reconciler.invalidate()
                if core.stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, RETRY_MAX_S)
                sw.poke(reread=True)
