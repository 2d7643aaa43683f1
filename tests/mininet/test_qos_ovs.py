"""QoS on real OVS: iperf3 through egress and ingress bandwidth meters, a
DSCP mark seen by tcpdump on the receiver, a rate change that is a meter-mod
and no flow-mod, and /metrics scraped with curl.

Not covered here (issue 16 item 5): Open vSwitch's flow-preserving restart
(ovs-ctl restart, through ovs-save) restores flows but not meters, and OVS
refuses a restored flow whose meter instruction names a missing meter, so a
bridge with QoS flows comes back without flows until the controller
reconnects and writes meters and flows again.
"""
from __future__ import annotations

import json
import re
import sys
import time

import pytest
from harness import free_port, sh, wait_for

pytestmark = pytest.mark.mininet

LIMIT_KBPS = 10_000
SECONDS = 5


def qos_policy(cloud, name, **rules) -> dict:
    pol = cloud.api.request("POST", "/v2.0/qos/policies", {"policy": {"name": name}})["policy"]
    for kind, body in rules.items():
        cloud.api.request("POST", f"/v2.0/qos/policies/{pol['id']}/{kind}", {kind[:-1]: body})
    return pol


def iperf_mbps(client, server, port: int, reverse: bool = False) -> float:
    """TCP throughput client -> server (server -> client with reverse), Mbit/s
    as the receiver counted it."""
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port)])
    time.sleep(0.5)
    args = ["iperf3", "-c", server.ip, "-p", str(port), "-t", str(SECONDS), "-J", "-O", "1"]
    if reverse:
        args.append("-R")
    p = client.run(args, timeout=SECONDS + 30)
    srv.wait(10)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def meters(host) -> str:
    return sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-meters", host.bridge])


def metrics_cloud(cloud_factory):
    port = free_port()
    cloud = cloud_factory({"controller": {"metrics_listen": f"127.0.0.1:{port}"}})
    cloud.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return cloud


def scrape(cloud) -> str:
    """/metrics as Prometheus would read it, with curl."""
    return sh(["curl", "-sf", "--max-time", "10", cloud.metrics_url])


def sample(text: str, name: str, **labels) -> float:
    """The sum of the samples with these labels (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_bandwidth_dscp_and_a_rate_change_without_flow_churn(cloud_factory):
    cloud = metrics_cloud(cloud_factory)
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    limited = cloud.add_vm(h1, net, "limited")
    neighbour = cloud.add_vm(h1, net, "neighbour")
    server = cloud.add_vm(h2, net, "server")
    egress = qos_policy(cloud, "egress", bandwidth_limit_rules={
        "max_kbps": LIMIT_KBPS, "direction": "egress"})
    ingress = qos_policy(cloud, "ingress", bandwidth_limit_rules={
        "max_kbps": LIMIT_KBPS, "direction": "ingress"},
        dscp_marking_rules={"dscp_mark": 26})
    limited.update_port(qos_policy_id=egress["id"])
    cloud.wait_controller_synced([h1, h2])
    limited.wait_ping(server)
    neighbour.wait_ping(server)
    wait_for(lambda: "kbps" in meters(h1), 5, 0.1, "the QoS meter on h1")

    # Egress from the VM, and a neighbour without a policy in the same run.
    up = iperf_mbps(limited, server, 5201)
    free = iperf_mbps(neighbour, server, 5202)
    print(f"egress limited {up:.2f} Mbit/s, neighbour {free:.2f} Mbit/s")
    assert 8.5 <= up <= 11.5, up
    assert free > 15, free
    text = scrape(cloud)
    drops = sample(text, "vmflow_meter_packets_dropped_total", dpid=h1.dpid_hex, purpose="qos")
    print(f"QoS meter drops on h1 after the egress run: {drops:.0f}")
    assert drops > 0, text
    assert sample(text, "vmflow_switch_connected", dpid=h1.dpid_hex) == 1
    assert sample(text, "vmflow_switch_flows_installed", dpid=h1.dpid_hex) > 0
    assert sample(text, "vmflow_change_to_commit_seconds_count") > 0

    # Ingress toward the VM (the server sends), and its DSCP marking.
    limited.update_port(qos_policy_id=ingress["id"])
    cloud.wait_controller_synced([h1, h2])
    down = iperf_mbps(limited, server, 5203, reverse=True)
    print(f"ingress limited {down:.2f} Mbit/s")
    assert 8.5 <= down <= 11.5, down
    with server.capture("icmp and ip[1] & 0xfc == 104") as cap:   # DSCP 26 << 2
        assert limited.ping(server, count=3)
    assert len([l for l in cap.lines if "echo request" in l]) == 3, cap.lines
    with limited.capture("icmp and ip[1] & 0xfc == 104") as cap:
        assert server.ping(limited, count=2)
    assert not [l for l in cap.lines if "echo request" in l], "only the VM's egress is marked"

    # 10 -> 20 Mbit/s: a meter-mod, and no flow-mod.
    before = cloud.switch_status(h1)
    rule = cloud.api.request("GET", f"/v2.0/qos/policies/{ingress['id']}/bandwidth_limit_rules")
    rid = rule["bandwidth_limit_rules"][0]["id"]
    with cloud.flow_monitor(h1) as mon:
        changed = time.monotonic()
        cloud.api.request("PUT", f"/v2.0/qos/policies/{ingress['id']}/bandwidth_limit_rules/{rid}",
                          {"bandwidth_limit_rule": {"max_kbps": 2 * LIMIT_KBPS}})
        wait_for(lambda: "rate=20000" in meters(h1), 5, 0.02, "the meter at 20 Mbit/s")
        took = time.monotonic() - changed
        time.sleep(1.0)
    after = cloud.switch_status(h1)
    print(f"rate change reached the switch in {took:.3f} s; status {before} -> {after}")
    assert took < 1.0, took
    assert after["flow_mods"] == before["flow_mods"], (before, after)
    assert after["meter_mods"] > before["meter_mods"], (before, after)
    text = scrape(cloud)
    assert sample(text, "vmflow_switch_meter_mods_total", dpid=h1.dpid_hex) == after["meter_mods"]
    assert mon.changes() == [], mon.changes()
    down2 = iperf_mbps(limited, server, 5204, reverse=True)
    print(f"ingress limited after the change {down2:.2f} Mbit/s")
    assert 17 <= down2 <= 23, down2

    # A controller restart with QoS present sends nothing.
    cloud.restart_controller()
    cloud.wait_controller_synced([h1, h2])
    st = cloud.switch_status(h1)
    assert st["flow_mods"] == 0 and st["meter_mods"] == 0, st


FLOOD = """
import socket, sys, time
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
src, dst = socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
frame = (b"\\xff" * 6 + mac + b"\\x08\\x06" + b"\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01"
         + mac + src + b"\\x00" * 6 + dst)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
# Paced at about 5,000 a second, 25 times the packet-in meter's rate: a
# tight loop outruns what a loaded machine's ovs-vswitchd reads from the
# veth, and the kernel then drops the excess before the meter sees it.
for i in range(int(sys.argv[4])):
    s.send(frame)
    if i % 50 == 49:
        time.sleep(0.01)
"""


def test_a_flooding_vms_packet_in_meter_drops_show_in_metrics(cloud_factory):
    cloud = metrics_cloud(cloud_factory)
    h1 = cloud.add_host("h1")
    net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    flooder = cloud.add_vm(h1, net, "flooder")
    other = cloud.add_vm(h1, net, "other")
    cloud.wait_controller_synced([h1])
    flooder.wait_ping(other)
    before = scrape(cloud)
    # ARP for an address the store does not know: the switch cannot answer
    # it, so each request is a packet-in through the flooder's meter.
    sent = 5000
    p = flooder.run([sys.executable, "-c", FLOOD, flooder.port["mac_address"], flooder.ip,
                     "10.0.0.250", str(sent)], timeout=60)
    assert p.returncode == 0, p.stderr

    def dropped():
        text = scrape(cloud)
        return text if sample(text, "vmflow_meter_packets_dropped_total", dpid=h1.dpid_hex,
                              purpose="packet_in") > 1000 else None

    text = wait_for(dropped, 10, 0.5, "packet-in meter drops in /metrics")
    drops = sample(text, "vmflow_meter_packets_dropped_total", dpid=h1.dpid_hex,
                   purpose="packet_in")
    received = sample(text, "vmflow_packet_in_total", app="arp", outcome="received")
    print(f"{sent} ARP requests: {drops:.0f} dropped by the packet-in meter, arp received "
          f"{received:.0f} (before {sample(before, 'vmflow_packet_in_total', app='arp', outcome='received'):.0f})")
    assert re.search(r'meter_id="\d+",purpose="packet_in"', text)
    assert received > sample(before, "vmflow_packet_in_total", app="arp", outcome="received")
    assert drops + received <= sent + 100


def test_a_packet_rate_limit_holds_against_a_udp_flood(cloud):
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    flooder = cloud.add_vm(h1, net, "flooder")
    server = cloud.add_vm(h2, net, "server")
    pol = qos_policy(cloud, "pps", packet_rate_limit_rules={"max_kpps": 1, "direction": "egress"})
    flooder.update_port(qos_policy_id=pol["id"])
    cloud.wait_controller_synced([h1, h2])
    flooder.wait_ping(server)
    wait_for(lambda: "pktps" in meters(h1), 5, 0.1, "the packet-rate meter on h1")
    srv = server.popen(["iperf3", "-s", "-1", "-p", "5301"])
    time.sleep(0.5)
    # ~6 kpps of 100-byte datagrams offered, for SECONDS after a 1 s warm-up.
    p = flooder.run(["iperf3", "-u", "-c", server.ip, "-p", "5301", "-b", "5M", "-l", "100",
                     "-t", str(SECONDS + 1), "-J"], timeout=SECONDS + 30)
    srv.wait(10)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    end = json.loads(p.stdout)["end"]["sum"]
    sent, lost, seconds = end["packets"], end["lost_packets"], end["seconds"]
    kpps = (sent - lost) / seconds / 1000
    print(f"UDP flood: offered {sent / seconds / 1000:.2f} kpps, received {kpps:.3f} kpps "
          f"against a 1 kpps limit")
    assert sent / seconds > 3000, "the flood did not exceed the limit"
    # The burst (800 packets) passes on top of the rate once, at the start.
    assert 0.85 <= kpps <= 1.15 + 0.8 / seconds, kpps
