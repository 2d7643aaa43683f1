"""The API on a 3-member etcd cluster through member and quorum loss:
one member down loses nothing; no quorum is a 503 with a Neutron body and
Retry-After (never a 500, never a hang); quorum back, everything converges."""
from __future__ import annotations

import time

from apihelpers import Client, error
from test_store_stall import assert_503
from topology.etcd_cluster import EtcdCluster


def test_member_loss_quorum_loss_and_recovery(make_api):
    with EtcdCluster(3) as cluster:
        api = make_api(workers=2, store_url=cluster.store_url, extra="store_timeout = 1\n")
        c = Client(api.url)
        made = [c.network(name=f"a{i}")["id"] for i in range(3)]

        cluster.kill_member(0)
        made += [c.network(name=f"b{i}")["id"] for i in range(3)]
        listed = {n["id"] for n in c.call("GET", "/networks").json()["networks"]}
        assert set(made) <= listed

        cluster.kill_member(1)
        for method, path, body in (("POST", "/networks", {"network": {"name": "lost"}}),
                                   ("GET", "/networks", None),
                                   ("GET", f"/networks/{made[0]}", None),
                                   ("DELETE", f"/networks/{made[0]}", None)):
            t0 = time.monotonic()
            r = c.call(method, path, body)
            assert_503(r)
            assert "store" in error(r)["message"].lower()
            assert time.monotonic() - t0 < 5, (method, path)

        cluster.start_member(0, state="existing")
        cluster.start_member(1, state="existing")
        cluster.wait_healthy(30)
        deadline = time.monotonic() + 20
        while True:
            r = c.call("POST", "/networks", {"network": {"name": "after"}})
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            assert_503(r)
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        made.append(r.json()["network"]["id"])
        names = {n["name"] for n in c.call("GET", "/networks").json()["networks"]}
        assert names == {"a0", "a1", "a2", "b0", "b1", "b2", "after"}   # "lost" never was

        logs = api.logs()
        assert "Traceback" not in logs and "unexpected error" not in logs, logs
