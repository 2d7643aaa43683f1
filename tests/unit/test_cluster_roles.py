"""Roles without OVS: the channel's write gate, role requests and their
stale answers, and the core holding roles as a cluster plan says (a real
SQLite store and compiler, fake switches). The same on real OVS:
tests/mininet/test_cluster_ovs.py."""
from __future__ import annotations

import time

import pytest
from test_ofchannel import PARSER, FakeDatapath, error, OFP
from test_reconciler import FakeSwitch
from test_reconciler_core import conf, h1_ports, store, write  # noqa: F401 (fixtures)

from apps.l2 import L2App
from controller.cluster import MASTER, SLAVE, NotMaster, Plan, RoleStale, master_for
from controller.core import Controller
from controller.flow import Flow
from controller.ofchannel import OFChannel
from controller.reconciler import MeterSpec
from l2_fixtures import port
from topology.store import SqliteStore


# -- the channel -----------------------------------------------------------------

def test_a_slave_channel_sends_no_write_at_all():
    dp = FakeDatapath()
    ch = OFChannel(dp, timeout=0.2)
    ch.role = SLAVE
    flow = Flow("classify", 10, (("in_port", 1),), (("apply", ("drop",)),), 1)
    with pytest.raises(NotMaster):
        ch.bundle([("add", flow)])
    with pytest.raises(NotMaster):
        ch.meter_mods([("add", 1, MeterSpec(10, 10))])
    with pytest.raises(NotMaster):
        ch.packet_out(1, b"\x00" * 60)
    assert dp.sent == []


def test_a_lone_controller_and_a_master_write():
    for role in (None, MASTER):
        dp = FakeDatapath()
        ch = OFChannel(dp)
        ch.role = role
        ch.packet_out(1, b"\x00" * 60)
        assert len(dp.sent) == 1


def role_reply(xid, role, gen):
    msg = PARSER.OFPRoleReply(None, role=role, generation_id=gen)
    msg.xid = xid
    return msg


def test_role_request_master_is_writable_only_once_confirmed():
    ch = None

    def respond(msg):
        assert ch.role != MASTER   # not before the switch said so
        ch.deliver(role_reply(msg.xid, msg.role, msg.generation_id))
    dp = FakeDatapath(respond)
    ch = OFChannel(dp, timeout=1)
    ch.role = SLAVE
    assert ch.role_request(MASTER, 42) == 42
    assert ch.writable and dp.sent[0].role == OFP.OFPCR_ROLE_MASTER


def test_a_stale_generation_is_refused_and_leaves_the_channel_unwritable():
    ch = None

    def respond(msg):
        ch.deliver_error(error(msg.xid, OFP.OFPET_ROLE_REQUEST_FAILED, OFP.OFPRRFC_STALE))
    dp = FakeDatapath(respond)
    ch = OFChannel(dp, timeout=1)
    ch.role = SLAVE
    with pytest.raises(RoleStale):
        ch.role_request(MASTER, 3)
    assert not ch.writable


def test_stepping_down_stops_writes_before_the_switch_answers():
    ch = None
    seen = []

    def respond(msg):
        seen.append(ch.writable)
        ch.deliver(role_reply(msg.xid, msg.role, msg.generation_id))
    dp = FakeDatapath(respond)
    ch = OFChannel(dp, timeout=1)
    ch.role = MASTER
    ch.role_request(SLAVE, 9)
    assert seen == [False] and not ch.writable


# -- the core holding roles ---------------------------------------------------------

class RoleSwitch(FakeSwitch):
    """A fake switch that plays OVS's role rules: writes only from a master,
    and a role request with an older generation than seen is stale."""

    def __init__(self, stale_first: int = 0):
        super().__init__()
        self.role = None
        self.election_id = None
        self.stale_first = stale_first
        self.requests = []

    @property
    def writable(self):
        return self.role is None or self.role == MASTER

    def role_request(self, role, gen):
        self.requests.append((role, gen))
        if role != MASTER:
            self.role = role
        if self.stale_first:
            self.stale_first -= 1
            raise RoleStale("stale")
        if self.election_id is not None and gen < self.election_id:
            raise RoleStale("stale")
        self.election_id = gen
        self.role = role
        return gen

    def bundle(self, ops):
        assert self.writable, "a slave wrote flows"
        super().bundle(ops)

    def meter_mods(self, ops):
        assert self.writable, "a slave wrote meters"
        super().meter_mods(ops)


class FakeMembership:
    def __init__(self, me):
        self.plan = Plan(me)
        self.on_change = None
        self.gen = 0

    def next_generation(self):
        self.gen += 1
        return self.gen

    def current_generation(self):
        return self.gen

    def status(self):
        return {"id": self.plan.me}

    def set_live(self, *ids):
        self.plan = Plan(self.plan.me, frozenset(ids))
        self.on_change(self.plan)


@pytest.fixture
def cctl(conf, store, tmp_path):  # noqa: F811
    c = Controller(conf, store, [L2App(conf)], status_path=str(tmp_path / "status.json"),
                   status_interval=0.05)
    m = FakeMembership("me")
    c.attach_cluster(m)
    c.start()
    yield c, m
    c.stop()


def wait(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("timed out")


def sw_status(ctl, dpid):
    return ctl.status()["switches"].get(f"{dpid:016x}")


def other_id_for(dpid: int, master: bool) -> str:
    """A controller id that, live with "me", makes "me" master of dpid or not."""
    for i in range(1000):
        cid = f"o{i}"
        if (master_for(dpid, {"me", cid}) == "me") == master:
            return cid
    raise AssertionError


def test_a_slave_computes_but_never_writes_and_a_takeover_diffs_to_nothing(cctl, store):
    ctl, m = cctl
    dpid = 0xA1
    theirs = other_id_for(dpid, master=False)
    m.set_live("me", theirs)
    sw = RoleSwitch()
    ctl.switch_connected(dpid, sw, h1_ports())
    st = wait(lambda: (s := sw_status(ctl, dpid)) and s["role"] == SLAVE and not s["busy"] and s)
    assert st["desired_flows"] > 0 and sw.log == [] and st["in_sync"] is None
    assert wait(lambda: ctl.status()["synced"])   # a settled slave counts as synced
    assert not ctl.answers_packet_in(dpid)
    # The master (another controller) wrote the same flows meanwhile.
    with ctl.lock:
        desired = dict(ctl.switches[dpid].memo.desired)
        specs = ctl.switches[dpid].memo.meter_specs()
    sw.meters.update(specs)
    sw.flows.update(desired)
    # It dies: this controller takes over and finds nothing to change.
    m.set_live("me")
    st = wait(lambda: (s := sw_status(ctl, dpid)) and s["role"] == MASTER and s["in_sync"] and s)
    assert sw.log == [] and st["flow_mods"] == 0 and st["master_since"]
    assert ctl.answers_packet_in(dpid)
    # A change is now written by us.
    write(store, "ports", port(5, "n1", "h2"))
    wait(lambda: sw.log)
    assert sw.requests[-1][0] == MASTER


def test_losing_the_master_role_stops_writes_at_once(cctl, store):
    ctl, m = cctl
    dpid = 0xA1
    m.set_live("me")
    sw = RoleSwitch()
    ctl.switch_connected(dpid, sw, h1_ports())
    wait(lambda: (s := sw_status(ctl, dpid)) and s["role"] == MASTER and s["in_sync"])
    m.set_live("me", other_id_for(dpid, master=False))
    assert not sw.writable   # before the worker even asks the switch
    wait(lambda: (s := sw_status(ctl, dpid)) and s["role"] == SLAVE and not s["busy"])
    sw.log.clear()
    write(store, "ports", port(5, "n1", "h2"))
    time.sleep(0.3)
    assert sw.log == []


def test_a_stale_master_request_is_retried_with_a_newer_generation(cctl):
    ctl, m = cctl
    m.set_live("me")
    sw = RoleSwitch(stale_first=2)
    ctl.switch_connected(0xA1, sw, h1_ports())
    wait(lambda: (s := sw_status(ctl, 0xA1)) and s["role"] == MASTER and s["in_sync"])
    gens = [g for r, g in sw.requests if r == MASTER]
    assert len(gens) == 3 and gens == sorted(set(gens))


def test_no_live_set_no_writes(cctl):
    ctl, m = cctl
    sw = RoleSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())   # the plan is still empty
    wait(lambda: (s := sw_status(ctl, 0xA1)) and s["role"] == SLAVE)
    assert sw.log == []


def test_port_status_is_written_only_by_the_master_of_the_ports_host(cctl, store):
    ctl, m = cctl
    h1 = 0xA1   # l2_fixtures: host h1's datapath id
    m.set_live("me", other_id_for(h1, master=False))
    wait(lambda: ctl.view is not None)
    with ctl.lock:
        ports_h1 = [p["id"] for p in ctl.view.ports_on_host("h1")]
        assert ports_h1
        assert ctl._owned_statuses({pid: "DOWN" for pid in ports_h1}, ctl._port_host) == {}
    m.set_live("me", other_id_for(h1, master=True))
    with ctl.lock:
        # Ours by the plan, but the switch is not connected: no switch to
        # confirm, so the plan decides.
        assert set(ctl._owned_statuses({pid: "DOWN" for pid in ports_h1}, ctl._port_host)) == set(ports_h1)


def test_a_floating_ips_status_is_written_only_by_the_master_of_its_ports_host(conf, tmp_path):  # noqa: F811
    """A slave installs nothing, so to it every floating IP looks DOWN: it
    must leave the status to the master of the host the floating IP's port
    is on, or it writes DOWN over the master's ACTIVE every round."""
    from test_nat_behaviour import cloud as nat_cloud
    view = nat_cloud()
    s = SqliteStore(str(tmp_path / "nat.sqlite"))
    for kind, docs in view.docs.items():
        for body in docs.values():
            write(s, kind, {**body, "status": "ACTIVE"} if kind == "floatingips" else body)

    def f1_status():
        with s.read() as r:
            return r.get("floatingips", "f1")["status"]
    conf.set_override("port_status_interval", 0.05, group="controller")
    ctl = Controller(conf, s, [L2App(conf)], status_path=str(tmp_path / "status.json"),
                     status_interval=0.05)
    m = FakeMembership("me")
    ctl.attach_cluster(m)
    ctl.start()
    try:
        c1 = 0xC1   # the host of f1's port
        m.set_live("me", other_id_for(c1, master=False))
        wait(lambda: ctl.view is not None)
        time.sleep(1.0)   # twenty external-status rounds
        assert f1_status() == "ACTIVE"
        # Master of c1, whose switch is not connected: the floating IP's
        # flows are nowhere, and this controller says so.
        m.set_live("me", other_id_for(c1, master=True))
        wait(lambda: f1_status() == "DOWN")
    finally:
        ctl.stop()
