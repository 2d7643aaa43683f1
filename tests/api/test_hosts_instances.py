"""vmflow's own resources: hosts and instances."""
from __future__ import annotations

import base64
import uuid

from apihelpers import error


def test_host_lifecycle_and_uniqueness(client):
    name = f"compute-{uuid.uuid4().hex[:6]}"
    dpid = uuid.uuid4().int & 0xFFFFFFFF
    h = client.create("hosts", "host", name=name, datapath_id=f"0x{dpid:x}",
                      physical_networks={"physnet1": "c1-uplink"})
    assert h["datapath_id"] == f"{dpid:016x}"
    assert h["dvr_mac"].startswith("fa:16:3f:") and h["is_gateway"] is False
    for body, type_ in (({"name": name, "datapath_id": dpid + 1}, "HostNameInUse"),
                        ({"name": name + "x", "datapath_id": dpid}, "HostDatapathIdInUse"),
                        ({"name": name + "y", "datapath_id": dpid + 2, "dvr_mac": h["dvr_mac"]},
                         "DVRMacAddressInUse")):
        r = client.call("POST", "/hosts", {"host": body})
        assert r.status_code == 409 and error(r)["type"] == type_
    r = client.call("PUT", f"/hosts/{h['id']}", {"host": {"datapath_id": dpid + 3, "is_gateway": True}})
    assert r.status_code == 200 and r.json()["host"]["datapath_id"] == f"{dpid + 3:016x}"
    # the old datapath id is free again, the new one is taken
    other = client.create("hosts", "host", name=name + "z", datapath_id=dpid)
    r = client.call("POST", "/hosts", {"host": {"name": name + "w", "datapath_id": dpid + 3}})
    assert r.status_code == 409
    r = client.call("PUT", f"/hosts/{h['id']}", {"host": {"dvr_mac": "fa:16:3f:00:00:01"}})
    assert r.status_code == 400 and "dvr_mac" in error(r)["message"]
    for x in (h, other):
        assert client.call("DELETE", f"/hosts/{x['id']}").status_code == 204
    assert client.create("hosts", "host", name=name, datapath_id=dpid)["name"] == name


def test_host_pins_its_switch_certificate(client):
    dpid = uuid.uuid4().int & 0xFFFFFFFF
    h = client.create("hosts", "host", name=f"pin-{uuid.uuid4().hex[:6]}", datapath_id=dpid)
    assert h["switch_cert_sha256"] is None
    pin = ":".join(["0A"] * 32)
    r = client.call("PUT", f"/hosts/{h['id']}", {"host": {"switch_cert_sha256": "0a" * 32}})
    assert r.status_code == 200 and r.json()["host"]["switch_cert_sha256"] == pin
    r = client.call("PUT", f"/hosts/{h['id']}", {"host": {"switch_cert_sha256": "0a" * 20}})
    assert r.status_code == 400 and "switch_cert_sha256" in error(r)["message"]
    assert client.call("GET", f"/hosts/{h['id']}").json()["host"]["switch_cert_sha256"] == pin
    assert client.call("DELETE", f"/hosts/{h['id']}").status_code == 204


def test_instance_lifecycle(client):
    vm = str(uuid.uuid4())
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    inst = client.create("instances", "instance", id=vm, hostname="vm1", user_data=user_data,
                         meta={"role": "web"}, public_keys={"default": "ssh-ed25519 AAAA k"},
                         availability_zone="az1")
    assert inst["id"] == vm and inst["meta"] == {"role": "web"}
    r = client.call("POST", "/instances", {"instance": {"id": vm}})
    assert r.status_code == 409
    r = client.call("PUT", f"/instances/{vm}", {"instance": {"meta": {"role": "db"}, "hostname": "vm-1"}})
    assert r.json()["instance"]["meta"] == {"role": "db"}
    assert client.call("GET", f"/instances/{vm}").json()["instance"]["hostname"] == "vm-1"
    generated = client.create("instances", "instance")
    assert generated["hostname"] == f"instance-{generated['id'][:8]}"
    for x in (vm, generated["id"]):
        assert client.call("DELETE", f"/instances/{x}").status_code == 204
