"""Issue 16: OpenFlow over TLS on real OVS. The controller listens on
ssl:127.0.0.1:PORT with certificates made by ovs-pki in the test's temp dir;
a bridge whose certificate another CA signed cannot connect, one with a
certificate from the configured CA connects and gets its flows. A host that
pins its switch's certificate (switch_cert_sha256) refuses any other, even
one the CA signed.

ovs-vswitchd has one SSL configuration for all its bridges (ovs-vsctl
set-ssl); the test sets it and puts back what was there before. Bridges of
other runs use tcp: targets, which it does not touch.
"""
from __future__ import annotations

import hashlib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from harness import Cloud, free_port, sh, wait_for
from ofclient import FakeSwitch, tls_client

pytestmark = pytest.mark.mininet

CONVERGE = 20.0


def make_pki(root: Path, *switches: str) -> Path:
    """An ovs-pki PKI (controller CA + switch CA) under root, with a signed
    controller certificate (ctl-*) and switch certificates (sw-*, and one
    NAME-* per extra name)."""
    root.mkdir(parents=True)
    pki = root / "pki"
    log = str(root / "ovs-pki.log")
    steps = [["init"], ["req+sign", "ctl", "controller"], ["req+sign", "sw", "switch"]]
    steps += [["req+sign", name, "switch"] for name in switches]
    for args in steps:
        subprocess.run(["ovs-pki", f"--dir={pki}", f"--log={log}", "--force", *args],
                       cwd=root, check=True, capture_output=True, timeout=120)
    return root


def fingerprint(cert: Path) -> str:
    text = cert.read_text()   # ovs-pki puts the decoded text before the PEM block
    der = ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):])
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def get_ssl() -> list[str]:
    """The current SSL record: [private_key, certificate, ca_cert] or []."""
    out = sh(["ovs-vsctl", "--timeout=10", "get-ssl"])
    vals = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        vals[key.strip()] = value.strip()
    if not vals.get("Private key"):
        return []
    return [vals["Private key"], vals["Certificate"], vals["CA Certificate"]]


@pytest.fixture
def ovs_ssl():
    before = get_ssl()

    def set_ssl(key: Path, cert: Path, ca: Path) -> None:
        sh(["ovs-vsctl", "--timeout=10", "set-ssl", str(key), str(cert), str(ca)])

    try:
        yield set_ssl
    finally:
        if before:
            sh(["ovs-vsctl", "--timeout=10", "set-ssl", *before], check=False)
        else:
            sh(["ovs-vsctl", "--timeout=10", "del-ssl"], check=False)


def connect_ssl(cloud: Cloud, host, port: int) -> None:
    sh(["ovs-vsctl", "--timeout=20", "--", "--id=@c", "create", "controller",
        f"target=\"ssl:127.0.0.1:{port}\"", "max_backoff=1000",
        "connection_mode=out-of-band", "inactivity_probe=5000",
        "--", "set", "bridge", host.bridge, "controller=@c"])


def test_only_a_switch_certificate_from_the_configured_ca_connects(mininet_ready, tmp_path,
                                                                   ovs_ssl):
    good = make_pki(tmp_path / "good", "imp")
    rogue = make_pki(tmp_path / "rogue")     # another CA: its switch cert is not ours
    port = free_port()
    cloud = Cloud.start(tmp_path / "cloud", {
        "DEFAULT": {"ofp_listen": f"ssl:127.0.0.1:{port}"},
        "openflow": {"ca_cert": good / "pki/switchca/cacert.pem",
                     "certificate": good / "ctl-cert.pem",
                     "private_key": good / "ctl-privkey.pem",
                     "handshake_timeout": 5}})
    try:
        h1 = cloud.add_host("h1", connect=False)
        net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
        a = cloud.add_vm(h1, net, "a", ip="10.0.0.11")
        b = cloud.add_vm(h1, net, "b", ip="10.0.0.12")
        wait_for(lambda: cloud.status(), 20, 0.2, "the controller's first status")
        assert "listening for OpenFlow 1.3 on ssl:127.0.0.1" in cloud.controller.log(200)

        # The rogue switch certificate (it trusts our controller CA, so the
        # refusal is the controller's).
        ovs_ssl(rogue / "sw-privkey.pem", rogue / "sw-cert.pem",
                good / "pki/controllerca/cacert.pem")
        connect_ssl(cloud, h1, port)
        wait_for(lambda: cloud.status()["counters"]["ofp_tls_failures"] >= 2, 20, 0.2,
                 lambda: f"two refused TLS handshakes: {cloud.status()['counters']}\n"
                         + cloud.controller.log(20))
        st = cloud.status()
        assert h1.dpid_hex not in st["switches"], "a switch with a rogue certificate got in"
        assert st["counters"]["ofp_connections"] == 0
        assert not h1.connected()
        assert h1.flows() == []
        assert "certificate verify failed" in cloud.controller.log(200)

        # A certificate the configured CA signed.
        ovs_ssl(good / "sw-privkey.pem", good / "sw-cert.pem",
                good / "pki/controllerca/cacert.pem")
        h1.wait_connected(CONVERGE)
        cloud.wait_controller_synced([h1], timeout=CONVERGE)
        assert h1.flows(), "the TLS switch got no flows"
        a.wait_ping(b, CONVERGE)
        assert a.ping(b, count=3)

        # Pinning: the host names its switch's certificate. Another switch
        # certificate from the same CA (an impostor that got one) is refused
        # for h1's datapath id even though TLS accepts it.
        real_pin = fingerprint(good / "sw-cert.pem")
        cloud.api.update("hosts", h1.doc["id"], switch_cert_sha256=real_pin)
        since = cloud.switch_status(h1)["connected_at"]
        imp_tls = tls_client(str(good / "imp-cert.pem"), str(good / "imp-privkey.pem"),
                             str(good / "pki/controllerca/cacert.pem"))
        imp = FakeSwitch(port, tls=imp_tls).handshake(h1.dpid)
        assert imp.wait_closed(10), "the impostor with a CA-signed certificate was kept"
        assert imp.programming() == []
        imp.close()
        st = wait_for(lambda: (lambda st: st["counters"]["ofp_cert_pin_refused"] >= 1 and st)(
            cloud.status()), 5, 0.2, "the pin refusal in the status")
        assert st["refused_dpids"][h1.dpid_hex]["last_certificate"] == \
            fingerprint(good / "imp-cert.pem")
        assert cloud.switch_status(h1)["connected_at"] == since and a.ping(b, count=2)

        # A pin changed in the API reaches the connected switch: h1 no
        # longer matches and is disconnected (and refused on every retry),
        # until the pin names its certificate again.
        cloud.api.update("hosts", h1.doc["id"], switch_cert_sha256=fingerprint(
            good / "imp-cert.pem"))
        wait_for(lambda: h1.dpid_hex not in cloud.status()["switches"], 10, 0.2,
                 "h1 to be dropped for its unpinned certificate")
        cloud.api.update("hosts", h1.doc["id"], switch_cert_sha256=real_pin)
        cloud.wait_controller_synced([h1], timeout=CONVERGE, since=since + 0.001)
        a.wait_ping(b, CONVERGE)
    finally:
        cloud.close()


def test_ssl_listener_without_its_files_does_not_start(tmp_path):
    """ssl: with no certificate configured is an error at start, not a
    silent plain-TCP listener."""
    conf = tmp_path / "vmflow.conf"
    conf.write_text(f"[DEFAULT]\nstore = sqlite:///{tmp_path}/db.sqlite\n"
                    f"ofp_listen = ssl:127.0.0.1:{free_port()}\n"
                    f"[controller]\nstatus_file = {tmp_path}/status.json\n")
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "controller.cli", "controller",
                        "--config", str(conf)], cwd=repo, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, p.stderr
    assert "needs [openflow] ca_cert, certificate, private_key" in p.stderr
