"""The local etcd launcher that tests, benches and cluster-demo share."""
import json
import urllib.request

from topology.etcd_cluster import EtcdCluster


def _put_get(url: str, key: str, value: str) -> str:
    import base64
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    req = urllib.request.Request(url + "/v3/kv/put", json.dumps(
        {"key": b64(key), "value": b64(value)}).encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    req = urllib.request.Request(url + "/v3/kv/range", json.dumps({"key": b64(key)}).encode(),
                                 method="POST")
    kvs = json.loads(urllib.request.urlopen(req, timeout=5).read())["kvs"]
    return base64.b64decode(kvs[0]["value"]).decode()


def _eventually(fn, timeout_s: float = 15.0):
    """A member's death or return can cost a leader election: under load an
    etcd request made meanwhile fails or times out, and a retry succeeds."""
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (OSError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_three_members_keep_quorum_when_one_dies_and_clean_up():
    with EtcdCluster(3) as cluster:
        assert cluster.store_url.startswith("etcd://127.0.0.1:")
        assert len(cluster.store_url.split(",")) == 3
        first = cluster.members[0].client_url
        assert _eventually(lambda: _put_get(first, "k", "v1")) == "v1"
        cluster.kill_member(0)
        assert not cluster.members[0].running
        # Two of three still make a quorum: writes through a survivor work.
        assert _eventually(lambda: _put_get(cluster.members[1].client_url, "k", "v2")) == "v2"
        cluster.restart_member(0)
        cluster.wait_healthy()
        assert _eventually(lambda: _put_get(first, "k", "v3")) == "v3"
        workdir = cluster.workdir
    import os
    assert not os.path.exists(workdir)
    assert not any(m.running for m in cluster.members)
