"""Port status on real OVS, as Terraform and Nova wait for it: DOWN until the
VM's interface is plugged and its flows are installed, ACTIVE within a
second after, DOWN again when it is unplugged or its host goes away."""
from __future__ import annotations

import time

import pytest
from harness import sh, wait_for

pytestmark = pytest.mark.mininet


def status(cloud, vm) -> str:
    return cloud.api.show("ports", vm.port["id"])["status"]


def test_port_goes_active_when_plugged_and_down_when_unplugged(cloud):
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    other = cloud.add_vm(h2, net, "other")
    vm = cloud.add_vm(h1, net, "vm", plug=False)
    cloud.wait_controller_synced([h1, h2])
    assert status(cloud, vm) == "DOWN"
    plugged = time.monotonic()
    cloud.plug(vm)
    wait_for(lambda: status(cloud, vm) == "ACTIVE", 5, 0.05, "the port to go ACTIVE")
    took = time.monotonic() - plugged
    assert took < 1.0, f"DOWN -> ACTIVE took {took:.2f} s"
    vm.wait_ping(other, 5)                       # ACTIVE means it carries traffic
    wait_for(lambda: status(cloud, other) == "ACTIVE", 2, 0.05, "the other port ACTIVE")

    vm.unplug()
    wait_for(lambda: status(cloud, vm) == "DOWN", 3, 0.05, "the unplugged port to go DOWN")

    # the host's switch leaves the controller: its ports are DOWN
    sh(["ovs-vsctl", "--timeout=10", "del-controller", h2.bridge])
    wait_for(lambda: status(cloud, other) == "DOWN", 5, 0.05,
             "a disconnected host's port to go DOWN")
    cloud.connect(h2)
    wait_for(lambda: status(cloud, other) == "ACTIVE", 10, 0.1,
             "the port ACTIVE again once its host is back")
