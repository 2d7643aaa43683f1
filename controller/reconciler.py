"""Make one switch's flows and meters equal to the desired set, sending only the difference.

The reconciler believes the switch holds `installed` (read with flow-stats on
connect and at every audit, then kept by applying what it sent). A sync diffs
desired against that belief and sends:

    meters added or changed   (outside bundles, before the flows that use them)
    one atomic ONF bundle     (flow deletes, adds and modifies, and a re-write
                               of every flow using a meter just added: see
                               rebind_meters)
    meters no longer used     (after: deleting a meter deletes its flows)

Meters are desired values too (controller/meters.py): an app may want a
meter with its own spec (QoS), handed to sync() and sync_delta() next to the
flows, and the specs are diffed, so a changed rate is one meter-mod modify
and no flow-mod. Any other meter id a desired flow uses is a packet-in meter
with the configured rate, so packet-in apps never manage meters themselves.

Between reads, a change need not diff whole tables: sync_delta() is handed
only the keys (and meter ids) whose desired value changed and compares just
those with the belief. Whole diffs happen where the belief is (re)built: on
connect, after an error and at every audit.

The audit's read (thousands of flow-stats entries to fetch and decode) can
run outside the sync lock, so changes keep reaching the switch meanwhile:
read() returns a Reading, the reconciler notes every key it changes while
that reading is open, and sync(reading=...) adopts it, keeping the belief
for the keys it changed itself since the read began (the read may predate
them), then repairs with one whole diff.

The switch is reached through a Channel (controller/ofchannel.py on a real
switch, a fake in the unit tests).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Mapping, Optional, Protocol

from controller import pipeline
from controller.flow import Flow, meters_of
from controller.meters import MeterSpec  # noqa: F401  (re-exported: the Channel's spec)

LOG = logging.getLogger(__name__)


class ChannelError(Exception):
    """The switch refused a change or did not answer; the belief is no longer trusted."""


class Channel(Protocol):
    def read_flows(self) -> list[Flow]: ...

    def read_meters(self) -> dict[int, MeterSpec]: ...

    def meter_mods(self, ops: list[tuple[str, int, Optional[MeterSpec]]]) -> None: ...

    def bundle(self, ops: list[tuple[str, Flow]]) -> None: ...


FlowOp = tuple[str, Flow]   # ("add" | "modify" | "delete", flow)


def diff_flows(desired: Mapping[tuple, Flow], installed: Mapping[tuple, Flow]) -> list[FlowOp]:
    """Flow-mods turning installed into desired: deletes first, then adds and modifies."""
    ops: list[FlowOp] = [("delete", f) for k, f in installed.items() if k not in desired]
    for k, f in desired.items():
        cur = installed.get(k)
        if cur is None:
            ops.append(("add", f))
        elif cur != f:
            # modify-strict keeps the flow's counters but cannot change its
            # cookie; a new owner needs an add, which replaces the flow.
            ops.append(("modify" if cur.cookie == f.cookie else "add", f))
    return ops


def ours(meters: Mapping[int, MeterSpec]) -> dict[int, MeterSpec]:
    """The meters in vmflow's id ranges (controller/pipeline.py METER_RANGES):
    the only ones it installs, changes or deletes; others belong to someone
    else sharing the switch."""
    return {m: spec for m, spec in meters.items() if pipeline.meter_purpose(m)}


def meters_used(flows: Iterable[Flow]) -> set[int]:
    return {m for f in flows for m in meters_of(f)}


def diff_meters(desired: Mapping[int, MeterSpec], installed: Mapping[int, MeterSpec]
                ) -> tuple[list, list]:
    """(adds and modifies, deletes) as (op, meter_id, spec) triples."""
    before = []
    for mid, spec in sorted(desired.items()):
        cur = installed.get(mid)
        if cur is None:
            before.append(("add", mid, spec))
        elif cur != spec:
            before.append(("modify", mid, spec))
    after = [("delete", mid, None) for mid in sorted(installed) if mid not in desired]
    return before, after


def rebind_meters(desired: Mapping[tuple, Flow], ops: list[FlowOp], before: list) -> list[FlowOp]:
    """Modifies re-writing the flows that are already right but use a meter
    about to be added.

    Open vSwitch binds a controller(meter_id=N) action to meter N when the
    flow is written; written while N did not exist, the flow sends to the
    controller unmetered, and adding N later does not change that. That is
    the state a flow-preserving restart (ovs-save restores flows, never
    meters) or a hand-deleted meter leaves, so re-writing (modify-strict,
    which keeps counters) after the meter binds them again. Only whole
    syncs need this: a delta adds a meter together with its new flows.
    """
    added = {mid for op, mid, _spec in before if op == "add"}
    if not added:
        return []
    touched = {f.key for _op, f in ops}
    return [("modify", f) for k, f in desired.items()
            if k not in touched and added.intersection(meters_of(f))]


class Reading:
    """A switch's flows and meters read outside the sync lock, and what the
    reconciler itself changed on the switch while it was open."""

    def __init__(self, valid: bool) -> None:
        self.flows: Optional[dict[tuple, Flow]] = None
        self.meters: Optional[dict[int, MeterSpec]] = None
        self.keys: set[tuple] = set()
        self.meter_ids: set[int] = set()
        self.valid = valid   # False once the belief it would patch is dropped


class SwitchReconciler:
    def __init__(self, dpid: int, channel: Channel, meter_spec: MeterSpec):
        self.dpid = dpid
        self.channel = channel
        self.meter_spec = meter_spec
        self.installed: Optional[dict[tuple, Flow]] = None
        self.meters: Optional[dict[int, MeterSpec]] = None
        # One sync at a time per switch; held across the sync's requests.
        self.lock = threading.Lock()
        # Guards the open readings only, never held across a request: the
        # thread that delivers the switch's replies reports drift through
        # it (distrust_readings, discard), and must never wait on a sync
        # that is waiting on one of those replies. Taken after self.lock.
        self._readings_lock = threading.Lock()
        self.stats = {"flow_mods": 0, "meter_mods": 0, "bundles": 0, "reads": 0,
                      "repairs": 0, "audits": 0, "drift_rereads": 0, "errors": 0}
        self.last_sync: Optional[float] = None
        self.last_sync_duration: Optional[float] = None
        self.in_sync = False
        self._readings: list[Reading] = []   # open readings, noting our changes

    def invalidate(self) -> None:
        with self.lock:
            self._invalidate()

    def _invalidate(self) -> None:
        self.installed = None
        self.meters = None
        with self._readings_lock:
            for r in self._readings:
                r.valid = False

    # -- reading outside the lock (the audit) --------------------------------
    def read(self) -> Reading:
        """Read the switch without holding up syncs; adopt it with sync(reading=...).

        Only worth it while a belief exists: without one, the reading is
        marked invalid and sync reads again itself.
        """
        with self.lock, self._readings_lock:
            reading = Reading(valid=self.installed is not None and self.meters is not None)
            self._readings.append(reading)
        try:
            flows = self.channel.read_flows()
            reading.meters = ours(self.channel.read_meters())
        except BaseException:
            self.discard(reading)
            raise
        reading.flows = {f.key: f for f in flows}
        return reading

    def distrust_readings(self) -> None:
        """The switch changed behind our back: readings open now may predate
        it, so sync reads again instead of adopting them. Never waits on a
        sync (the replies' thread calls it)."""
        with self._readings_lock:
            for r in self._readings:
                r.valid = False

    def discard(self, reading: Reading) -> None:
        """Stop noting changes for a reading that will not be adopted.
        Never waits on a sync."""
        self._close(reading)

    def _close(self, reading: Reading) -> None:
        with self._readings_lock:
            if reading in self._readings:
                self._readings.remove(reading)

    def _noted(self, keys: Iterable[tuple], meter_ids: Iterable[int]) -> None:
        with self._readings_lock:
            if self._readings:
                keys, meter_ids = list(keys), list(meter_ids)
                for r in self._readings:
                    r.keys.update(keys)
                    r.meter_ids.update(meter_ids)

    def _adopt(self, reading: Reading, audit: bool) -> None:
        assert self.installed is not None and self.meters is not None
        assert reading.flows is not None and reading.meters is not None
        fresh, meters = reading.flows, reading.meters
        # What we changed since the read began: the switch has what we sent
        # (its bundle was committed), whatever the read saw.
        for k in reading.keys:
            cur = self.installed.get(k)
            if cur is None:
                fresh.pop(k, None)
            else:
                fresh[k] = cur
        for mid in reading.meter_ids:
            spec = self.meters.get(mid)
            if spec is None:
                meters.pop(mid, None)
            else:
                meters[mid] = spec
        self._believe(fresh, meters, audit)

    # -- reading under the lock ----------------------------------------------
    def _read(self, audit: bool) -> None:
        flows = self.channel.read_flows()
        meters = ours(self.channel.read_meters())
        self._believe({f.key: f for f in flows}, meters, audit)

    def _believe(self, fresh: dict[tuple, Flow], meters: dict[int, MeterSpec],
                 audit: bool) -> None:
        self.stats["reads"] += 1
        if audit and self.installed is not None:
            # Drift is what changed on the switch behind our back: the
            # difference between what we believed and what it reports.
            drift = len(diff_flows(self.installed, fresh))
            mb, ma = diff_meters(self.meters or {}, meters)
            self.stats["repairs"] += drift + len(mb) + len(ma)
            if drift or mb or ma:
                LOG.warning("switch %016x: %d flow(s) and %d meter(s) drifted; repairing",
                            self.dpid, drift, len(mb) + len(ma))
        self.installed = fresh
        self.meters = meters

    def wanted_meters(self, desired: Mapping[tuple, Flow],
                      specs: Optional[Mapping[int, MeterSpec]] = None) -> dict[int, MeterSpec]:
        """Every meter the switch should hold: the packet-in meters the flows
        imply, with the configured spec, and the ones apps want with theirs."""
        want = {m: self.meter_spec for m in meters_used(desired.values())}
        want.update(specs or {})
        return want

    def sync(self, desired: Mapping[tuple, Flow], *, reread: bool = False,
             audit: bool = False, drift: bool = False, reading: Optional[Reading] = None,
             meters: Optional[Mapping[int, MeterSpec]] = None) -> int:
        """Make the switch match desired; return the number of messages sent.

        With a reading (from read()) the switch is not read again here,
        unless the reading can no longer be trusted. meters are the meters
        apps want with their own spec (see wanted_meters). drift: the
        switch's flow monitor reported a foreign change; re-read and count
        what differs as repairs, like an audit. ChannelError leaves the
        belief invalidated, so the next sync re-reads.
        """
        with self.lock:
            started = time.monotonic()
            try:
                if drift:
                    self.stats["drift_rereads"] += 1
                    audit = True
                elif audit:
                    self.stats["audits"] += 1
                adopted = False
                if reading is not None:
                    self._close(reading)
                    if reading.valid and self.installed is not None and self.meters is not None:
                        self._adopt(reading, audit)
                        adopted = True
                if not adopted and (reread or audit or self.installed is None
                                    or self.meters is None):
                    self._read(audit)
                assert self.installed is not None and self.meters is not None
                want_meters = self.wanted_meters(desired, meters)
                ops = diff_flows(desired, self.installed)
                before, after = diff_meters(want_meters, self.meters)
                ops += rebind_meters(desired, ops, before)
                sent = self._send(ops, before, after)
                self.last_sync_duration = time.monotonic() - started
                return sent
            except ChannelError:
                self._failed()
                raise

    def sync_delta(self, flows: Mapping[tuple, Optional[Flow]],
                   meters: Mapping[int, "bool | MeterSpec"]) -> int:
        """Apply a change of the desired set: flows maps each changed key to
        its desired flow (None: no longer desired), meters each changed meter
        id to its desired spec (an app's meter), True (a packet-in meter a
        desired flow uses: the configured spec) or False (no longer wanted).
        Only those are compared with the belief, which must exist (a whole
        sync builds it).
        """
        with self.lock:
            if self.installed is None or self.meters is None:
                raise RuntimeError(f"switch {self.dpid:016x}: no belief to patch; sync whole first")
            try:
                deletes: list[FlowOp] = []
                ops: list[FlowOp] = []
                for k, f in flows.items():
                    cur = self.installed.get(k)
                    if f is None:
                        if cur is not None:
                            deletes.append(("delete", cur))
                    elif cur is None:
                        ops.append(("add", f))
                    elif cur != f:
                        ops.append(("modify" if cur.cookie == f.cookie else "add", f))
                before, after = [], []
                for mid, want in meters.items():
                    cur_spec = self.meters.get(mid)
                    spec = want if isinstance(want, MeterSpec) else \
                        (self.meter_spec if want else None)
                    if spec is not None and cur_spec is None:
                        before.append(("add", mid, spec))
                    elif spec is not None and cur_spec != spec:
                        before.append(("modify", mid, spec))
                    elif spec is None and cur_spec is not None:
                        after.append(("delete", mid, None))
                return self._send(deletes + ops, before, after)
            except ChannelError:
                self._failed()
                raise

    def _failed(self) -> None:
        self.stats["errors"] += 1
        self.in_sync = False
        self._invalidate()

    def _send(self, ops: list[FlowOp], before: list, after: list) -> int:
        """Send meters, one bundle, then meter deletes; keep the belief as sent."""
        assert self.installed is not None and self.meters is not None
        if before:
            self.channel.meter_mods(before)
            self.stats["meter_mods"] += len(before)
            for _op, mid, spec in before:
                self.meters[mid] = spec
            self._noted((), (mid for _op, mid, _spec in before))
        if ops:
            if LOG.isEnabledFor(logging.DEBUG):
                for op, f in ops:
                    LOG.debug("switch %016x: %s %s (was %s)", self.dpid, op, f,
                              self.installed.get(f.key))
            self.channel.bundle(ops)
            self.stats["flow_mods"] += len(ops)
            self.stats["bundles"] += 1
            for op, f in ops:
                if op == "delete":
                    self.installed.pop(f.key, None)
                else:
                    self.installed[f.key] = f
            self._noted((f.key for _op, f in ops), ())
        if after:
            self.channel.meter_mods(after)
            self.stats["meter_mods"] += len(after)
            for _op, mid, _spec in after:
                self.meters.pop(mid, None)
            # Deleting a meter deletes the flows using it; none are desired.
            self._noted((), (mid for _op, mid, _spec in after))
        self.last_sync = time.time()
        self.in_sync = True
        return len(ops) + len(before) + len(after)
