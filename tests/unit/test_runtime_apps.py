"""[controller] apps: every app listed must load, or the controller does not start."""
from __future__ import annotations

from controller.app import AppSpec

import subprocess
import sys
from pathlib import Path

import pytest

from controller import runtime
from controller.runtime import AppLoadError, load_apps
from topology.config import new_conf

ROOT = Path(__file__).resolve().parents[2]


def conf_with(apps=None):
    c = new_conf()
    c(args=[], default_config_files=[], default_config_dirs=[])
    if apps is not None:
        c.set_override("apps", apps, group="controller")
    return c


def test_default_loads_every_built_app():
    assert [a.name for a in load_apps(conf_with())] == ["l2", "arp", "dhcp", "metadata",
                                                        "secgroup", "qos", "dvr", "nat"]


def test_subset_loads_only_those():
    assert [a.name for a in load_apps(conf_with(["l2", "dhcp"]))] == ["l2", "dhcp"]


def test_unknown_app_is_an_error():
    with pytest.raises(AppLoadError, match="unknown app 'arpp'"):
        load_apps(conf_with(["l2", "arpp"]))


def test_empty_list_is_an_error():
    with pytest.raises(AppLoadError, match="empty"):
        load_apps(conf_with([]))


def test_app_that_fails_to_import_is_an_error(monkeypatch):
    monkeypatch.setitem(runtime.APPS, "arp", AppSpec(2, "apps.no_such_module:ArpApp"))
    with pytest.raises(AppLoadError, match=r"app arp \(apps.no_such_module.ArpApp\) failed "
                                           r"to load: ModuleNotFoundError"):
        load_apps(conf_with())


class Exploding:
    def __init__(self, conf):
        raise ValueError("bad dhcp settings")


def test_app_that_fails_to_construct_is_an_error(monkeypatch):
    monkeypatch.setitem(runtime.APPS, "dhcp", AppSpec(3, f"{__name__}:Exploding"))
    with pytest.raises(AppLoadError, match="app dhcp .* ValueError: bad dhcp settings"):
        load_apps(conf_with())


def test_controller_with_a_bad_app_exits_non_zero_with_the_reason(tmp_path):
    cfg = tmp_path / "vmflow.conf"
    cfg.write_text(f"[controller]\napps = l2, arp, nosuch\nstatus_file = {tmp_path}/st.json\n")
    r = subprocess.run([sys.executable, "-m", "controller.cli", "controller", "--config", str(cfg),
                        "--store", f"sqlite:///{tmp_path}/db.sqlite",
                        "--ofp-listen", "127.0.0.1:1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unknown app 'nosuch'" in r.stderr
    assert not (tmp_path / "st.json").exists()   # it never ran
