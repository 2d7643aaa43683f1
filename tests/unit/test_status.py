"""The status file surfaces the counts kept elsewhere: each switch's
unsolicited OpenFlow errors, each app's failed flow computations, and the
switch events the core's inbox coalesced."""
from __future__ import annotations

import json

import pytest
from test_ofchannel import OFP, FakeDatapath, error

from apps.l2 import L2App
from controller.core import Controller
from controller.switch_worker import Switch
from controller.ofchannel import OFChannel
from controller.status import read_status, write_status
from topology.config import new_conf
from topology.store import SqliteStore


@pytest.fixture
def ctl(tmp_path):
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    return Controller(conf, SqliteStore(str(tmp_path / "db.sqlite")), [L2App(conf)])


def test_status_shows_unsolicited_errors_app_errors_and_coalesced_events(ctl, tmp_path):
    ch = OFChannel(FakeDatapath())
    ctl.switches[0xAB] = Switch(0xAB, ch, ctl.meter_spec)
    ch.deliver_error(error(7, type_=OFP.OFPET_BAD_ACTION, code=OFP.OFPBAC_BAD_OUT_PORT))
    ch.deliver_error(error(8, type_=OFP.OFPET_BAD_ACTION, code=OFP.OFPBAC_BAD_OUT_PORT))
    ch.deliver_error(error(9, code=1))
    ctl.compiler.app_errors["arp"] = 3
    # Three port events for one interface before the core runs: two superseded.
    for ofport in (1, 2, 3):
        ctl.port_changed(0xAB, "tap1", ofport)

    st = ctl.status()
    assert st["switches"]["00000000000000ab"]["unsolicited_errors"] == {
        f"type={OFP.OFPET_BAD_ACTION},code={OFP.OFPBAC_BAD_OUT_PORT}": 2,
        f"type={OFP.OFPET_BAD_REQUEST},code=1": 1}
    assert st["counters"]["unsolicited_errors"] == 3
    assert st["app_errors"] == {"arp": 3}
    assert st["counters"]["switch_events_coalesced"] == 2

    path = str(tmp_path / "status.json")
    write_status(path, st)
    assert read_status(path) == json.loads(json.dumps(st))


def test_a_switch_channel_without_error_counts_is_left_out(ctl):
    class Bare:
        pass
    ctl.switches[1] = Switch(1, Bare(), ctl.meter_spec)
    st = ctl.status()
    assert "unsolicited_errors" not in st["switches"]["0000000000000001"]
    assert st["counters"]["unsolicited_errors"] == 0
    assert st["app_errors"] == {} and st["counters"]["switch_events_coalesced"] == 0


def test_status_shows_the_openflow_listeners_counts_and_refusals(ctl):
    from test_ofconn import FakeDp

    from controller.ofconn import Connections
    assert ctl.status()["refused_dpids"] == {}
    ctl.ofconns = Connections()
    assert ctl.ofconns.admit(FakeDp(0xAB, "10.0.0.1:1"))
    assert not ctl.ofconns.admit(FakeDp(0xAB, "10.0.0.66:2"))
    st = ctl.status()
    assert st["counters"]["ofp_duplicate_dpid_refused"] == 1
    assert st["counters"]["ofp_tls_failures"] == 0 and st["counters"]["ofp_connections"] == 0
    assert st["refused_dpids"]["00000000000000ab"]["last_address"] == "10.0.0.66:2"
    assert st["refused_dpids"]["00000000000000ab"]["kept_address"] == "10.0.0.1:1"


def _status_cli(tmp_path, capsys, status):
    from controller.cli import run_status
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override("status_file", str(tmp_path / "st.json"), group="controller")
    write_status(str(tmp_path / "st.json"), status)
    assert run_status(conf) == 0
    return json.loads(capsys.readouterr().out)


def test_vmflow_status_claims_nothing_from_a_stale_file(tmp_path, capsys):
    import os
    import time
    sw = {"in_sync": True, "repairs": 3}
    fresh = {"pid": os.getpid(), "time": time.time(), "synced": True, "store_ok": True,
             "switches": {"00000000000000ab": dict(sw)}}
    out = _status_cli(tmp_path, capsys, fresh)
    assert out["running"] and not out["stale"] and out["synced"] and out["store_ok"]
    assert out["switches"]["00000000000000ab"] == sw and out["age"] < 5
    old = dict(fresh, time=time.time() - 60, switches={"00000000000000ab": dict(sw)})
    out = _status_cli(tmp_path, capsys, old)
    assert out["stale"] and out["age"] >= 60
    assert not out["synced"] and not out["store_ok"]
    assert out["switches"]["00000000000000ab"] == {"in_sync": False, "repairs": 3}
