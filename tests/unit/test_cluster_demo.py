"""`vmflow cluster-demo`: real etcd members, real controller and API
processes (no switches): every controller joins the one membership, the API
answers, and SIGTERM stops all of it, etcd included."""
from __future__ import annotations

import json
import re
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from topology.etcd_cluster import free_ports

REPO = Path(__file__).resolve().parents[2]


def free_pair() -> int:
    """A port p with p and p + 1 free, below Linux's ephemeral range: the
    controllers listen on the base port and the next, and ports taken from
    the ephemeral range meanwhile (the demo's etcd members') once took the
    second, so c1 never started."""
    for _ in range(200):
        p = random.randrange(20000, 32000)
        socks = []
        try:
            for port in (p, p + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no two free consecutive ports in 20000-32000")


def test_cluster_demo_starts_etcd_two_controllers_and_the_api_and_stops_them(tmp_path):
    (api_port,) = free_ports(1)
    ofp = free_pair()
    work = tmp_path / "demo"
    p = subprocess.Popen([sys.executable, "-m", "controller.cli", "cluster-demo",
                          "--controllers", "2", "--workdir", str(work),
                          "--api-listen", f"127.0.0.1:{api_port}", "--ofp-base-port", str(ofp),
                          "--lease-ttl", "2"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        live = {}
        api_ok = False
        while time.time() < deadline and not (api_ok and all(
                v == ["c0", "c1"] for v in live.values()) and len(live) == 2):
            assert p.poll() is None, p.stdout.read()
            for i in range(2):
                try:
                    st = json.loads((work / f"controller-c{i}-status.json").read_text())
                    live[i] = (st.get("cluster") or {}).get("live")
                except (OSError, ValueError):
                    pass
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/v2.0/networks",
                                            timeout=2) as r:
                    api_ok = r.status == 200
            except OSError:
                pass
            time.sleep(0.3)
        assert api_ok and live == {0: ["c0", "c1"], 1: ["c0", "c1"]}, (api_ok, live)
        etcd_pids = [int(l.split()[0]) for l in subprocess.run(
            ["pgrep", "-af", str(work / "etcd")], capture_output=True, text=True).stdout.splitlines()]
        assert len(etcd_pids) == 3
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    # The documents live in the demo's own etcd cluster, which the API read.
    assert re.search(r"^store: +etcd://127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$",
                     out, re.M), out
    assert f"target='\"tcp:127.0.0.1:{ofp}\"' type=service" in out
    assert f"target='\"tcp:127.0.0.1:{ofp + 1}\"' type=service" in out
    assert subprocess.run(["pgrep", "-f", str(work / "etcd")]).returncode == 1   # none left
