"""Ansible's openstack.cloud modules (the `ansible` package from PyPI) and the
`openstack` CLI drive a real `vmflow api`, unchanged.

They live in their own venv, .venv-ansible, made by scripts/setup with
pinned versions: its openstacksdk need not match the one the project's
tests use. Each playbook runs twice; the second run must change nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from apihelpers import ROOT, ApiProcess

VENV = ROOT / ".venv-ansible" / "bin"
PLAYBOOKS = Path(__file__).resolve().parent / "ansible"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if not (VENV / "ansible-playbook").exists():
        pytest.fail(f"{VENV}/ansible-playbook is missing: run scripts/setup", pytrace=False)
    tmp = tmp_path_factory.mktemp("ansible")
    server = ApiProcess(tmp, workers=2,
                        extra="network_vlan_ranges = physnet1:1000:2999,physnet-ans:300:399\n")
    config = tmp / "clouds.yaml"
    url = server.url + "/"
    config.write_text(json.dumps({"clouds": {"vmflow": {
        "auth_type": "none", "auth": {"endpoint": url},
        "network_endpoint_override": url, "region_name": ""}}}))
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(config), OS_CLOUD="vmflow",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
               ANSIBLE_PYTHON_INTERPRETER=str(VENV / "python"))
    env.pop("PYTHONPATH", None)
    yield server, env
    server.stop()


def playbook(env, name: str) -> dict:
    p = subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        str(PLAYBOOKS / name)], env=env, capture_output=True, text=True,
                       timeout=300)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"{name}: rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    stats = out["stats"]["localhost"]
    failed = [(t["task"]["name"], r.get("msg"))
              for play in out["plays"] for t in play["tasks"]
              for r in t["hosts"].values() if r.get("failed")]
    assert p.returncode == 0 and not stats["failures"], (failed, p.stderr[-2000:])
    changed = [t["task"]["name"] for play in out["plays"] for t in play["tasks"]
               for r in t["hosts"].values() if r.get("changed")]
    return {"stats": stats, "changed": changed}


def openstack(env, *args) -> str:
    p = subprocess.run([str(VENV / "openstack"), *args], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def test_playbooks_converge_and_the_second_run_changes_nothing(cloud):
    server, env = cloud
    first = playbook(env, "network.yml")
    assert set(first["changed"]) == {"network", "subnet", "security group", "ssh rule",
                                     "ping rule", "port"}, first
    second = playbook(env, "network.yml")
    assert second["changed"] == [] and second["stats"]["changed"] == 0, second

    gone = playbook(env, "teardown.yml")
    assert len(gone["changed"]) == 4, gone
    again = playbook(env, "teardown.yml")
    assert again["changed"] == [], again


def test_openstack_cli_tags_and_availability_zones(cloud):
    server, env = cloud
    created = json.loads(openstack(env, "network", "create", "cli-net", "-f", "json"))
    openstack(env, "network", "set", "--tag", "red", "--tag", "blue", "cli-net")
    openstack(env, "network", "create", "cli-other", "--tag", "green", "-f", "json")
    listed = json.loads(openstack(env, "network", "list", "--tags", "red", "-f", "json"))
    assert [n["ID"] for n in listed] == [created["id"]]
    listed = json.loads(openstack(env, "network", "list", "--any-tags", "red,green", "-f", "json"))
    assert {n["Name"] for n in listed} == {"cli-net", "cli-other"}
    listed = json.loads(openstack(env, "network", "list", "--not-tags", "red", "-f", "json"))
    assert "cli-net" not in {n["Name"] for n in listed}
    shown = json.loads(openstack(env, "network", "show", "cli-net", "-f", "json"))
    assert sorted(shown["tags"]) == ["blue", "red"]
    openstack(env, "network", "unset", "--tag", "blue", "cli-net")
    shown = json.loads(openstack(env, "network", "show", "cli-net", "-f", "json"))
    assert shown["tags"] == ["red"]

    from apihelpers import Client
    Client(server.url).create("hosts", "host", name="cli-h1", datapath_id="0x77",
                              availability_zone="zone-a")
    zones = json.loads(openstack(env, "availability", "zone", "list", "--network", "-f", "json"))
    assert {(z["Zone Name"], z["Zone Status"]) for z in zones} == {("zone-a", "available")}, zones
    hinted = json.loads(openstack(env, "network", "create", "cli-az", "--availability-zone-hint",
                                  "zone-a", "-f", "json"))
    assert hinted["availability_zone_hints"] == ["zone-a"]
    assert hinted["availability_zones"] == ["zone-a"]
