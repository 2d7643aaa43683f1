"""Issue 5 "Done when": the metadata service at 169.254.169.254 with real clients.

One cloud for the module:

    h1 ── fabric ── h2
    n1 10.0.1.0/24 vlan 211:           a (h1), b (h2), c1..c5 (h1/h2 alternating)
    n2 10.0.2.0/24 vlan 212, mtu 1400: big (h1, 60 KiB user data), lossy (h1)

Each VM is an instance (POST /v2.0/instances) whose id is its port's
device_id. VMs reach 169.254.169.254 on-link (`ip route add
169.254.169.254/32 dev eth0`): their ARP for it is answered by the metadata
app, and the controller terminates the TCP connection.

Lost packets: OVS has no random drop, and the answers leave the controller as
packet-outs straight to the VM's port, past every flow table, so a flow on
the host's bridge cannot touch them. The lossy VM is therefore wired through
a small bridge of its own: its port's interface_name names an OVS patch port
on h1's bridge, whose peer sits on the lossy bridge next to the VM's veth.
There, TCP from 169.254.169.254 toward the VM goes through an OpenFlow meter
with a low packet rate and a drop band, so bursts of answer segments are
dropped (the meter's band counter says how many) and only our retransmission
gets the rest through.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import time

import pytest

from harness import OFCTL, sh, wait_for

pytestmark = pytest.mark.mininet

MD = "http://169.254.169.254"
MTU = 1400


def make_vm(cloud, host, net, name, user_data=None, **inst):
    body = {"hostname": f"{name}-host", "meta": {"role": name},
            "public_keys": {"k": f"ssh-ed25519 AAAA{name} {name}@test"}}
    if user_data is not None:
        body["user_data"] = base64.b64encode(user_data).decode()
    body.update(inst)
    instance = cloud.api.create("instances", **body)
    vm = cloud.add_vm(host, net, name, device_id=instance["id"], device_owner="compute:nova")
    vm.instance = instance
    vm.user_data = user_data
    vm.run(["ip", "route", "replace", "169.254.169.254/32", "dev", "eth0"], check=True)
    return vm


@pytest.fixture(scope="module")
def cloud(module_cloud):
    c = module_cloud
    c.h1, c.h2 = c.add_host("h1"), c.add_host("h2")
    c.n1 = c.add_network("n1", cidr="10.0.1.0/24", vlan=211)
    c.n2 = c.add_network("n2", cidr="10.0.2.0/24", vlan=212, mtu=MTU)
    c.a = make_vm(c, c.h1, c.n1, "a", user_data=b"#cloud-config\nrole: a\n")
    c.b = make_vm(c, c.h2, c.n1, "b", user_data=b"#!/bin/sh\necho b\n")
    synced(c)
    return c


def synced(cloud):
    cloud.h1.wait_connected()
    cloud.h2.wait_connected()
    cloud.wait_controller_synced(timeout=30)


def curl(vm, path, *extra, timeout=15) -> subprocess.CompletedProcess:
    return vm.run(["curl", "-sS", "--fail-with-body", "-m", str(timeout), *extra, MD + path],
                  timeout=timeout + 5)


def curl_ok(vm, path, timeout=15) -> str:
    p = curl(vm, path, timeout=timeout)
    assert p.returncode == 0, f"{vm.name} {path}: rc={p.returncode} {p.stdout!r} {p.stderr!r}"
    return p.stdout


def wait_metadata(vm, timeout=20):
    """The VM's first read succeeds once its flows are in (convergence)."""
    wait_for(lambda: curl(vm, "/latest/meta-data/instance-id", timeout=3).returncode == 0,
             timeout, 0.2, f"{vm.name} to reach the metadata service")


def counters(cloud) -> dict:
    return cloud.status().get("counters", {})


# -- basic reads ------------------------------------------------------------------------

def test_curl_and_wget_read_identity_and_user_data(cloud):
    vm = cloud.a
    wait_metadata(vm)
    ip = vm.port["fixed_ips"][0]["ip_address"]
    assert curl_ok(vm, "/latest/meta-data/instance-id") == vm.instance["id"]
    assert curl_ok(vm, "/latest/meta-data/local-ipv4") == ip
    assert curl_ok(vm, "/latest/meta-data/hostname") == "a-host"
    assert curl_ok(vm, "/latest/user-data") == vm.user_data.decode()
    for path, want in (("/latest/meta-data/instance-id", vm.instance["id"]),
                       ("/latest/meta-data/local-ipv4", ip),
                       ("/latest/meta-data/hostname", "a-host"),
                       ("/latest/user-data", vm.user_data.decode())):
        p = vm.run(["wget", "-q", "-O", "-", "-T", "10", "-t", "1", MD + path], timeout=20)
        assert p.returncode == 0 and p.stdout == want, (path, p.returncode, p.stdout, p.stderr)
    listing = curl_ok(vm, "/latest/meta-data/").split("\n")
    assert "instance-id" in listing and "placement/" in listing
    meta = curl_ok(vm, "/openstack/latest/meta_data.json")
    assert f'"uuid": "{vm.instance["id"]}"' in meta
    p = curl(vm, "/latest/meta-data/nope")
    assert p.returncode == 22 and "404" in p.stdout


def test_vm_on_another_host_reads_its_own_data(cloud):
    a, b = cloud.a, cloud.b
    wait_metadata(b)
    assert curl_ok(b, "/latest/meta-data/instance-id") == b.instance["id"] != a.instance["id"]
    assert curl_ok(b, "/latest/meta-data/local-ipv4") == b.port["fixed_ips"][0]["ip_address"]
    assert curl_ok(b, "/latest/meta-data/hostname") == "b-host"
    assert curl_ok(b, "/latest/user-data") == b.user_data.decode()
    assert curl_ok(b, "/latest/meta-data/public-keys/0/openssh-key").startswith("ssh-ed25519 AAAAb")


def test_route_via_the_dhcp_port_as_option_121_gives_it(cloud):
    """DHCP's option 121 routes 169.254.169.254 via the network's DHCP port:
    the VM then sends to that port's MAC, and the controller still answers."""
    n3 = cloud.add_network("n3", cidr="10.0.3.0/24", vlan=213, enable_dhcp=True)
    dhcp_port = [p for p in cloud.api.list("ports", network_id=n3.id)
                 if p["device_owner"] == "network:dhcp"][0]
    vm = make_vm(cloud, cloud.h2, n3, "r")
    vm.run(["ip", "route", "replace", "169.254.169.254/32", "via",
            dhcp_port["fixed_ips"][0]["ip_address"], "dev", "eth0"], check=True)
    synced(cloud)
    wait_metadata(vm)
    assert curl_ok(vm, "/latest/meta-data/instance-id") == vm.instance["id"]
    assert curl_ok(vm, "/latest/meta-data/local-ipv4") == vm.port["fixed_ips"][0]["ip_address"]


def test_imdsv2_token(cloud):
    vm = cloud.a
    wait_metadata(vm)
    tok = vm.run(["curl", "-sS", "-m", "10", "-X", "PUT", "-H",
                  "X-aws-ec2-metadata-token-ttl-seconds: 60", MD + "/latest/api/token"]).stdout
    assert tok
    assert curl_ok(vm, "/latest/meta-data/instance-id") == vm.instance["id"]
    p = curl(vm, "/latest/meta-data/instance-id", "-H", f"X-aws-ec2-metadata-token: {tok}")
    assert p.returncode == 0 and p.stdout == vm.instance["id"]
    p = curl(vm, "/latest/meta-data/instance-id", "-H", "X-aws-ec2-metadata-token: bogus")
    assert p.returncode == 22 and "401" in p.stdout


def test_strangers_get_rst_not_silence(cloud):
    """A segment of a connection the controller never saw is answered with a RST."""
    vm = cloud.a
    wait_metadata(vm)
    script = ("import socket,sys\n"
              "s=socket.socket(); s.settimeout(5)\n"
              "s.connect(('169.254.169.254',80)); s.close(); print('ok')\n")
    assert vm.run(["python3", "-c", script], timeout=15).stdout.strip() == "ok"
    before = counters(cloud).get("metadata.tcp.rst_unknown", 0)
    raw = (
        "import socket,dpkt,sys\n"
        "mac=bytes.fromhex(sys.argv[1].replace(':',''))\n"
        "t=dpkt.tcp.TCP(sport=33333,dport=80,seq=1,ack=99,flags=0x10,win=100)\n"
        "ip=dpkt.ip.IP(src=socket.inet_aton(sys.argv[2]),dst=socket.inet_aton('169.254.169.254'),p=6,data=t)\n"
        "f=bytes(dpkt.ethernet.Ethernet(src=mac,dst=b'\\x0e\\xa9\\xfe\\xa9\\xfe\\xfe',type=0x800,data=ip))\n"
        "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(('eth0',0)); s.send(f)\n")
    cap = vm.capture("tcp and src host 169.254.169.254 and port 33333")
    time.sleep(0.5)
    vm.run([sys.executable, "-c", raw, vm.mac, vm.port["fixed_ips"][0]["ip_address"]], check=True)
    wait_for(lambda: counters(cloud).get("metadata.tcp.rst_unknown", 0) > before, 10, 0.2,
             "the controller to count the stranger")
    time.sleep(0.5)
    lines = cap.stop()
    assert any("Flags [R]" in line for line in lines), lines


# -- large user data, keep-alive, concurrency ------------------------------------------------

def test_60k_user_data_arrives_byte_exact_with_mtu_1400(cloud):
    data = os.urandom(60 * 1024)
    vm = make_vm(cloud, cloud.h1, cloud.n2, "big", user_data=data)
    vm.run(["ip", "link", "set", "eth0", "mtu", str(MTU)], check=True)
    synced(cloud)
    wait_metadata(vm)
    want = hashlib.sha256(data).hexdigest()
    for client in (["curl", "-sS", "-m", "30", MD + "/latest/user-data"],
                   ["wget", "-q", "-O", "-", "-T", "30", "-t", "1", MD + "/openstack/latest/user_data"]):
        p = vm.run(["sh", "-c", " ".join(client) + " | sha256sum"], timeout=40)
        assert p.stdout.split()[0] == want, (client, p.stdout, p.stderr)
    # the answer came in segments that fit MTU 1400 (MSS 1360)
    cap = vm.capture("tcp and src host 169.254.169.254")
    time.sleep(0.5)
    p = curl(vm, "/latest/user-data", "-o", "/dev/null", timeout=30)
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)
    lengths = [int(m.group(1)) for line in cap.stop() if (m := re.search(r"length (\d+)$", line))]
    assert lengths and max(lengths) <= MTU - 40, lengths


def test_twenty_urls_over_one_connection(cloud):
    vm = cloud.a
    wait_metadata(vm)
    paths = ["/latest/meta-data/instance-id", "/latest/meta-data/local-ipv4",
             "/latest/meta-data/hostname", "/latest/user-data"] * 5
    p = vm.run(["curl", "-sS", "-m", "60", "-w", r"\n@@%{num_connects} %{http_code}@@\n",
                *[MD + x for x in paths]], timeout=70)
    assert p.returncode == 0, p.stderr
    parts = re.findall(r"(.*?)\n@@(\d+) (\d+)@@\n", p.stdout, re.S)
    assert len(parts) == 20, p.stdout
    ip = vm.port["fixed_ips"][0]["ip_address"]
    want = {"/latest/meta-data/instance-id": vm.instance["id"], "/latest/meta-data/local-ipv4": ip,
            "/latest/meta-data/hostname": "a-host", "/latest/user-data": vm.user_data.decode()}
    for path, (body, connects, code) in zip(paths, parts):
        assert code == "200" and body == want[path], (path, body, code)
    assert sum(int(c) for _, c, _ in parts) == 1           # one TCP connection for all 20


LOOP = r"""
end=$(( $(date +%s) + {seconds} ))
while [ $(date +%s) -lt $end ]; do
  printf '%s\n' "$(curl -sS -m 5 {url} 2>&1)"
done
"""


def test_five_vms_fetch_in_parallel_loops_and_all_answers_are_right(cloud):
    vms = [make_vm(cloud, cloud.h1 if i % 2 else cloud.h2, cloud.n1, f"c{i}") for i in range(5)]
    synced(cloud)
    for vm in vms:
        wait_metadata(vm)
    procs = []
    for vm in vms:
        for _ in range(2):                                      # two loops per VM
            script = LOOP.format(seconds=10, url=MD + "/latest/meta-data/instance-id")
            procs.append((vm, vm.popen(["sh", "-c", script])))
    total = 0
    for vm, proc in procs:
        out, err = proc.communicate(timeout=40)
        lines = out.splitlines()
        assert len(lines) >= 10, (vm.name, len(lines), err)
        bad = [x for x in lines if x != vm.instance["id"]]
        assert not bad, (vm.name, bad[:5])
        total += len(lines)
    assert total >= 100


# -- lost packets ------------------------------------------------------------------------

def add_lossy_vm(cloud, user_data: bytes, rate_pps: int, burst: int):
    """A VM behind its own bridge whose meter drops answer segments above rate_pps."""
    pre = cloud.prefix
    patch_host, patch_lossy, lossy_br = f"{pre}-lph", f"{pre}-lpl", f"{pre}-lbr"
    veth = f"{pre}-lv"
    instance = cloud.api.create("instances", hostname="lossy-host",
                                user_data=base64.b64encode(user_data).decode())
    vm = cloud.add_vm(cloud.h1, cloud.n2, "lossy", plug=False, device_id=instance["id"],
                      device_owner="compute:nova",
                      **{"binding:profile": {"interface_name": patch_host}})
    vm.instance = instance
    vm.ifname = veth
    cloud._bridges.append(lossy_br)                  # torn down (and swept) with the cloud
    sh(["ovs-vsctl", "--timeout=20", "add-br", lossy_br, "--", "set", "bridge", lossy_br,
        "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
        "other-config:disable-in-band=true", *cloud._owner_ids()])
    cloud.plug(vm)                                   # veth into h1's bridge: move it
    sh(["ovs-vsctl", "--timeout=20", "del-port", cloud.h1.bridge, veth, "--",
        "add-port", lossy_br, veth, "--",
        "add-port", lossy_br, patch_lossy, "--", "set", "interface", patch_lossy, "type=patch",
        f"options:peer={patch_host}", "--",
        "add-port", cloud.h1.bridge, patch_host, "--", "set", "interface", patch_host,
        "type=patch", f"options:peer={patch_lossy}"])
    ofport = lambda name: int(sh(["ovs-vsctl", "get", "interface", name, "ofport"]).strip())
    v, p = ofport(veth), ofport(patch_lossy)
    sh(OFCTL + ["add-meter", lossy_br,
                f"meter=1,pktps,burst,band=type=drop,rate={rate_pps},burst_size={burst}"])
    sh(OFCTL + ["add-flow", lossy_br,
                f"priority=100,tcp,in_port={p},nw_src=169.254.169.254,actions=meter:1,output:{v}"])
    sh(OFCTL + ["add-flow", lossy_br, f"priority=10,in_port={p},actions=output:{v}"])
    sh(OFCTL + ["add-flow", lossy_br, f"priority=10,in_port={v},actions=output:{p}"])
    vm.run(["ip", "link", "set", "eth0", "mtu", str(MTU)], check=True)
    vm.run(["ip", "route", "replace", "169.254.169.254/32", "dev", "eth0"], check=True)
    return vm, lossy_br


def meter_drops(bridge: str) -> int:
    out = sh(OFCTL + ["meter-stats", bridge])
    m = re.search(r"band:\s*\d*:?\s*packet_count:(\d+)", out) or \
        re.search(r"0:\s*packet_count:(\d+)", out)
    assert m, out
    return int(m.group(1))


def test_answers_arrive_whole_through_retransmission_when_packets_are_lost(cloud):
    data = os.urandom(60 * 1024)
    vm, br = add_lossy_vm(cloud, data, rate_pps=30, burst=8)
    synced(cloud)
    wait_metadata(vm, timeout=30)
    before = counters(cloud)
    want = hashlib.sha256(data).hexdigest()
    for _ in range(3):
        p = vm.run(["sh", "-c", f"curl -sS -m 60 {MD}/latest/user-data | sha256sum"], timeout=70)
        assert p.stdout.split()[0] == want, (p.stdout, p.stderr)
    assert curl_ok(vm, "/latest/meta-data/instance-id", timeout=30) == vm.instance["id"]
    dropped = meter_drops(br)
    after = counters(cloud)
    resent = sum(after.get(k, 0) - before.get(k, 0)
                 for k in ("metadata.tcp.retransmit", "metadata.tcp.fast_retransmit"))
    print(f"lossy: meter dropped {dropped} answer segments, {resent} retransmissions")
    assert dropped > 0, "the meter dropped nothing: the scenario did not lose packets"
    assert resent > 0, (before, after)
