"""Reconciler diff logic against a fake switch: only the difference is sent."""
from __future__ import annotations

import threading

import pytest

from controller import pipeline
from controller.flow import Flow, apply, flow, goto, meters_of, output, to_controller
from controller.reconciler import (ChannelError, MeterSpec, Reading, SwitchReconciler, diff_flows,
                                   diff_meters)

SPEC = MeterSpec(200, 100)


class FakeSwitch:
    """Holds flows and meters like a switch; records every message it gets."""

    def __init__(self):
        self.flows: dict[tuple, Flow] = {}
        self.meters: dict[int, MeterSpec] = {}
        self.log: list[tuple] = []
        self.fail_bundle = False
        # Keys of flows whose controller(meter_id) action is bound to its
        # meter: OVS binds when the flow is written, if the meter exists.
        self.bound: set[tuple] = set()

    def read_flows(self):
        return [f for f in list(self.flows.values())
                if f.cookie & pipeline.COOKIE_SPACE_MASK == pipeline.COOKIE_SPACE]

    def read_meters(self):
        return dict(self.meters)

    def meter_mods(self, ops):
        for op, mid, spec in ops:
            self.log.append(("meter", op, mid))
            if op == "delete":
                self.meters.pop(mid)
                # OpenFlow: deleting a meter deletes the flows using it.
                self.flows = {k: f for k, f in self.flows.items()
                              if ("meter", mid) not in f.instructions}
            else:
                self.meters[mid] = spec

    def bundle(self, ops):
        if self.fail_bundle:
            raise ChannelError("bundle refused")
        for op, f in ops:
            self.log.append(("flow", op, f.key))
            if op == "delete":
                del self.flows[f.key]
            else:
                assert all(m in self.meters for m in
                           [i[1] for i in f.instructions if i[0] == "meter"]), "meter first"
                self.flows[f.key] = f
                if all(m in self.meters for m in meters_of(f)):
                    self.bound.add(f.key)
                else:
                    self.bound.discard(f.key)

    def restore(self):
        """What `ovs-ctl restart` leaves: the flows (ovs-save restored them
        while no meter existed, so none is bound) and no meters."""
        self.meters = {}
        self.bound = {k for k, f in self.flows.items() if not meters_of(f)}


def fl(n, table="output", app=1, port=None):
    return flow(app, table, 100, {"reg7": n}, apply(output(port or n)))


def index(*flows):
    return {f.key: f for f in flows}


def test_diff_adds_deletes_and_modifies_only_what_differs():
    same, gone, new = fl(1), fl(2), fl(3)
    changed_old, changed_new = fl(4, port=9), fl(4, port=10)
    ops = diff_flows(index(same, new, changed_new), index(same, gone, changed_old))
    assert ops == [("delete", gone), ("add", new), ("modify", changed_new)]


def test_cookie_change_is_an_add_not_a_modify():
    old, new = fl(1, app=1), fl(1, app=2)
    assert diff_flows(index(new), index(old)) == [("add", new)]


def test_diff_meters():
    before, after = diff_meters({1: SPEC, 2: SPEC}, {2: MeterSpec(5, 5), 3: SPEC})
    assert before == [("add", 1, SPEC), ("modify", 2, SPEC)]
    assert after == [("delete", 3, None)]


def test_restart_with_unchanged_state_sends_nothing():
    sw = FakeSwitch()
    desired = index(fl(1), fl(2), flow(2, "services", 100, {"reg6": 1}, *to_controller(1)))
    first = SwitchReconciler(1, sw, SPEC)
    assert first.sync(desired) == 4          # 3 flows + 1 meter
    sw.log.clear()
    again = SwitchReconciler(1, sw, SPEC)    # a new controller process
    assert again.sync(desired) == 0
    assert sw.log == [] and again.stats["flow_mods"] == 0 and again.stats["meter_mods"] == 0


def test_foreign_flows_are_left_alone_and_residue_in_our_space_removed():
    sw = FakeSwitch()
    foreign = Flow("output", 5, (("reg7", 9),), (), 0x1234)
    residue = fl(9)
    sw.flows = index(foreign, residue)
    SwitchReconciler(1, sw, SPEC).sync(index(fl(1)))
    assert set(sw.flows) == {foreign.key, fl(1).key}


def test_meters_go_before_their_flows_and_leave_after():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    ctl = flow(2, "services", 100, {"reg6": 7}, *to_controller(7))
    rec.sync(index(ctl))
    assert sw.log == [("meter", "add", 7), ("flow", "add", ctl.key)]
    sw.log.clear()
    rec.sync({})
    assert sw.log == [("flow", "delete", ctl.key), ("meter", "delete", 7)]
    assert sw.meters == {} and sw.flows == {}


def test_meters_outside_vmflows_ranges_are_left_alone():
    """Another controller's meter (an id outside pipeline.METER_RANGES) is
    neither deleted nor counted as drift; one of ours nothing uses goes."""
    sw = FakeSwitch()
    sw.meters = {0x300000: SPEC, 9: SPEC}
    rec = SwitchReconciler(1, sw, SPEC)
    rec.sync({})
    assert sw.meters == {0x300000: SPEC}
    assert ("meter", "delete", 9) in sw.log
    assert rec.sync({}, audit=True) == 0 and rec.stats["repairs"] == 0


def test_audit_repairs_hand_edits_and_counts_them():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    desired = index(fl(1), fl(2), fl(3))
    rec.sync(desired)
    del sw.flows[fl(1).key]                                   # deleted by hand
    sw.flows[fl(2).key] = fl(2, port=42)                      # modified by hand
    sw.flows[fl(8).key] = fl(8)                               # added by hand in our space
    assert rec.sync(desired) == 0                             # belief alone sees nothing
    assert rec.sync(desired, audit=True) == 3
    assert sw.flows == desired
    assert rec.stats["repairs"] == 3 and rec.stats["audits"] == 1


def test_refused_bundle_invalidates_belief_so_the_next_sync_rereads():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    sw.fail_bundle = True
    with pytest.raises(ChannelError):
        rec.sync(index(fl(1)))
    assert rec.installed is None and rec.stats["errors"] == 1
    sw.fail_bundle = False
    assert rec.sync(index(fl(1))) == 1
    assert sw.flows == index(fl(1))


def test_incremental_change_sends_one_flow_mod():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    desired = index(*(fl(n) for n in range(1, 200)))
    rec.sync(desired)
    sw.log.clear()
    desired[fl(5).key] = fl(5, port=77)
    assert rec.sync(desired) == 1
    assert sw.log == [("flow", "modify", fl(5).key)]


def test_goto_only_flows_compare_equal_after_sync():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    d = index(flow(1, "services", 0, {}, goto("egress_firewall")))
    rec.sync(d)
    assert SwitchReconciler(1, sw, SPEC).sync(d) == 0


def test_delta_compares_only_the_keys_it_is_given():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    rec.sync(index(*(fl(n) for n in range(1, 200))))
    sw.log.clear()
    del sw.flows[fl(9).key]               # drift a delta does not look at
    ctl = flow(2, "services", 100, {"reg6": 7}, *to_controller(7))
    sent = rec.sync_delta({fl(5).key: fl(5, port=77), fl(6).key: None, fl(7).key: fl(7),
                           ctl.key: ctl}, {7: True})
    assert sent == 4
    assert sw.log == [("meter", "add", 7), ("flow", "delete", fl(6).key),
                      ("flow", "modify", fl(5).key), ("flow", "add", ctl.key)]
    sw.log.clear()
    assert rec.sync_delta({ctl.key: None}, {7: False}) == 2
    assert sw.log == [("flow", "delete", ctl.key), ("meter", "delete", 7)]
    assert fl(9).key not in sw.flows      # left for the next read to find


def test_delta_needs_a_belief():
    rec = SwitchReconciler(1, FakeSwitch(), SPEC)
    with pytest.raises(RuntimeError):
        rec.sync_delta({fl(1).key: fl(1)}, {})


def test_reading_adopted_keeps_what_was_sent_while_it_was_open():
    """The audit reads outside the sync lock; changes sent meanwhile are not undone."""
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    desired = index(fl(1), fl(2), fl(3))
    rec.sync(desired)
    del sw.flows[fl(1).key]                    # drift, seen by the read
    reading = rec.read()
    rec.sync_delta({fl(2).key: None, fl(4).key: fl(4)}, {})   # sent after the read
    desired = index(fl(1), fl(3), fl(4))
    sw.log.clear()
    assert rec.sync(desired, audit=True, reading=reading) == 1
    assert sw.log == [("flow", "add", fl(1).key)]
    assert sw.flows == desired and rec.installed == desired
    assert rec.stats["repairs"] == 1 and rec.stats["audits"] == 1


def test_reading_voided_by_an_error_is_not_adopted():
    sw = FakeSwitch()
    rec = SwitchReconciler(1, sw, SPEC)
    rec.sync(index(fl(1)))
    reading = rec.read()
    sw.fail_bundle = True
    with pytest.raises(ChannelError):
        rec.sync_delta({fl(2).key: fl(2)}, {})
    sw.fail_bundle = False
    reads = rec.stats["reads"]
    assert rec.sync(index(fl(1), fl(2)), audit=True, reading=reading) == 1
    assert rec.stats["reads"] == reads + 1     # read again, not the stale reading
    assert sw.flows == index(fl(1), fl(2))


class RepliesThroughOneThread(FakeSwitch):
    """A switch whose read replies come only when the thread that delivers
    replies gets to them, as os-ken's event thread delivers OVS's; that
    thread also reports flow monitor drift."""

    def __init__(self):
        super().__init__()
        self.asked = threading.Event()
        self.replied = threading.Event()

    def read_meters(self):
        self.asked.set()
        assert self.replied.wait(5), "no reply: the replies' thread is stuck"
        return super().read_meters()


def test_a_drift_report_while_a_sync_waits_on_a_reply_does_not_wait_for_the_sync():
    """The flow monitor's drift report and the switch's replies arrive on
    one thread. If reporting drift waited on the sync lock while a sync held
    it waiting on a reply, neither would move: every switch of the
    controller stalled until its connection dropped (seen on OVS: a hand
    edit during an audit read, no repair for 15 s)."""
    sw = RepliesThroughOneThread()
    rec = SwitchReconciler(1, sw, SPEC)
    sw.replied.set()
    rec.sync(index(fl(1)))
    sw.replied.clear()
    sw.asked.clear()
    syncing = threading.Thread(target=rec.sync, args=(index(fl(1), fl(2)),),
                               kwargs={"reread": True}, daemon=True)
    syncing.start()
    assert sw.asked.wait(5)

    def replies_thread():
        rec.distrust_readings()      # the monitor's report comes first
        rec.discard(Reading(valid=True))
        sw.replied.set()             # then the reply the sync waits on
    t = threading.Thread(target=replies_thread, daemon=True)
    t.start()
    t.join(2)
    assert not t.is_alive(), "the drift report waited on the sync"
    syncing.join(5)
    assert not syncing.is_alive()
    assert sw.flows == index(fl(1), fl(2))


def test_flows_restored_without_their_meters_are_rewritten_after_the_meters():
    """A flow-preserving OVS restart brings back the flows but not the
    meters; the controller-bound flows then send unmetered until re-written
    once their meter exists. The reconciler does that, in one bundle after
    the meters, and leaves every other flow alone."""
    sw = FakeSwitch()
    ctl = flow(2, "services", 100, {"reg6": 7}, *to_controller(7))
    desired = index(fl(1), ctl)
    SwitchReconciler(1, sw, SPEC).sync(desired)
    assert sw.bound == {fl(1).key, ctl.key}
    sw.restore()
    sw.log.clear()
    rec = SwitchReconciler(1, sw, SPEC)      # the switch reconnects: a new belief
    assert rec.sync(desired) == 2
    assert sw.log == [("meter", "add", 7), ("flow", "modify", ctl.key)]
    assert sw.bound == {fl(1).key, ctl.key} and sw.meters == {7: SPEC}
    sw.log.clear()
    assert rec.sync(desired, audit=True) == 0 and sw.log == []


def test_a_meter_deleted_by_hand_is_repaired_with_its_flows():
    sw = FakeSwitch()
    ctl = flow(2, "services", 100, {"reg6": 7}, *to_controller(7))
    rec = SwitchReconciler(1, sw, SPEC)
    rec.sync(index(ctl))
    sw.restore()               # as after ovs-ofctl del-meters: the flow stays, unbound
    sw.log.clear()
    rec.sync(index(ctl), audit=True)
    assert sw.log == [("meter", "add", 7), ("flow", "modify", ctl.key)]
    assert rec.stats["repairs"] == 1 and sw.bound == {ctl.key}
