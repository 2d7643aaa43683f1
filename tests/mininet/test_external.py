"""Issue 11 "Done when", the data plane: floating IPs and port forwarding on
real Open vSwitch.

    c1, c2 compute, c3 gateway ── fabric ── inet (203.0.113.1, the external
    subnet's gateway, also 198.51.100.1 behind it), peer (203.0.113.100)
    ext 203.0.113.0/24 vlan 300 (router:external), n 10.81.1.0/24 vlan 181
    router r: interface on n, gateway on ext
    a 10.81.1.11 (c1), b 10.81.1.12 (c2), group "fip": in icmp, in tcp 5001, in tcp 22

Floating IPs, port forwardings and the router gateway go through the REST
API (ExtStore below); each host's external_mac is the one the API allocated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import pytest
from harness import Cloud, Host, Network, Vm, parse_ping, wait_for
from test_secgroup import add_rule, group

from topology.store import open_store

# Run on SQLite and on etcd (tests/conftest.py, both_stores).
pytestmark = [pytest.mark.mininet, pytest.mark.both_stores]
CONVERGE = 15.0
EXT_CIDR = "203.0.113.0/24"
BEYOND = "198.51.100.1"
EXT_MACS: dict[str, str] = {}       # host name -> external_mac, from the API
GATEWAY_IP = "203.0.113.2"


class ExtStore:
    """Issue 11's resources through the REST API (topology/api/kinds), and the
    store for what only the controller writes (mac_bindings) and for reads."""

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.api = cloud.api
        self.store = open_store(cloud.store_url)

    def get(self, kind: str, id: str) -> Optional[dict]:
        with self.store.read() as r:
            return r.get(kind, id)

    def host(self, host: Host, **fields) -> dict:
        return self.api.update("hosts", host.doc["id"], **fields)

    def external_mac(self, host: Host) -> str:
        return self.api.show("hosts", host.doc["id"])["external_mac"]

    def gateway(self, router: dict, ext: Network, ip: str) -> dict:
        return self.api.update("routers", router["id"], external_gateway_info={
            "network_id": ext.id, "enable_snat": True,
            "external_fixed_ips": [{"subnet_id": ext.subnet["id"], "ip_address": ip}]})

    def fip(self, ext: Network, address: str, router: dict, vm: Optional[Vm] = None,
            fixed_ip: Optional[str] = None) -> dict:
        body = {"floating_network_id": ext.id, "floating_ip_address": address}
        if vm is not None:
            body.update(port_id=vm.port["id"], fixed_ip_address=fixed_ip or vm.ip)
        return self.api.create("floatingips", **body)

    def bind(self, fip: dict, vm: Optional[Vm], fixed_ip: Optional[str] = None) -> dict:
        if vm is None:
            return self.api.update("floatingips", fip["id"], port_id=None)
        return self.api.update("floatingips", fip["id"], port_id=vm.port["id"],
                               fixed_ip_address=fixed_ip or vm.ip)

    def port_forwarding(self, fip: dict, vm: Vm, protocol: str, external: int, internal: int) -> dict:
        return self.api.request(
            "POST", f"/v2.0/floatingips/{fip['id']}/port_forwardings",
            {"port_forwarding": {"protocol": protocol, "internal_port_id": vm.port["id"],
                                 "internal_ip_address": vm.ip, "internal_port": internal,
                                 "external_port": external}})["port_forwarding"]

    def delete_port_forwarding(self, fip: dict, pf: dict) -> None:
        self.api.request("DELETE", f"/v2.0/floatingips/{fip['id']}/port_forwardings/{pf['id']}")

    def delete(self, kind: str, id: str) -> None:
        self.api.delete(kind, id)

    def status(self, fip: dict) -> str:
        return self.api.show("floatingips", fip["id"])["status"]


@dataclass
class Topo:
    cloud: Cloud
    store: ExtStore
    c1: Host
    c2: Host
    c3: Host
    c4: Host
    ext: Network
    n: Network
    router: dict
    a: Vm
    b: Vm
    inet: Vm
    peer: Vm


@pytest.fixture(scope="module")
def topo(module_cloud) -> Topo:
    return build(module_cloud)


def build(cloud: Cloud) -> Topo:
    """The topology of the module doc on a started cloud (bench/external.py uses it too)."""
    c1, c2, c3 = cloud.add_host("c1"), cloud.add_host("c2"), cloud.add_host("c3")
    c4 = cloud.add_host("c4")
    for h in (c3, c4):
        cloud.api.update("hosts", h.doc["id"], is_gateway=True)
    store = ExtStore(cloud)
    for h in (c1, c2, c3, c4):
        EXT_MACS[h.name] = store.external_mac(h)
    ext = cloud.add_network("ext", cidr=EXT_CIDR, vlan=300, **{"router:external": True})
    n = cloud.add_network("n", cidr="10.81.1.0/24", vlan=181)
    router = cloud.api.create("routers", name="r")
    cloud.api.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
                      {"subnet_id": n.subnet["id"]})
    store.gateway(router, ext, GATEWAY_IP)
    sg = group(cloud, "fip", "in:allow icmp", "in:allow tcp 5001", "in:allow tcp 22")
    a = cloud.add_vm(c1, n, "a", ip="10.81.1.11", security_groups=[sg["id"]])
    b = cloud.add_vm(c2, n, "b", ip="10.81.1.12", security_groups=[sg["id"]])
    inet = cloud.add_external("inet", "203.0.113.1", vlan=300)
    inet.cmd(f"ip addr add {BEYOND}/32 dev lo")
    peer = cloud.add_external("peer", "203.0.113.100", vlan=300)
    for h in (c1, c2, c3, c4):
        h.wait_connected()
    a.wait_ping(b, CONVERGE)
    return Topo(cloud, store, c1, c2, c3, c4, ext, n, router, a, b, inet, peer)


def wait_status(t: Topo, fip: dict, status: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    wait_for(lambda: t.store.status(fip) == status, timeout, 0.05,
             lambda: f"floating IP status {status}, is {t.store.status(fip)}")
    return time.monotonic() - t0


def neigh_mac(vm: Vm, ip: str) -> str:
    out = vm.cmd(f"ip neigh show {ip}").split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


@pytest.fixture
def fip_a(topo):
    fip = topo.store.fip(topo.ext, "203.0.113.10", topo.router, topo.a)
    yield fip
    topo.store.delete("floatingips", fip["id"])


def test_outside_reaches_the_vm_which_sees_the_true_source(topo, fip_a):
    t = topo
    wait_status(t, fip_a, "ACTIVE")
    t.peer.wait_ping("203.0.113.10", CONVERGE)
    with t.a.capture("icmp") as cap:
        assert t.peer.ping("203.0.113.10", count=3)
    assert any("203.0.113.100 > 10.81.1.11" in l and "echo request" in l for l in cap.lines), cap.lines
    assert neigh_mac(t.peer, "203.0.113.10") == EXT_MACS["c1"]
    # TCP in through the floating IP, and the ingress firewall still applies
    t.a.tcp_server(5001)
    assert t.peer.tcp_check("203.0.113.10", 5001, timeout=10)
    t.a.tcp_server(5002)
    assert not t.peer.tcp_check("203.0.113.10", 5002, size=1000, timeout=2)


def test_only_the_vm_host_answers_arp_for_the_floating_ip(topo, fip_a):
    t = topo
    wait_status(t, fip_a, "ACTIVE")
    t.peer.cmd("ip neigh flush dev eth0")
    with t.cloud.capture_fabric(t.c2, "arp") as c2cap, t.cloud.capture_fabric(t.c3, "arp") as c3cap, \
            t.cloud.capture_fabric(t.c1, "arp") as c1cap:
        t.peer.wait_ping("203.0.113.10", CONVERGE)
    replies = [l for l in c1cap.lines if "is-at" in l and "203.0.113.10" in l]
    assert replies and all(EXT_MACS["c1"] in l for l in replies), c1cap.lines
    for cap in (c2cap, c3cap):
        assert not [l for l in cap.lines if "is-at" in l and f"{EXT_MACS['c2']}" in l]
        assert not [l for l in cap.lines if "is-at" in l and f"{EXT_MACS['c3']}" in l]


def test_the_vm_reaches_outside_with_the_floating_ip_as_source(topo, fip_a):
    t = topo
    wait_status(t, fip_a, "ACTIVE")
    with t.peer.capture("icmp") as cap:
        t.a.wait_ping(t.peer.ip, CONVERGE)       # the first ones resolve the peer's MAC
        assert t.a.ping(t.peer.ip, count=3)
    assert any("203.0.113.10 > 203.0.113.100" in l and "echo request" in l for l in cap.lines), cap.lines
    assert not any("10.81.1.11" in l for l in cap.lines), cap.lines
    # beyond the external subnet: through its gateway_ip's MAC
    with t.inet.capture("icmp") as cap:
        t.a.wait_ping(BEYOND, CONVERGE)
    assert any(f"203.0.113.10 > {BEYOND}" in l for l in cap.lines), cap.lines
    assert t.store.get("mac_bindings", f"{t.ext.id}_203.0.113.1")["mac_address"] == t.inet.mac


def test_two_floating_ips_on_one_nic(topo):
    t = topo
    vm = t.cloud.add_vm(t.c1, t.n, "two", ip="10.81.1.21", security_groups=[],
                        port_security_enabled=False,
                        fixed_ips=[{"subnet_id": t.n.subnet["id"], "ip_address": "10.81.1.21"},
                                   {"subnet_id": t.n.subnet["id"], "ip_address": "10.81.1.22"}])
    vm.cmd("ip addr add 10.81.1.22/24 dev eth0")
    f1 = t.store.fip(t.ext, "203.0.113.21", t.router, vm, "10.81.1.21")
    f2 = t.store.fip(t.ext, "203.0.113.22", t.router, vm, "10.81.1.22")
    try:
        wait_status(t, f1, "ACTIVE")
        wait_status(t, f2, "ACTIVE")
        t.peer.wait_ping("203.0.113.21", CONVERGE)
        t.peer.wait_ping("203.0.113.22", CONVERGE)
        with vm.capture("icmp") as cap:
            assert t.peer.ping("203.0.113.21") and t.peer.ping("203.0.113.22")
        assert any("> 10.81.1.21" in l for l in cap.lines) and \
            any("> 10.81.1.22" in l for l in cap.lines), cap.lines
    finally:
        t.store.delete("floatingips", f1["id"])
        t.store.delete("floatingips", f2["id"])


def test_status_down_active_down(topo):
    t = topo
    fip = t.store.fip(t.ext, "203.0.113.30", t.router)
    try:
        time.sleep(0.5)
        assert t.store.status(fip) == "DOWN"
        t.store.bind(fip, t.a)
        took = wait_status(t, fip, "ACTIVE")
        t.peer.wait_ping("203.0.113.30", CONVERGE)
        t.store.bind(fip, None)
        time.sleep(1.0)
        assert t.store.status(fip) == "DOWN"
        t.peer.cmd("ip neigh flush dev eth0")
        assert t.peer.no_ping("203.0.113.30")
        print(f"\nfloating IP bind -> ACTIVE: {took:.2f} s")
    finally:
        t.store.delete("floatingips", fip["id"])


def test_moving_a_floating_ip_announces_it_and_works_within_a_second(topo, fip_a):
    t = topo
    wait_status(t, fip_a, "ACTIVE")
    t.peer.wait_ping("203.0.113.10", CONVERGE)
    assert neigh_mac(t.peer, "203.0.113.10") == EXT_MACS["c1"]     # warm
    with t.cloud.capture_fabric(t.c2, "arp") as cap, t.peer.capture("arp") as peer_cap:
        t_api = time.monotonic()
        t.store.bind(fip_a, t.b)
        # The clock starts when the API has answered (it has then written the
        # store): what follows is the controller's and the switches' part.
        t0 = time.monotonic()
        # The new VM answers: the outside's cache has c2's MAC (the gratuitous
        # ARP) and a ping through it comes back (c1 no longer answers there).
        wait_for(lambda: neigh_mac(t.peer, "203.0.113.10") == EXT_MACS["c2"]
                 and t.peer.ping("203.0.113.10", timeout=0.1), 5, 0.0,
                 "the moved floating IP to answer from c2")
        took = time.monotonic() - t0
        time.sleep(0.5)     # tcpdump writes what it saw (a loaded machine is slow at it)
    # c2's trunk and the outside host's NIC both hang off the fabric; on a
    # loaded machine one tcpdump now and then sees nothing, so either will do.
    garps = [l for l in cap.lines + peer_cap.lines
             if f"{EXT_MACS['c2']} > ff:ff:ff:ff:ff:ff" in l
             and "who-has 203.0.113.10 tell 203.0.113.10" in l]
    assert garps, (cap.lines, peer_cap.lines)
    assert neigh_mac(t.peer, "203.0.113.10") == EXT_MACS["c2"]
    with t.b.capture("icmp") as bcap:
        assert t.peer.ping("203.0.113.10")
    assert any("203.0.113.100 > 10.81.1.12" in l for l in bcap.lines), bcap.lines
    print(f"\nfloating IP move: API {t0 - t_api:.2f} s, then first reply from the new VM "
          f"{took:.2f} s")
    assert took < 1.0, took


def test_port_forwarding_2222_to_22(topo):
    t = topo
    fip = t.store.fip(t.ext, "203.0.113.40", t.router)
    pf = t.store.port_forwarding(fip, t.a, "tcp", 2222, 22)
    try:
        t.a.tcp_server(22)
        wait_for(lambda: t.peer.tcp_check("203.0.113.40", 2222, size=1000, timeout=1), CONVERGE,
                 0.2, "the port forwarding")
        assert t.peer.tcp_check("203.0.113.40", 2222, size=300_000)
        assert not t.peer.tcp_check("203.0.113.40", 22, size=1000, timeout=2)
        assert t.peer.no_ping("203.0.113.40")
    finally:
        t.store.delete_port_forwarding(fip, pf)
        t.store.delete("floatingips", fip["id"])


def udp_ask(client: Vm, address: str, port: int, timeout: float = 1.0) -> str:
    """One datagram to address:port from socat, whose connected socket takes a
    reply only from that address and port: the answer, or "" if none came."""
    p = client.run(["socat", "-T", str(timeout), "-", f"UDP4:{address}:{port}"],
                   timeout=timeout + 10, input_text="ask\n")
    return p.stdout.strip()


def test_udp_port_forwarding_of_a_range(topo):
    """external_port_range 6000:6003 onto internal_port_range 7000:7003 of b,
    UDP: each outside port reaches its own inside port, the answer comes back
    from the floating IP and the outside port asked, and a port just past the
    range reaches nothing."""
    t = topo
    fip = t.store.fip(t.ext, "203.0.113.41", t.router)
    pf = t.store.api.request(
        "POST", f"/v2.0/floatingips/{fip['id']}/port_forwardings",
        {"port_forwarding": {"protocol": "udp", "internal_port_id": t.b.port["id"],
                             "internal_ip_address": t.b.ip,
                             "internal_port_range": "7000:7003",
                             "external_port_range": "6000:6003"}})["port_forwarding"]
    sg = t.b.port["security_groups"][0]
    rule = add_rule(t.cloud, {"id": sg}, "in:allow udp 7000-7004")
    servers = [t.b.popen(["socat", f"UDP4-RECVFROM:{port},fork", f"SYSTEM:echo inside-{port}"])
               for port in range(7000, 7005)]
    try:
        for offset in range(4):
            # Each a new connection through conntrack; a loaded machine may
            # take longer than one datagram's second for the first.
            wait_for(lambda: udp_ask(t.peer, "203.0.113.41", 6000 + offset)
                     == f"inside-{7000 + offset}", CONVERGE, 0.2,
                     f"UDP to 6000+{offset} to reach inside port {7000 + offset}")
        assert udp_ask(t.peer, "203.0.113.41", 6004) == ""
        # The inside ports themselves are not open from outside.
        assert udp_ask(t.peer, "203.0.113.41", 7001) == ""
    finally:
        for server in servers:
            server.kill()
            server.wait()
        t.cloud.api.delete("security_group_rules", rule["id"])
        t.store.delete_port_forwarding(fip, pf)
        t.store.delete("floatingips", fip["id"])


def test_controller_restart_keeps_natted_connections_and_sends_nothing(topo, fip_a):
    t = topo
    wait_status(t, fip_a, "ACTIVE")
    t.peer.wait_ping("203.0.113.10", CONVERGE)
    t.a.wait_ping(t.peer.ip, CONVERGE)
    t.b.wait_ping(t.peer.ip, CONVERGE)
    hosts = [t.c1, t.c2, t.c3, t.c4]
    before = t.cloud.wait_flows_stable(hosts)
    monitors = {h.name: t.cloud.flow_monitor(h) for h in hosts}
    inbound = t.peer.popen(["ping", "-n", "-q", "-i", "0.1", "-c", "60", "-W", "2", "203.0.113.10"])
    outbound = t.a.popen(["ping", "-n", "-q", "-i", "0.1", "-c", "60", "-W", "2", t.peer.ip])
    snatted = t.b.popen(["ping", "-n", "-q", "-i", "0.1", "-c", "60", "-W", "2", t.peer.ip])
    time.sleep(1.0)
    t.cloud.controller.kill()
    time.sleep(0.5)
    t_start = time.time()
    t.cloud.controller.start()
    t.cloud.wait_controller_synced(hosts, timeout=20, since=t_start)
    mods = {h.name: t.cloud.switch_status(h)["flow_mods"] for h in hosts}
    results = [parse_ping(p.communicate(timeout=30)[0]) for p in (inbound, outbound, snatted)]
    seen = {name: m.changes() for name, m in monitors.items()}
    assert results == [(60, 60)] * 3, results
    assert mods == {h.name: 0 for h in hosts}, mods
    assert seen == {h.name: [] for h in hosts}, seen
    assert {h.bridge: h.flows() for h in hosts} == before


# -- centralized SNAT ---------------------------------------------------------------
def snat_host_doc_name(t: Topo) -> Optional[str]:
    from topology.placement import snat_host
    router = t.store.get("routers", t.router["id"])
    hosts = [t.store.get("hosts", h.doc["id"]) for h in (t.c1, t.c2, t.c3, t.c4)]
    hid = snat_host(router, [h for h in hosts if h is not None])
    return {h.doc["id"]: h.name for h in (t.c1, t.c2, t.c3, t.c4)}.get(hid)


def test_snat_reaches_outside_as_the_gateway_address_and_nothing_comes_in(topo):
    t = topo
    t.peer.tcp_server(5001)
    with t.peer.capture("icmp or tcp port 5001") as cap:
        t.b.wait_ping(t.peer.ip, CONVERGE)
        assert t.b.ping(t.peer.ip, count=3)
        assert t.b.tcp_check(t.peer, 5001, size=300_000)
    assert any(f"{GATEWAY_IP} > 203.0.113.100" in l and "echo request" in l for l in cap.lines), cap.lines
    assert any(f"{GATEWAY_IP}." in l and "203.0.113.100.5001" in l for l in cap.lines), cap.lines
    assert not any("10.81.1.12" in l for l in cap.lines), cap.lines
    # the SNAT host carried it, and the outside cannot start anything in
    host = snat_host_doc_name(t)
    assert host in ("c3", "c4")
    assert t.cloud.status()["snat"]["routers"][t.router["id"]] == host
    assert t.peer.no_ping(GATEWAY_IP)
    t.peer.cmd(f"ip route replace 10.81.1.0/24 via {GATEWAY_IP}")
    try:
        assert t.peer.no_ping(t.b.ip)
        t.b.tcp_server(5001)
        assert not t.peer.tcp_check(t.b.ip, 5001, size=1000, timeout=2)
    finally:
        t.peer.cmd("ip route del 10.81.1.0/24")


def test_snat_moves_when_its_host_goes_down_within_5_s(topo):
    t = topo
    t.b.wait_ping(t.peer.ip, CONVERGE)
    first = snat_host_doc_name(t)
    host = {"c3": t.c3, "c4": t.c4}[first]
    t0 = time.monotonic()
    t.store.host(host, admin_state_up=False)
    try:
        wait_for(lambda: snat_host_doc_name(t) not in (None, first), 5, 0.05, "placement to move")
        wait_for(lambda: t.b.ping(t.peer.ip, timeout=0.3), 10, 0.0, "SNAT through the other host")
        took = time.monotonic() - t0
        with t.cloud.capture_fabric({"c3": t.c4, "c4": t.c3}[first], "icmp") as cap:
            t.b.wait_ping(t.peer.ip, CONVERGE)
        assert any(GATEWAY_IP in l for l in cap.lines), cap.lines
        print(f"\nSNAT host down -> new connection through the other: {took:.2f} s")
        assert took < 5.0, took
        # no gateway host at all: named in vmflow status, not a silent black hole
        other = {"c3": t.c4, "c4": t.c3}[first]
        t.store.host(other, admin_state_up=False)
        try:
            wait_for(lambda: t.cloud.status()["snat"]["no_gateway_host"] == [t.router["id"]], 5,
                     0.1, "the router to be reported without a gateway host")
            assert t.b.no_ping(t.peer.ip)
        finally:
            t.store.host(other, admin_state_up=True)
    finally:
        t.store.host(host, admin_state_up=True)
    t.b.wait_ping(t.peer.ip, CONVERGE)


# -- MTU ---------------------------------------------------------------------------
def test_too_big_from_outside_gets_fragmentation_needed(topo):
    t = topo
    small = t.cloud.add_network("small", cidr="10.81.9.0/24", vlan=189, mtu=1400)
    t.cloud.api.request("PUT", f"/v2.0/routers/{t.router['id']}/add_router_interface",
                        {"subnet_id": small.subnet["id"]})
    vm = t.cloud.add_vm(t.c1, small, "small1", ip="10.81.9.11", port_security_enabled=False,
                        security_groups=[])
    fip = t.store.fip(t.ext, "203.0.113.50", t.router, vm)
    try:
        wait_status(t, fip, "ACTIVE")
        t.peer.wait_ping("203.0.113.50", CONVERGE)
        t.peer.cmd("ip route flush cache")
        # 1,500 bytes of IPv4 with DF set, toward an MTU-1400 network
        out = t.peer.run(["ping", "-n", "-c", "2", "-i", "0.3", "-W", "1", "-M", "do",
                          "-s", "1472", "203.0.113.50"], timeout=15).stdout
        assert "mtu = 1400" in out or "mtu=1400" in out, out
        assert "1400" in t.peer.cmd("ip route get 203.0.113.50"), t.peer.cmd("ip route get 203.0.113.50")
        # what fits still arrives
        assert t.peer.ping("203.0.113.50")
        out = t.peer.run(["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1372",
                          "203.0.113.50"], timeout=15)
        assert out.returncode == 0, out.stdout
    finally:
        t.store.delete("floatingips", fip["id"])


# Last in the module: it deletes and re-registers a gateway host.
def test_snat_moves_when_its_host_is_deleted_within_5_s(topo):
    t = topo
    t.b.wait_ping(t.peer.ip, CONVERGE)
    first = snat_host_doc_name(t)
    host, other = {"c3": (t.c3, t.c4), "c4": (t.c4, t.c3)}[first]
    t0 = time.monotonic()
    t.store.delete("hosts", host.doc["id"])
    try:
        assert snat_host_doc_name(t) == other.name
        wait_for(lambda: t.cloud.status()["snat"]["routers"].get(t.router["id"]) == other.name,
                 5, 0.05, "the controller to place SNAT on the other host")
        wait_for(lambda: t.b.ping(t.peer.ip, timeout=0.3), 10, 0.0, "SNAT through the other host")
        took = time.monotonic() - t0
        with t.cloud.capture_fabric(other, "icmp") as cap:
            t.b.wait_ping(t.peer.ip, CONVERGE)
        assert any(GATEWAY_IP in l for l in cap.lines), cap.lines
        print(f"\nSNAT host deleted -> new connection through the other: {took:.2f} s")
        assert took < 5.0, took
    finally:
        host.register()
        t.store.host(host, is_gateway=True)
    host.wait_connected()
    t.b.wait_ping(t.peer.ip, CONVERGE)
