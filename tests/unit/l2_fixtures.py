"""A small cloud as store documents, for the l2 and reconciler unit tests.

    h1 (dpid 0xa1, uplink "up1" on physnet1) and h2 (dpid 0xa2, "up2")
    n1 vlan 101 (key 1), n2 flat (key 2)
    p1 n1 on h1, p2 n1 on h1, p3 n1 on h2, p4 n2 on h1
"""
from __future__ import annotations

from controller.app import SwitchView
from topology.store.base import Change
from topology.view import TopologyView, interface_name


def host(name, dpid, uplink):
    return {"id": name, "name": name, "datapath_id": f"{dpid:016x}",
            "physical_networks": {"physnet1": uplink}}


def network(nid, key, kind="vlan", seg=None):
    return {"id": nid, "_key": key, "name": nid, "admin_state_up": True,
            "provider:network_type": kind, "provider:physical_network": "physnet1",
            "provider:segmentation_id": seg}


def port(n, net, host_name, **extra):
    pid = f"{n:08d}-aaaa-bbbb-cccc-000000000000"
    body = {"id": pid, "_key": n, "network_id": net, "mac_address": f"fa:16:3e:00:00:{n:02x}",
            "fixed_ips": [{"subnet_id": "s", "ip_address": f"10.0.0.{n}"}],
            "allowed_address_pairs": [], "admin_state_up": True,
            "binding:host_id": host_name, "device_owner": "compute:nova",
            "port_security_enabled": True}
    body.update(extra)
    return body


def cloud_docs():
    ports = [port(1, "n1", "h1"), port(2, "n1", "h1"), port(3, "n1", "h2"), port(4, "n2", "h1")]
    return {
        "hosts": {"h1": host("h1", 0xA1, "up1"), "h2": host("h2", 0xA2, "up2")},
        "networks": {"n1": network("n1", 1, "vlan", 101), "n2": network("n2", 2, "flat")},
        "ports": {p["id"]: p for p in ports},
    }


def make_view(docs=None) -> TopologyView:
    return TopologyView(1, docs or cloud_docs())


def plugged_switch(view: TopologyView, dpid: int) -> SwitchView:
    """A switch with every port bound to its host plugged, ofports 1.., uplink last."""
    h = view.host_for_dpid(dpid)
    names = sorted(interface_name(p) for p in view.ports_on_host(h["name"]))
    ports = {n: i for i, n in enumerate(names, start=1)}
    ports[h["physical_networks"]["physnet1"]] = 100
    return SwitchView(dpid, h, ports)


def put(view: TopologyView, kind: str, body: dict) -> None:
    view.apply(Change(view.revision + 1, kind, body["id"], "put", body))


def pid(n: int) -> str:
    return f"{n:08d}-aaaa-bbbb-cccc-000000000000"
