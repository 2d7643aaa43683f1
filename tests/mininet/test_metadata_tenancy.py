"""Issue 8, hole 1, in the data plane: metadata does not cross projects.

One host, one network, two VMs read 169.254.169.254 with curl:

    a: alice's port, device_id = alice's instance   -> alice's documents
    b: bob's port,   device_id = alice's instance   -> 404 for everything

A port's device_id is whatever its owner writes (Neutron does not check it),
so bob naming alice's instance must not hand him her user data and keys.
Members cannot create instances at all (tests/api/test_tenancy.py), so no
project can take an id another project's VM will carry either; the last
test shows the id belongs to whichever project the compute service (admin)
creates it for.
"""
from __future__ import annotations

import base64

import pytest

from harness import wait_for

pytestmark = pytest.mark.mininet

MD = "http://169.254.169.254"
SECRET = b"#cloud-config\npassword: alice-only\n"


def curl(vm, path, timeout=5):
    return vm.run(["curl", "-sS", "--fail-with-body", "-m", str(timeout), MD + path],
                  timeout=timeout + 5)


def answered(vm, path="/latest/meta-data/instance-id"):
    """The metadata service answered (2xx or an HTTP error), i.e. the flows are in."""
    p = curl(vm, path, timeout=3)
    return p.returncode in (0, 22)


def add_vm(cloud, host, net, name, project, device_id):
    vm = cloud.add_vm(host, net, name, device_id=device_id, device_owner="compute:nova",
                      project_id=project)
    vm.run(["ip", "route", "replace", "169.254.169.254/32", "dev", "eth0"], check=True)
    return vm


def test_port_naming_another_projects_instance_gets_nothing(cloud):
    h1 = cloud.add_host("h1")
    net = cloud.add_network("n", cidr="10.0.8.0/24", vlan=218, shared=True)
    inst = cloud.api.create("instances", project_id="alice", hostname="alice-vm",
                            user_data=base64.b64encode(SECRET).decode(),
                            public_keys={"k": "ssh-ed25519 AAAAalice alice@test"})
    a = add_vm(cloud, h1, net, "a", "alice", inst["id"])
    b = add_vm(cloud, h1, net, "b", "bob", inst["id"])
    h1.wait_connected()
    cloud.wait_controller_synced(timeout=30)
    wait_for(lambda: answered(a) and answered(b), 20, 0.2, "both VMs to reach the metadata service")

    p = curl(a, "/latest/user-data")
    assert p.returncode == 0 and p.stdout == SECRET.decode(), (p.stdout, p.stderr)
    assert curl(a, "/latest/meta-data/instance-id").stdout == inst["id"]

    for path in ("/latest/user-data", "/latest/meta-data/instance-id",
                 "/latest/meta-data/public-keys/0/openssh-key",
                 "/openstack/latest/meta_data.json", "/openstack/latest/user_data"):
        p = curl(b, path)
        assert p.returncode == 22 and "404" in p.stdout, (path, p.returncode, p.stdout)
        assert "alice" not in p.stdout and inst["id"] not in p.stdout, (path, p.stdout)


def test_an_instance_id_serves_the_project_it_was_created_for(cloud):
    """The same device_id reads nothing while the instance is another
    project's, and its own documents once the compute service (admin)
    creates it for the port's project."""
    h1 = cloud.add_host("h1")
    net = cloud.add_network("n", cidr="10.0.9.0/24", vlan=219, shared=True)
    inst = cloud.api.create("instances", project_id="alice", hostname="taken")
    b = add_vm(cloud, h1, net, "b", "bob", inst["id"])
    h1.wait_connected()
    cloud.wait_controller_synced(timeout=30)
    wait_for(lambda: answered(b), 20, 0.2, "b to reach the metadata service")
    p = curl(b, "/latest/meta-data/hostname")
    assert p.returncode == 22 and "404" in p.stdout, (p.returncode, p.stdout)

    cloud.api.delete("instances", inst["id"])
    mine = cloud.api.create("instances", id=inst["id"], project_id="bob", hostname="bob-vm")
    assert mine["project_id"] == "bob"
    wait_for(lambda: curl(b, "/latest/meta-data/hostname").stdout == "bob-vm", 10, 0.2,
             "b to read its own instance")
