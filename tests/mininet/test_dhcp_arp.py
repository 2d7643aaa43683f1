"""Issue 4 "Done when": DHCP and the ARP proxy with real clients on real OVS.

One cloud for the module, with a 60 s DHCP lease so that ISC dhclient renews
(T1 = 30 s) within the test.

    h1 ── fabric ── h2
    n1 10.0.0.0/24 vlan 201, DHCP, mtu 1400, DNS 10.0.0.53, host route
       192.168.50.0/24 via 10.0.0.254
    DHCP VMs: d1 (h1, dhclient), d2 (h1, udhcpc), p1 (h1), p2 (h2)
    n2 10.0.2.0/24 vlan 202, static addresses: a (h1), b (h2), c (h2), m (h1)

Client scripts only touch the VM's namespace: dhclient runs Debian's own
dhclient-script with /etc/resolv.conf redirected to a file of the VM (and in
a UTS namespace of its own, so a hostname it sets stays there); udhcpc runs
a script that applies every option, as cloud images' scripts do.
"""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.pipeline import table_id
from harness import OFCTL, Cloud, random_mac, sh, wait_for

pytestmark = pytest.mark.mininet

LEASE = 60
MTU = 1400
DNS = "10.0.0.53"
HOST_ROUTE = {"destination": "192.168.50.0/24", "nexthop": "10.0.0.254"}

UDHCPC_SCRIPT = r"""#!/bin/sh
# Applies every option (as CirrOS-style cloud images do) to $interface only,
# and records each event in $VMF_EVENTS.
echo "$1 ip=$ip mask=$mask router=$router dns=$dns domain=$domain mtu=$mtu hostname=$hostname lease=$lease serverid=$serverid staticroutes=$staticroutes" >> "$VMF_EVENTS"
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip addr replace "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        if [ "$2" = 0.0.0.0 ]; then ip route replace "$1" dev "$interface"
        else ip route replace "$1" via "$2" dev "$interface"; fi
        shift 2
      done
    else
      for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    fi ;;
esac
exit 0
"""

FLOODER = r"""
import socket, struct, sys, time
import dpkt
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
ip = socket.inet_aton(sys.argv[2])
duration = float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
frames = []
for i in range(64):
    a = dpkt.arp.ARP(op=1, sha=mac, spa=ip, tha=b"\0" * 6, tpa=socket.inet_aton("10.0.0.%d" % (100 + i)))
    frames.append(bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=mac, type=0x0806, data=a)))
    d = dpkt.dhcp.DHCP(op=1, xid=i, chaddr=mac + b"\0" * 10, opts=[(53, b"\x01")])
    u = dpkt.udp.UDP(sport=68, dport=67, data=bytes(d)); u.ulen = len(u)
    p = dpkt.ip.IP(src=b"\0" * 4, dst=b"\xff" * 4, p=17, data=u)
    frames.append(bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=mac, type=0x0800, data=p)))
print("flooding", flush=True)
sent, end = 0, time.time() + duration
while time.time() < end:
    for f in frames:
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
print("sent", sent, flush=True)
"""

FORGER = r"""
import socket, sys, time
import dpkt
own_mac = bytes.fromhex(sys.argv[1].replace(":", ""))
claimed_ip = socket.inet_aton(sys.argv[2])
victim_mac = bytes.fromhex(sys.argv[3].replace(":", ""))
victim_ip = socket.inet_aton(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
reply = dpkt.arp.ARP(op=2, sha=own_mac, spa=claimed_ip, tha=victim_mac, tpa=victim_ip)
garp = dpkt.arp.ARP(op=1, sha=own_mac, spa=claimed_ip, tha=b"\0" * 6, tpa=claimed_ip)
frames = [bytes(dpkt.ethernet.Ethernet(dst=victim_mac, src=own_mac, type=0x0806, data=reply)),
          bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=own_mac, type=0x0806, data=reply)),
          bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=own_mac, type=0x0806, data=garp))]
for _ in range(30):
    for f in frames:
        s.send(f)
    time.sleep(0.1)
print("forged", flush=True)
"""


# A DHCPOFFER-like reply from udp 67 (what a rogue DHCP server sends), then a
# datagram to the same address from another source port (the control).
ROGUE = r"""
import socket, sys
import dpkt
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
offer = dpkt.dhcp.DHCP(op=2, xid=0x1234, yiaddr=0x0a0000fe, chaddr=mac + b"\0" * 10,
                       opts=[(53, b"\x02"), (54, socket.inet_aton(sys.argv[2]))])
for sport in (67, int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.bind(("", sport))
    for _ in range(3):
        s.sendto(bytes(offer), ("255.255.255.255", 68))
    s.close()
print("sent", flush=True)
"""

BROADCAST = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
for _ in range(3):
    s.sendto(b"vmflow", ("255.255.255.255", int(sys.argv[1])))
"""


@pytest.fixture(scope="module")
def cloud(mininet_ready, tmp_path_factory, store_backend):
    c = Cloud.start(tmp_path_factory.mktemp("cloud"), {"dhcp": {"lease_time": LEASE}},
                    store=store_backend)
    try:
        c.h1, c.h2 = c.add_host("h1"), c.add_host("h2")
        c.n1 = c.add_network("n1", cidr="10.0.0.0/24", vlan=201, enable_dhcp=True, mtu=MTU)
        c.api.update("subnets", c.n1.subnet["id"], dns_nameservers=[DNS],
                     host_routes=[HOST_ROUTE])
        c.n2 = c.add_network("n2", cidr="10.0.2.0/24", vlan=202)
        dhcp_ports = [p for p in c.api.list("ports", network_id=c.n1.id)
                      if p["device_owner"] == "network:dhcp"]
        assert len(dhcp_ports) == 1, dhcp_ports
        c.dhcp_port = dhcp_ports[0]
        c.dhcp_ip = c.dhcp_port["fixed_ips"][0]["ip_address"]
        yield c
    finally:
        c.close()


def synced(cloud):
    cloud.h1.wait_connected()
    cloud.h2.wait_connected()
    cloud.wait_controller_synced(timeout=30)


def port_ip(vm) -> str:
    return vm.port["fixed_ips"][0]["ip_address"]


def vm_state(vm) -> dict:
    return {"addr": vm.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout,
            "route": vm.run(["ip", "-4", "route"]).stdout,
            "link": vm.run(["ip", "-o", "link", "show", "dev", "eth0"]).stdout}


def check_config(cloud, vm, state) -> None:
    ip = port_ip(vm)
    assert f"inet {ip}/24" in state["addr"], state
    assert f"mtu {MTU}" in state["link"], state
    routes = state["route"]
    assert re.search(r"^default via 10\.0\.0\.1 dev eth0", routes, re.M), routes
    assert re.search(rf"^169\.254\.169\.254 via {re.escape(cloud.dhcp_ip)} dev eth0", routes, re.M), routes
    assert re.search(r"^192\.168\.50\.0/24 via 10\.0\.0\.254 dev eth0", routes, re.M), routes


def capture_dhcp(vm):
    return vm.capture("udp port 67 or udp port 68")


def live_lines(cap) -> list[str]:
    """What a running capture has written so far (cap.lines would stop it)."""
    return cap.path.read_text(errors="replace").splitlines()


def dhclient_script(tmp_path: Path) -> tuple[Path, Path]:
    """Debian's own dhclient-script, writing the VM's resolv.conf instead of the machine's."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")
    script = tmp_path / "dhclient-script"
    script.write_text(Path("/sbin/dhclient-script").read_text()
                      .replace("/etc/resolv.conf", str(resolv)))
    script.chmod(0o755)
    return script, resolv


def start_dhclient(vm, tmp_path: Path):
    script, resolv = dhclient_script(tmp_path)
    proc = vm.popen(["unshare", "-u", "dhclient", "-d", "-v", "-lf", str(tmp_path / "leases"),
                     "-pf", str(tmp_path / "pid"), "-sf", str(script), "eth0"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, resolv


# -- dhclient -------------------------------------------------------------------------

def test_dhclient_gets_address_mask_gateway_dns_mtu_routes_and_renews(cloud, tmp_path):
    vm = cloud.add_vm(cloud.h1, cloud.n1, "d1", dhcp=True)
    synced(cloud)
    cap = capture_dhcp(vm)
    started = time.monotonic()
    proc, resolv = start_dhclient(vm, tmp_path)
    wait_for(lambda: port_ip(vm) in vm_state(vm)["addr"] or proc.poll() is not None, 20, 0.2,
             "dhclient to configure the port's address")
    assert proc.poll() is None, "dhclient exited"
    bound_after = time.monotonic() - started
    state = vm_state(vm)
    check_config(cloud, vm, state)
    text = resolv.read_text()
    assert f"nameserver {DNS}" in text and "openstacklocal" in text, text
    # Renewal: at T1 (30 s) dhclient unicasts a REQUEST to the server and gets an ACK.
    renew = rf"{re.escape(port_ip(vm))}\.68 > {re.escape(cloud.dhcp_ip)}\.67"
    wait_for(lambda: any(re.search(renew, line) for line in live_lines(cap)),
             LEASE * 0.5 + 15, 0.5, "dhclient's unicast renewal")
    # replies to the client's address: the ACK of the first REQUEST, then the renewal's
    ack = rf"{re.escape(cloud.dhcp_ip)}\.67 > {re.escape(port_ip(vm))}\.68"
    wait_for(lambda: sum(1 for line in live_lines(cap) if re.search(ack, line)) >= 3, 10, 0.2,
             "the ACK of the renewal")
    cap.stop()
    time.sleep(1)
    check_config(cloud, vm, vm_state(vm))
    assert proc.poll() is None
    assert bound_after < 10, bound_after


# -- udhcpc ---------------------------------------------------------------------------

def run_udhcpc(vm, tmp_path, *args, background=False):
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    events = tmp_path / f"events-{vm.name}"
    argv = ["env", f"VMF_EVENTS={events}", "udhcpc", "-i", "eth0", "-f", "-s", str(script),
            *args]
    if background:
        return vm.popen(argv), events
    return vm.run(argv, timeout=30), events


def test_udhcpc_gets_the_same_configuration_and_renews(cloud, tmp_path):
    vm = cloud.add_vm(cloud.h1, cloud.n1, "d2", dhcp=True)
    synced(cloud)
    proc, events = run_udhcpc(vm, tmp_path, "-t", "5", "-T", "1", background=True)
    wait_for(lambda: events.exists() and "bound" in events.read_text(), 15, 0.2,
             "udhcpc to bind")
    check_config(cloud, vm, vm_state(vm))
    bound = [line for line in events.read_text().splitlines() if line.startswith("bound")][0]
    assert f"dns={DNS}" in bound and "domain=openstacklocal" in bound, bound
    assert f"serverid={cloud.dhcp_ip}" in bound and f"lease={LEASE}" in bound, bound
    # udhcpc renews on SIGUSR1: a unicast REQUEST with ciaddr, answered by an ACK.
    cap = capture_dhcp(vm)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGUSR1)
    wait_for(lambda: "renew" in events.read_text(), 10, 0.2, "udhcpc to renew")
    lines = cap.stop()
    assert any(re.search(rf"{re.escape(port_ip(vm))}\.68 > {re.escape(cloud.dhcp_ip)}\.67", line)
               for line in lines), lines
    check_config(cloud, vm, vm_state(vm))


# -- placement ------------------------------------------------------------------------

def test_vms_on_two_hosts_get_addresses_and_unknown_mac_gets_no_offer(cloud, tmp_path):
    p1 = cloud.add_vm(cloud.h1, cloud.n1, "p1", dhcp=True)
    p2 = cloud.add_vm(cloud.h2, cloud.n1, "p2", dhcp=True)
    # Port security off, so its frames reach the services table with a MAC
    # the store does not know: the DHCP server itself must refuse it.
    x = cloud.add_vm(cloud.h2, cloud.n1, "px", dhcp=True, port_security_enabled=False)
    synced(cloud)
    x.set_mac(random_mac())
    assert p1.dhcp() == port_ip(p1)
    assert p2.dhcp() == port_ip(p2)
    before = cloud.status()["counters"].get("dhcp.unknown_client", 0)
    cap = capture_dhcp(x)
    result, events = run_udhcpc(x, tmp_path, "-n", "-q", "-t", "3", "-T", "1")
    lines = cap.stop()
    assert result.returncode != 0, result.stdout + result.stderr
    assert not any("> 255.255.255.255.68" in line or ".67 >" in line for line in lines), lines
    assert any(".68 > 255.255.255.255.67" in line for line in lines), lines   # it did ask
    wait_for(lambda: cloud.status()["counters"].get("dhcp.unknown_client", 0) > before, 5, 0.2,
             "the controller to count the unknown client")


# -- ARP ------------------------------------------------------------------------------

def test_arp_proxy_across_hosts(cloud):
    a = cloud.add_vm(cloud.h1, cloud.n2, "a", ip=cloud.free_ip(cloud.n2))
    b = cloud.add_vm(cloud.h2, cloud.n2, "b", ip=cloud.free_ip(cloud.n2))
    c = cloud.add_vm(cloud.h2, cloud.n2, "c", ip=cloud.free_ip(cloud.n2))
    synced(cloud)
    with c.capture("arp") as cap_c, b.capture("arp") as cap_b:
        time.sleep(0.5)
        r = a.run(["arping", "-c", "3", "-w", "3", "-i", "eth0", b.ip], timeout=15)
        assert r.returncode == 0, r.stdout + r.stderr
        assert b.mac.lower() in r.stdout.lower(), r.stdout
        r = a.run(["arping", "-c", "3", "-w", "3", "-i", "eth0", "10.0.2.99"], timeout=15)
        assert r.returncode != 0 and "bytes from" not in r.stdout, r.stdout
        time.sleep(0.5)
    assert not [line for line in cap_c.lines if "Request" in line], cap_c.lines
    assert not [line for line in cap_b.lines if "Request" in line], cap_b.lines
    assert a.ping(b) and a.ping(c)


def port_key(vm) -> int:
    """The port key the classify flow loads into reg6 for this VM's ofport."""
    out = sh(OFCTL + ["--no-names", "dump-flows", vm.host.bridge,
                      f"table={table_id('classify')},in_port={vm.ofport}"])
    m = re.search(r"(?:set_field:|load:)(0x[0-9a-f]+|\d+)->(?:reg6|NXM_NX_REG6\[\])", out)
    assert m, out
    return int(m.group(1), 0)


def broadcast(vm, port: int) -> None:
    r = vm.run([sys.executable, "-c", BROADCAST, str(port)], timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr


UNKNOWN_IP = "10.0.2.49"    # in n2's subnet, no port has it


def arp_requests(lines) -> list[str]:
    return [line for line in lines if "Request" in line]


def test_arp_requests_fail_closed_without_the_proxy_flow(cloud):
    """With the proxy's flow for the sender deleted from the switch, its ARP
    requests still reach no VM: a known target is answered by the switch's
    responder, an unknown one is caught by l2's low-priority services drop.
    The same capture does see the sender's UDP broadcast (control)."""
    s = cloud.add_vm(cloud.h1, cloud.n2, "fs", ip=cloud.free_ip(cloud.n2))
    t = cloud.add_vm(cloud.h1, cloud.n2, "ft", ip=cloud.free_ip(cloud.n2))
    u = cloud.add_vm(cloud.h2, cloud.n2, "fu", ip=cloud.free_ip(cloud.n2))
    synced(cloud)
    s.wait_ping(u)
    key = port_key(s)
    # The controller repairs a hand-deleted flow within milliseconds (flow
    # monitor), so it is paused while the switch runs without those flows.
    os.kill(cloud.controller.pid, signal.SIGSTOP)
    try:
        _fail_closed(cloud, s, t, u, key)
    finally:
        os.kill(cloud.controller.pid, signal.SIGCONT)


def _fail_closed(cloud, s, t, u, key):
    sh(OFCTL + ["--strict", "del-flows", s.host.bridge,
                f"table={table_id('services')},priority=100,reg6={key},arp,arp_op=1"])
    left = sh(OFCTL + ["--no-names", "dump-flows", s.host.bridge,
                       f"table={table_id('services')},reg6={key},arp"])
    # Only metadata's flow (for 169.254.169.254) still sends the port's ARP up.
    assert not [line for line in left.splitlines()
                if "CONTROLLER" in line and "169.254.169.254" not in line], left
    port = 41000 + os.getpid() % 10000
    with t.capture(f"arp or udp port {port}") as cap_t, \
            u.capture(f"arp or udp port {port}") as cap_u:
        time.sleep(0.3)
        s.arp_flush()
        r = s.run(["arping", "-c", "3", "-w", "3", "-i", "eth0", t.ip], timeout=15)
        assert r.returncode == 0 and t.mac.lower() in r.stdout.lower(), r.stdout
        r = s.run(["arping", "-c", "2", "-w", "2", "-i", "eth0", UNKNOWN_IP], timeout=15)
        assert r.returncode != 0 and "bytes from" not in r.stdout, r.stdout
        broadcast(s, port)
        time.sleep(0.5)
    for cap in (cap_t, cap_u):
        assert not arp_requests(cap.lines), cap.lines
        assert len([line for line in cap.lines if f"{s.ip}." in line and f".{port}:" in line]) == 3, \
            cap.lines
    # Control: it is l2's drop flow that stopped the unknown one. Without it
    # too, that request floods to the neighbour. (Only s lacks a proxy flow,
    # so no other VM of the module is affected until the audit restores both.)
    sh(OFCTL + ["--strict", "del-flows", s.host.bridge,
                f"table={table_id('services')},priority=10,arp,arp_op=1"])
    with t.capture("arp") as cap_t:
        time.sleep(0.3)
        s.run(["arping", "-c", "2", "-w", "2", "-i", "eth0", UNKNOWN_IP], timeout=15)
        time.sleep(0.5)
    assert [line for line in arp_requests(cap_t.lines)
            if f"who-has {UNKNOWN_IP} " in line and f"tell {s.ip}" in line], cap_t.lines


def test_gratuitous_arp_for_own_address_reaches_neighbours(cloud):
    """arping -U (request, sender == target == own address) announces the
    VM's address: its neighbours on both hosts see it; the controller does
    not swallow it."""
    g = cloud.add_vm(cloud.h1, cloud.n2, "ga", ip=cloud.free_ip(cloud.n2))
    n = cloud.add_vm(cloud.h1, cloud.n2, "gn", ip=cloud.free_ip(cloud.n2))
    r = cloud.add_vm(cloud.h2, cloud.n2, "gr", ip=cloud.free_ip(cloud.n2))
    synced(cloud)
    g.wait_ping(r)
    with n.capture("arp") as cap_n, r.capture("arp") as cap_r:
        time.sleep(0.3)
        g.run(["arping", "-U", "-c", "3", "-w", "3", "-i", "eth0", "-S", g.ip, g.ip], timeout=15)
        time.sleep(0.5)
    for cap in (cap_n, cap_r):
        announced = [line for line in arp_requests(cap.lines)
                     if re.search(rf"who-has {re.escape(g.ip)} (\(\S+\) )?tell {re.escape(g.ip)}\b",
                                  line) and g.mac in line]
        assert len(announced) == 3, cap.lines


def test_dhcp_server_packets_from_a_vm_are_dropped(cloud, tmp_path):
    """A rogue VM's DHCPOFFER (udp 67 -> 68) reaches no neighbour; its
    datagram to the same port from another source port does (control)."""
    rogue = cloud.add_vm(cloud.h1, cloud.n1, "rg", ip=cloud.free_ip(cloud.n1))
    near = cloud.add_vm(cloud.h1, cloud.n1, "rn", ip=cloud.free_ip(cloud.n1))
    far = cloud.add_vm(cloud.h2, cloud.n1, "rf", ip=cloud.free_ip(cloud.n1))
    synced(cloud)
    rogue.wait_ping(far)
    sport = 41000 + os.getpid() % 10000
    script = tmp_path / "rogue.py"
    script.write_text(ROGUE)
    with near.capture("udp") as cap_near, far.capture("udp") as cap_far:
        time.sleep(0.3)
        r = rogue.run([sys.executable, str(script), rogue.mac, rogue.ip, str(sport)], timeout=15)
        assert r.returncode == 0 and "sent" in r.stdout, r.stdout + r.stderr
        time.sleep(0.5)
    for cap in (cap_near, cap_far):
        assert not [line for line in cap.lines if f"{rogue.ip}.67 >" in line], cap.lines
        assert len([line for line in cap.lines
                    if f"{rogue.ip}.{sport} > 255.255.255.255.68" in line]) == 3, cap.lines


def neighbour(vm, ip) -> str:
    return vm.run(["ip", "neigh", "show", ip, "dev", "eth0"]).stdout


def forge(cloud, tmp_path, attacker, claimed, victim):
    script = tmp_path / "forge.py"
    script.write_text(FORGER)
    r = attacker.run([sys.executable, str(script), attacker.mac, claimed.ip, victim.mac, victim.ip],
                     timeout=30)
    assert r.returncode == 0 and "forged" in r.stdout, r.stdout + r.stderr


def test_forged_arp_replies_do_not_poison_caches(cloud, tmp_path):
    a = cloud.add_vm(cloud.h1, cloud.n2, "sa", ip=cloud.free_ip(cloud.n2))
    b = cloud.add_vm(cloud.h2, cloud.n2, "sb", ip=cloud.free_ip(cloud.n2))
    m = cloud.add_vm(cloud.h1, cloud.n2, "sm", ip=cloud.free_ip(cloud.n2))
    synced(cloud)
    # The victim accepts any ARP it gets (arp_accept), so only the network protects it.
    a.run(["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"], check=True)
    a.arp_flush()
    a.wait_ping(b)
    assert b.mac.lower() in neighbour(a, b.ip).lower()
    forge(cloud, tmp_path, m, b, a)
    time.sleep(0.5)
    entry = neighbour(a, b.ip).lower()
    assert m.mac.lower() not in entry and b.mac.lower() in entry, entry
    assert a.ping(b)
    # Control: the same forgery from a port without port security does poison,
    # so the check above would see poisoning if it happened.
    z = cloud.add_vm(cloud.h1, cloud.n2, "sz", ip=cloud.free_ip(cloud.n2), port_security_enabled=False)
    synced(cloud)
    forge(cloud, tmp_path, z, b, a)
    wait_for(lambda: z.mac.lower() in neighbour(a, b.ip).lower(), 5, 0.2,
             "the unprotected forgery to reach the victim (control)")


# -- flood ------------------------------------------------------------------------------

def test_flooding_vm_does_not_starve_another_vms_dhclient(cloud, tmp_path):
    # Its address from IPAM: a fixed one may be taken by an earlier test's port.
    flooder = cloud.add_vm(cloud.h1, cloud.n1, "f1")
    victim = cloud.add_vm(cloud.h1, cloud.n1, "f2", dhcp=True)
    synced(cloud)
    script = tmp_path / "flood.py"
    script.write_text(FLOODER)
    duration = 15
    before = cloud.status()["counters"].get("packet_in", 0)
    flood = flooder.popen([sys.executable, str(script), flooder.mac, flooder.ip, str(duration)])
    assert flood.stdout.readline().strip() == "flooding"
    time.sleep(2)
    started = time.monotonic()
    proc, _ = start_dhclient(victim, tmp_path)
    wait_for(lambda: port_ip(victim) in vm_state(victim)["addr"] or proc.poll() is not None,
             5, 0.1, "dhclient to get its address within 5 s while another VM floods")
    elapsed = time.monotonic() - started
    assert proc.poll() is None, "dhclient exited"
    assert flood.poll() is None, "the flooder stopped before dhclient finished"
    out, _ = flood.communicate(timeout=duration + 10)
    sent = int(re.search(r"sent (\d+)", out).group(1))
    time.sleep(1.5)    # the status file is rewritten periodically
    packet_ins = cloud.status()["counters"].get("packet_in", 0) - before
    # The flooder's meter lets through about controller_rate_pps (200/s) plus a burst.
    assert packet_ins < 200 * (duration + 3) + 1000, (packet_ins, sent)
    assert sent > 3 * packet_ins, (packet_ins, sent)
    print(f"flood: {sent} frames sent in {duration} s, {packet_ins} packet-ins; "
          f"dhclient bound in {elapsed:.2f} s")


# -- metadata through the DHCP routes ---------------------------------------------------

def test_metadata_is_reachable_through_the_dhcp_route(cloud, tmp_path):
    """169.254.169.254/32 via the DHCP port's address (option 121) reaches the
    controller's metadata service: the ARP proxy resolves the next hop."""
    vm = cloud.add_vm(cloud.h1, cloud.n1, "md", dhcp=True)
    synced(cloud)
    assert vm.dhcp() == port_ip(vm)
    run_udhcpc(vm, tmp_path, "-n", "-q", "-t", "3", "-T", "1")
    assert re.search(rf"^169\.254\.169\.254 via {re.escape(cloud.dhcp_ip)}",
                     vm.run(["ip", "-4", "route"]).stdout, re.M)
    # The port has no instance document, so the service answers 404: what
    # matters here is that an HTTP answer comes back over the route.
    r = vm.run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                "http://169.254.169.254/latest/meta-data/"], timeout=15)
    assert r.returncode == 0 and r.stdout.strip() in ("200", "404"), r.stdout + r.stderr
    neigh = vm.run(["ip", "neigh", "show", cloud.dhcp_ip]).stdout.lower()
    assert cloud.dhcp_port["mac_address"].lower() in neigh, neigh
