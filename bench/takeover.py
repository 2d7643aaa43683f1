"""Takeover time: from a controller's SIGKILL to its switches reconciled by
the survivors, on real OVS with a real 3-member etcd.

    flock -s /tmp/ovs-restart.lock .venv/bin/python bench/takeover.py \
        [--controllers 3] [--hosts 4] [--ports 20] [--ttl 3] [--rounds 3]

Builds a cloud (tests/mininet/harness.py) of --hosts bridges, each
connected to every controller, with --ports bound ports per host (half of
them plugged VMs) on one network. Each round SIGKILLs the controller that
is master of the most bridges, and reads from the survivors' status files,
for each bridge it mastered:

    role      the switch confirmed the new master's ROLE_REQUEST (master_since)
    synced    the new master finished its first sync after that (last_sync):
              it re-read the switch and diffed it against its warm desired set
    flow_mods what that sync sent (0 when nothing changed)
    expired   etcd deleted the victim's member key (its lease expired), as a
              watch of the bench's own sees it


The victim is then started again; it rejoins and takes its switches back
before the next round. Times are seconds after the kill; the floor is the
lease expiry, between TTL - keepalive interval and TTL after the kill
(where the kill falls between two keepalives). "After expiry" takes that
phase out: it is what the controllers themselves take (watch, generation
id, role request), the part that their etcd client and code decide.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mininet"))

from harness import Cloud, wait_for  # noqa: E402

from etcd3 import etcdrpc  # noqa: E402
from etcd3.etcdrpc import kv_pb2  # noqa: E402

from controller.cluster import MEMBERS_PREFIX, master_for  # noqa: E402
from topology.etcd_cluster import EtcdCluster  # noqa: E402
from topology.etcd_rpc import Connection, prefix_end  # noqa: E402


class Expiries:
    """When etcd deleted each controller's member key, by a watch of the
    prefix: controller id -> wall time of the latest deletion."""

    def __init__(self, endpoints: list[tuple[str, int]]):
        self.at: dict[str, float] = {}
        key = MEMBERS_PREFIX.encode()
        self.conn = Connection(endpoints, 5.0)
        stream, self.stop = self.conn.watch(etcdrpc.WatchCreateRequest(
            key=key, range_end=prefix_end(key)))
        threading.Thread(target=self._run, args=(stream,), daemon=True).start()

    def _run(self, stream) -> None:
        try:
            for resp in stream:
                now = time.time()
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.DELETE:
                        self.at[ev.kv.key.decode()[len(MEMBERS_PREFIX):]] = now
        except Exception:
            return   # stopped


def settled(cloud: Cloud, live: set[str]) -> bool:
    for h in cloud.hosts.values():
        cid = master_for(h.dpid, live)
        proc = next(p for p in cloud.controllers if p.controller_id == cid)
        sw = proc.status().get("switches", {}).get(h.dpid_hex)
        if not sw or sw.get("role") != "master" or not sw.get("in_sync") or sw.get("busy"):
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--controllers", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--ports", type=int, default=20, help="bound ports per host")
    ap.add_argument("--ttl", type=int, default=3, help="lease TTL, seconds")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    with EtcdCluster(3) as etcd, tempfile.TemporaryDirectory(prefix="vmflow-takeover-") as tmp:
        endpoints = ",".join(f"127.0.0.1:{m.client_port}" for m in etcd.members)
        expiries = Expiries([("127.0.0.1", m.client_port) for m in etcd.members])
        cloud = Cloud.start(Path(tmp), controllers=args.controllers, etcd=endpoints,
                            lease_ttl=args.ttl)
        try:
            ids = {p.controller_id for p in cloud.controllers}
            hosts = [cloud.add_host(f"h{i + 1}") for i in range(args.hosts)]
            net = cloud.add_network("n1", cidr="10.0.0.0/22", vlan=400)
            for h in hosts:
                for j in range(args.ports):
                    cloud.add_vm(h, net, f"{h.name}v{j}", plug=j % 2 == 0)
            wait_for(lambda: settled(cloud, ids), 120, 0.5, "the cluster to settle")
            flows = sum(len(h.flows()) for h in hosts)
            print(f"{args.controllers} controllers, {args.hosts} bridges, "
                  f"{args.ports} ports per host, {flows} flows, lease TTL {args.ttl} s")
            roles, syncs, mods, after_expiry = [], [], [], []
            for rnd in range(args.rounds):
                count = {c: sum(master_for(h.dpid, ids) == c for h in hosts) for c in ids}
                victim_id = max(sorted(count), key=count.get)
                victim = next(p for p in cloud.controllers if p.controller_id == victim_id)
                moved = [h for h in hosts if master_for(h.dpid, ids) == victim_id]
                survivors = ids - {victim_id}

                def heir(h):
                    return next(p for p in cloud.controllers
                                if p.controller_id == master_for(h.dpid, survivors))
                # Counts are per connection, from its start: the takeover's are the growth.
                mods0 = {h.name: (heir(h).status().get("switches", {}).get(h.dpid_hex) or {})
                         .get("flow_mods", 0) for h in moved}
                killed = time.time()
                victim.kill()

                def reconciled():
                    out = []
                    for h in moved:
                        sw = heir(h).status().get("switches", {}).get(h.dpid_hex) or {}
                        since, last = sw.get("master_since"), sw.get("last_sync")
                        if not (since and since > killed and last and last >= since
                                and sw.get("in_sync")):
                            return None
                        out.append((since - killed, last - killed,
                                    sw.get("flow_mods", 0) - mods0[h.name]))
                    return out
                got = wait_for(reconciled, args.ttl + 30, 0.2, "the takeover")
                expired = wait_for(lambda: expiries.at.get(victim_id, 0) > killed
                                   and expiries.at[victim_id], 10, 0.1,
                                   "the victim's member key to go") - killed
                for r, s, m in got:
                    roles.append(r)
                    syncs.append(s)
                    mods.append(m)
                    after_expiry.append(r - expired)
                print(f"round {rnd + 1}: killed {victim_id} (master of {len(moved)}), "
                      f"lease expired {expired:.2f} s: "
                      + ", ".join(f"role {r:.2f} s ({r - expired:.3f} s after expiry), "
                                  f"synced {s:.2f} s, {m} flow-mods" for r, s, m in got))
                victim.start()
                wait_for(lambda: settled(cloud, ids), 60, 0.5, "the victim to rejoin")
            print(f"takeover, SIGKILL to new master confirmed: median {statistics.median(roles):.2f} s, "
                  f"max {max(roles):.2f} s")
            print(f"takeover, SIGKILL to switch reconciled:   median {statistics.median(syncs):.2f} s, "
                  f"max {max(syncs):.2f} s; flow-mods sent by the takeovers: {sum(mods)}")
            print(f"takeover, lease expiry to new master confirmed: "
                  f"median {statistics.median(after_expiry) * 1000:.0f} ms, "
                  f"max {max(after_expiry) * 1000:.0f} ms")
        finally:
            cloud.close()
            expiries.stop()
            expiries.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
