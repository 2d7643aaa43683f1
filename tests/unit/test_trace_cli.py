"""`vmflow trace` and `vmflow explain` end to end on a real SQLite store and a
status file as the controller writes it (the OVS side is tests/mininet/test_trace.py)."""
from __future__ import annotations

import io
import json
import os

import pytest

from controller import cli, pipeline
from controller.status import write_status
from controller.tracespec import parse_spec
from l2_fixtures import cloud_docs, pid
from topology.store import SqliteStore
from topology.view import interface_name


@pytest.fixture
def store_url(tmp_path):
    docs = cloud_docs()
    docs["ports"][pid(1)]["name"] = "vm-a"
    docs["subnets"] = {"s": {"id": "s", "network_id": "n1", "cidr": "10.0.0.0/24",
                             "ip_version": 4}}
    # Every port in a group that admits all IPv4 both ways, but p2 refuses tcp 23.
    docs["security_groups"] = {"open": {"id": "open", "_key": 1, "stateful": True},
                               "no-telnet": {"id": "no-telnet", "_key": 2, "stateful": True}}
    docs["security_group_rules"] = {
        f"r{n}": {"id": f"r{n}", "_key": n, "security_group_id": "open",
                  "direction": d, "ethertype": "IPv4"}
        for n, d in ((1, "ingress"), (2, "egress"))}
    docs["security_group_rules"]["r3"] = {
        "id": "r3", "_key": 3, "security_group_id": "no-telnet", "direction": "ingress",
        "ethertype": "IPv4", "protocol": "tcp", "ports": "23", "action": "deny"}
    for port in docs["ports"].values():
        port["security_groups"] = ["open"]
    docs["ports"][pid(2)]["security_groups"] = ["open", "no-telnet"]
    path = tmp_path / "vmflow.db"
    store = SqliteStore(str(path))
    with store.transaction() as txn:
        for kind, items in docs.items():
            for ident, body in items.items():
                txn.put(kind, ident, body)
    store.close()
    ports = {interface_name(docs["ports"][pid(n)]): n for n in (1, 2, 4)}
    ports["up1"] = 100
    write_status(str(tmp_path / "controller-status.json"),
                 {"pid": 1, "switches": {"00000000000000a1": {"host": "h1", "ports": ports}}})
    return f"sqlite:///{path}"


def trace(capsys, store_url, *argv):
    code = cli.main(["trace", "--store", store_url, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def trace_json(capsys, store_url, *argv):
    code, out, err = trace(capsys, store_url, "--format", "json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_an_allowed_packet_is_explained_stage_by_stage(capsys, store_url):
    code, out, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a",
                           "tcp,nw_dst=10.0.0.2,tp_dst=22")
    assert code == 0, err
    assert "from port vm-a (00000001-aaaa-bbbb-cccc-000000000000), tap00000001-aa ofport 1" in out
    assert "tcp_dst=22" in out and "ipv4_src=10.0.0.1" in out and "eth_dst=fa:16:3e:00:00:02" in out
    for stage in ("classify", "port_security", "l2_lookup"):
        assert f". {stage}, priority" in out
    assert "wanted by l2" in out
    # A stage passed by its table miss says what the miss does.
    assert "wanted by pipeline" in out
    assert "# Table miss: " + pipeline.STAGES["services"].miss_doc[:30] in out
    assert "# " + pipeline.TABLES["port_security"].doc[:40] in out
    assert "verdict: output to ofport 2 = port 00000002-aaaa-bbbb-cccc-000000000000 " \
           "(tap00000002-aa), untagged" in out


def test_a_packet_a_security_group_refuses_names_its_rule(capsys, store_url):
    code, out, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a",
                           "tcp,nw_dst=10.0.0.2,tp_dst=23")
    assert code == 0, err
    assert "wanted by secgroup, security_group_rule r3" in out   # the deny
    assert "wanted by secgroup, security_group_rule r2" in out   # the sender's egress allow
    assert "verdict: dropped in ingress_rules" in out


def test_the_sender_by_id_prefix_or_interface_name(capsys, store_url):
    for name in ("00000001", "tap00000001-aa"):
        doc = trace_json(capsys, store_url, "--host", "00000000000000a1", "--from", name,
                         "udp,nw_dst=10.0.0.2,tp_dst=53")
        assert doc["in_port"] == 1 and [o["port"] for o in doc["verdict"]["outputs"]] == [2]
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "0000", "ip,nw_dst=10.0.0.2")
    assert code == 2 and "ports match" in err


def test_a_spoofed_packet_is_dropped_at_port_security(capsys, store_url):
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", pid(1),
                     "tcp,nw_src=10.0.0.9,nw_dst=10.0.0.2,tp_dst=22")
    assert doc["verdict"]["dropped"] and doc["verdict"]["dropped_at"] == "port_security"
    assert doc["steps"][-1]["table"] == "port_security"


def test_to_another_host_and_in_from_the_uplink(capsys, store_url):
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "vm-a",
                     "icmp,nw_dst=10.0.0.3")
    assert [(o["port"], o["vlan"]) for o in doc["verdict"]["outputs"]] == [(100, [101])]
    assert doc["packet"]["icmpv4_type"] == "8"
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "physnet1",
                     "ip,vlan=101,dl_src=fa:16:3e:00:00:03,dl_dst=fa:16:3e:00:00:01,"
                     "nw_src=10.0.0.3,nw_dst=10.0.0.1")
    assert [(o["port"], o["vlan"]) for o in doc["verdict"]["outputs"]] == [(1, [])]


def test_arp_and_broadcast(capsys, store_url):
    # An address nobody has: the ARP proxy (the controller) decides.
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "vm-a", "arp,arp_tpa=10.0.0.77")
    assert doc["verdict"]["outputs"] == [] and len(doc["verdict"]["controller"]) == 1
    assert doc["verdict"]["controller"][0]["owner"].startswith("arp")
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "vm-a",
                     "udp,nw_dst=10.0.0.255,tp_dst=9")
    assert sorted(o["port"] for o in doc["verdict"]["outputs"]) == [2, 100]
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "vm-a",
                     "udp,nw_dst=239.129.2.3,tp_dst=9")
    assert doc["packet"]["eth_dst"] == "01:00:5e:01:02:03"
    assert sorted(o["port"] for o in doc["verdict"]["outputs"]) == [2, 100]


def test_bad_input_names_what_is_wrong(capsys, store_url):
    code, _, err = trace(capsys, store_url, "--host", "h9", "--from", "vm-a", "ip,nw_dst=10.0.0.2")
    assert code == 2 and "--host h9: no such host" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a", "sctp,nw_dst=10.0.0.2")
    assert code == 2 and "unknown protocol 'sctp'" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", pid(3), "ip,nw_dst=10.0.0.2")
    assert code == 2 and "is bound to h2, not h1" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a", "ip,nw_dst=10.0.0.77")
    assert code == 2 and "nw_dst 10.0.0.77" in err and "give dl_dst" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a",
                         "--ct-state", "bogus", "ip,nw_dst=10.0.0.2")
    assert code == 2 and "--ct-state" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a", "tp_dst=5")
    assert code == 2 and "tp_dst: needs tcp or udp" in err


def test_no_status_file_is_said(capsys, store_url, tmp_path):
    code, _, err = trace(capsys, store_url, "--status", str(tmp_path / "none.json"),
                         "--host", "h1", "--from", "vm-a", "ip,nw_dst=10.0.0.2")
    assert code == 2 and "no controller status" in err


def test_parse_spec_ovs_ofctl_names():
    assert parse_spec("tcp,nw_src=1.2.3.4,tp_dst=22,dl_dst=aa:bb:cc:dd:ee:ff") == {
        "eth_type": 0x800, "ip_proto": 6, "ipv4_src": "1.2.3.4", "tcp_dst": 22,
        "eth_dst": "aa:bb:cc:dd:ee:ff"}
    assert parse_spec("arp,nw_dst=10.0.0.1,arp_op=2") == {
        "eth_type": 0x806, "arp_tpa": "10.0.0.1", "arp_op": "2"}
    assert parse_spec("udp_dst=53")["ip_proto"] == 17
    with pytest.raises(ValueError, match="in_port"):
        parse_spec("in_port=3")
    with pytest.raises(ValueError, match="contradicts"):
        parse_spec("tcp,udp")


def test_explain_a_cookie_and_dump_flows_lines(capsys, store_url, monkeypatch):
    ours = pipeline.make_cookie(1, "ports", 1)
    assert cli.main(["explain", "--store", store_url, hex(ours), "0x1234"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{ours:#x}: l2, port vm-a (00000001-aaaa-bbbb-cccc-000000000000)"
    assert out[1] == "0x1234: not vmflow's"
    lines = (
        "OFPST_FLOW reply (OF1.3) (xid=0x2):\n"
        f" cookie={pipeline.make_cookie(2, None, 0):#x}, duration=3.1s, table=10, n_packets=0, "
        "n_bytes=0, priority=10,arp,arp_op=1 actions=drop\n"
        f" cookie={pipeline.make_cookie(1, 'networks', 2):#x}, duration=3.1s, table=40, "
        "n_packets=0, n_bytes=0, priority=50,metadata=0x2 actions=output:100\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert cli.main(["explain", "--store", store_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert out[1] == "    arp, per switch [table 10: services]"
    assert out[3] == "    l2, network n2 [table 40: l2_lookup]"
    code = cli.main(["explain", "--store", store_url, "zz"])
    assert code == 2 and "COOKIE 'zz'" in capsys.readouterr().err


def test_a_switch_out_of_sync_is_said(capsys, store_url, tmp_path):
    status = json.loads((tmp_path / "controller-status.json").read_text())
    status["pid"] = os.getpid()
    status["switches"]["00000000000000a1"]["in_sync"] = False
    write_status(str(tmp_path / "controller-status.json"), status)
    code, out, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a",
                           "ip,nw_dst=10.0.0.2")
    assert code == 0 and "verdict: output to ofport 2" in out
    assert "not in sync" in err


def test_a_real_frame(capsys, store_url):
    import dpkt
    udp = dpkt.udp.UDP(sport=5000, dport=53, data=b"x")
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=17, ttl=5, data=udp)
    eth = dpkt.ethernet.Ethernet(src=bytes.fromhex("fa163e000001"), dst=bytes.fromhex("fa163e000002"),
                                 type=0x0800, data=ip)
    doc = trace_json(capsys, store_url, "--host", "h1", "--from", "vm-a", "--frame", bytes(eth).hex())
    assert doc["packet"]["udp_dst"] == "53" and doc["packet"]["nw_ttl"] == "5"
    assert [o["port"] for o in doc["verdict"]["outputs"]] == [2]
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a", "--frame", "zz")
    assert code == 2 and "--frame: not hex" in err
    code, _, err = trace(capsys, store_url, "--host", "h1", "--from", "vm-a")
    assert code == 2 and "FLOW or as --frame" in err
