"""ARP answered in the switch vs through the controller, on real OVS.

    .venv/bin/python bench/arp_answer.py [--count 200]

Builds a one-host cloud with the test harness (tests/mininet/harness.py:
real OVS, a VM namespace per port), then has VM a arping VM b's address
--count times, first with the in-switch responders (apps/arp.py), then
with b's responder deleted by hand so the per-port flow sends the request
to the controller and the ARP proxy answers with a packet-out (the
controller's audit, set to 600 s, does not restore it meanwhile). Prints
the reply time (arping's own measure) and the controller's packet-ins
for each.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "mininet"))

from controller.pipeline import table_id  # noqa: E402
from harness import OFCTL, Cloud, sh  # noqa: E402

RESPONDER_PRIORITY = 102


def arping(vm, ip: str, count: int) -> list[float]:
    r = vm.run(["arping", "-c", str(count), "-W", "0.1", "-i", "eth0", ip], timeout=count + 30)
    return [float(v) / (1000 if unit == "usec" else 1)
            for v, unit in re.findall(r"time=([\d.]+) (usec|msec)", r.stdout)]


def delete_responder(host, ip: str) -> None:
    services = f"table={table_id('services')}"
    out = sh(OFCTL + ["--no-names", "dump-flows", host.bridge, f"{services},arp,arp_tpa={ip}"])
    for line in out.splitlines():
        m = re.search(rf"priority={RESPONDER_PRIORITY},(\S+) actions=", line)
        if m:
            sh(OFCTL + ["--strict", "del-flows", host.bridge,
                        f"{services},priority={RESPONDER_PRIORITY},{m.group(1)}"])
            return
    raise SystemExit(f"no responder for {ip} on {host.bridge}:\n{out}")


def packet_ins(cloud) -> int:
    return cloud.status()["counters"].get("packet_in", 0)


def report(name: str, times: list[float], pins: int, count: int) -> None:
    times = sorted(times)
    print(f"{name}: {len(times)}/{count} answered; reply p50 {statistics.median(times):.3f} ms, "
          f"p90 {times[int(0.9 * (len(times) - 1))]:.3f} ms; {pins} packet-ins")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    cloud = Cloud.start(Path(tempfile.mkdtemp(prefix="arp-answer-")),
                        {"controller": {"audit_interval": 600}})
    try:
        h1 = cloud.add_host("h1")
        net = cloud.add_network("n1", cidr="10.0.9.0/24", vlan=309)
        a, b = cloud.add_vm(h1, net, "a"), cloud.add_vm(h1, net, "b")
        cloud.wait_controller_synced(timeout=30)
        a.wait_ping(b, 15)
        before = packet_ins(cloud)
        report("in-switch responder", arping(a, b.ip, args.count),
               packet_ins(cloud) - before, args.count)
        delete_responder(h1, b.ip)
        time.sleep(1.5)   # the status file is rewritten periodically
        before = packet_ins(cloud)
        times = arping(a, b.ip, args.count)
        time.sleep(1.5)
        report("packet-in proxy", times, packet_ins(cloud) - before, args.count)
    finally:
        cloud.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
