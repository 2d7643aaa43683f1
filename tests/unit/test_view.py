"""TopologyView's indexes follow the change feed: puts, moves and deletes."""
from topology.store.base import Change
from topology.view import TopologyView


def port(pid, host=None, owner="compute:nova", net="n1", iface=None):
    doc = {"id": pid, "network_id": net, "device_owner": owner, "binding:host_id": host or ""}
    if iface:
        doc["binding:profile"] = {"interface_name": iface}
    return doc


def test_port_on_host_follows_rebinding_renaming_and_delete():
    p = port("aaaaaaaaaaaa-1", host="h1")
    view = TopologyView(1, {"ports": {p["id"]: p}})
    assert view.port_on_host("h1", "tapaaaaaaaaaaa") is p
    moved = port("aaaaaaaaaaaa-1", host="h2", iface="vm-nic0")
    view.apply(Change(2, "ports", moved["id"], "put", moved))
    assert view.port_on_host("h1", "tapaaaaaaaaaaa") is None
    assert view.port_on_host("h2", "tapaaaaaaaaaaa") is None
    assert view.port_on_host("h2", "vm-nic0") is moved
    view.apply(Change(3, "ports", moved["id"], "delete", None))
    assert view.port_on_host("h2", "vm-nic0") is None


def test_dhcp_port_is_indexed_per_network():
    vm = port("vm1", host="h1")
    dhcp = port("dhcp1", owner="network:dhcp")
    view = TopologyView(1, {"ports": {"vm1": vm, "dhcp1": dhcp}})
    assert view.dhcp_port("n1") is dhcp
    assert view.dhcp_port("n2") is None
    view.apply(Change(2, "ports", "dhcp1", "delete", None))
    assert view.dhcp_port("n1") is None
    view.apply(Change(3, "ports", "dhcp2", "put", port("dhcp2", owner="network:dhcp")))
    assert view.dhcp_port("n1")["id"] == "dhcp2"


def test_switch_interface_at_stays_right_when_ports_change_underneath():
    from controller.app import SwitchView
    sw = SwitchView(dpid=1, host=None, ports_by_name={"tapa": 1, "tapb": 2})
    assert sw.interface_at(2) == "tapb"
    sw.ports_by_name["tapc"] = 2          # a replug reuses the ofport
    del sw.ports_by_name["tapb"]
    assert sw.interface_at(2) == "tapc"
    sw.ports_by_name.clear()
    assert sw.interface_at(1) is None


def test_instance_is_served_only_to_ports_of_its_own_project():
    """Issue 8, hole 1: a port's device_id naming another project's instance
    does not make that instance its own (metadata and DHCP hostname)."""
    inst = {"id": "inst-a", "project_id": "alice", "hostname": "secret"}
    mine = {"id": "p1", "network_id": "n", "device_id": "inst-a", "project_id": "alice"}
    theirs = {"id": "p2", "network_id": "n", "device_id": "inst-a", "project_id": "bob"}
    view = TopologyView(1, {"ports": {"p1": mine, "p2": theirs}, "instances": {"inst-a": inst}})
    assert view.instance_for_port(mine) is inst
    assert view.instance_for_port(theirs) is None
