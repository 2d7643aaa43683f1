"""A locked or stalled store: 503 with Retry-After and a Neutron body, never a 500.

The lock is taken by another process, as a stuck or paused process would
hold it: either SQLite's write lock (BEGIN IMMEDIATE: writes wait up to
api.store_timeout, WAL reads go on) or the WAL index's read and write locks
(what a process stopped in the middle of recovery or a checkpoint holds:
reads wait too, for as long as SQLite's own retry loop, about 10 s).
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests

from apihelpers import Client, error

HOLDER = r"""
import fcntl, os, sqlite3, sys, time
db, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "write":
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
else:
    # SQLite's WAL locks: bytes 120-127 of the -shm file (write, checkpoint,
    # recover and the five read marks).
    fd = os.open(db + "-shm", os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120, 0)
print("held", flush=True)
time.sleep(seconds)
"""


def hold_lock(db, mode: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), mode, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def assert_503(r: requests.Response) -> None:
    assert r.status_code == 503, r.text
    assert error(r)["type"] == "HTTPServiceUnavailable"
    assert int(r.headers["Retry-After"]) >= 1


def assert_no_500_logged(api) -> None:
    logs = api.logs()
    assert "Traceback" not in logs, logs
    assert "unexpected error" not in logs, logs
    assert "store error on" in logs  # the 503s were logged as such


def store_counts(db) -> tuple[int, int]:
    """(networks, VLAN claims): equal when no create was half made."""
    from topology.store import SqliteStore
    store = SqliteStore(str(db))
    try:
        with store.read() as r:
            return len(r.list("networks")), len(r.claimed_keys("vlan:physnet1"))
    finally:
        store.close()


def test_stalled_store_is_503_on_get_and_post(make_api):
    # SQLite itself gives up waiting for WAL index locks after about 10 s
    # (SQLITE_PROTOCOL), whatever the busy timeout; the lock is held longer.
    api = make_api(workers=2, extra="store_timeout = 1\n")
    client = Client(api.url)
    client.network(name="before")
    holder = hold_lock(api.db, "wal", 18)
    calls = [("GET", "/networks", None), ("POST", "/networks", {"network": {"name": "during"}}),
             ("GET", "/networks?name=before", None), ("DELETE", "/networks/nope", None)]
    answers: dict[int, requests.Response] = {}
    try:
        threads = [threading.Thread(target=lambda i=i, c=c: answers.__setitem__(
            i, Client(api.url).call(*c))) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert holder.poll() is None, "the lock was released before the requests ended"
    finally:
        holder.wait()
    for i in range(len(calls)):
        assert_503(answers[i])
    r = client.call("GET", "/networks")
    assert r.status_code == 200
    assert [n["name"] for n in r.json()["networks"]] == ["before"]
    assert client.call("POST", "/networks", {"network": {"name": "after"}}).status_code == 201
    assert store_counts(api.db) == (2, 2)
    assert_no_500_logged(api)


def test_write_locked_store_is_503_on_post_and_reads_go_on(make_api):
    api = make_api(workers=2, extra="store_timeout = 1\n")
    client = Client(api.url)
    client.network(name="before")
    holder = hold_lock(api.db, "write", 5)
    try:
        assert_503(client.call("POST", "/networks", {"network": {"name": "during"}}))
        r = client.call("GET", "/networks")
        assert r.status_code == 200 and len(r.json()["networks"]) == 1
        # Writers queued behind the stalled one fail together, each within
        # about twice store_timeout, not one store_timeout after another.
        results: list[tuple[int, float]] = []

        def post():
            t0 = time.monotonic()
            code = Client(api.url).call("POST", "/networks", {"network": {}}).status_code
            results.append((code, time.monotonic() - t0))

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {code for code, _ in results} == {503}
        assert max(t for _, t in results) < 2 * 1 + 2.5, results
        assert holder.poll() is None
    finally:
        holder.wait()
    assert store_counts(api.db) == (1, 1)
    assert_no_500_logged(api)


def test_a_write_the_client_gave_up_on_is_whole_or_absent(make_api):
    # store_timeout 4: a lock held 2 s delays the write, which then commits
    # whole although its client has gone; a lock held 7 s makes it fail, and
    # none of it is written.
    api = make_api(workers=1, extra="store_timeout = 4\n")
    client = Client(api.url)
    for seconds, expected in ((2, 1), (7, 1)):
        holder = hold_lock(api.db, "write", seconds)
        try:
            try:
                requests.post(api.url + "/v2.0/networks", json={"network": {"name": "gone"}},
                              timeout=0.5)
                raise AssertionError("the write did not wait for the lock")
            except requests.Timeout:
                pass
        finally:
            holder.wait()
        time.sleep(1)  # the server finishes (or fails) the request on its own
        assert store_counts(api.db) == (expected, expected)
    names = [n["name"] for n in client.call("GET", "/networks").json()["networks"]]
    assert names == ["gone"]
    assert_no_500_logged(api)


def test_a_worker_started_while_the_store_is_locked_boots(make_api):
    # gunicorn stops the whole server when a worker fails to boot: a worker
    # replaced during a stall must not touch the store until asked to.
    import os
    import signal
    api = make_api(workers=1, extra="store_timeout = 1\n")
    client = Client(api.url)
    client.network(name="before")
    children = f"/proc/{api.proc.pid}/task/{api.proc.pid}/children"
    old = {int(p) for p in open(children).read().split()}
    assert len(old) == 1
    holder = hold_lock(api.db, "write", 6)
    try:
        os.kill(old.pop(), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            r = None
            try:
                r = requests.get(api.url + "/v2.0/networks", timeout=5)
            except requests.ConnectionError:
                pass
            if r is not None and r.status_code == 200:
                break
            assert time.monotonic() < deadline and api.proc.poll() is None, api.logs()
            time.sleep(0.2)
        assert_503(client.call("POST", "/networks", {"network": {"name": "during"}}))
        assert holder.poll() is None
    finally:
        holder.wait()
    assert client.call("POST", "/networks", {"network": {"name": "after"}}).status_code == 201
    assert api.proc.poll() is None
    assert "Traceback" not in api.logs()
