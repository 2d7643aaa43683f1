"""The store contract on both backends (SQLite, and etcd on a real 3-member
cluster on loopback), then what only the etcd store has: optimistic
transactions that conflict and are run again, claims raced by processes,
the follower across a compacted feed, and member and quorum faults."""
from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter

import pytest

from topology.etcd_cluster import EtcdCluster
from topology.store import Conflict, HistoryCompacted, StoreError, TxnConflict, open_store
from topology.store.base import ensure_secret
from topology.store.etcd import EtcdStore, parse_url


@pytest.fixture(scope="module")
def cluster():
    with EtcdCluster(3) as c:
        yield c


def fresh_url(cluster) -> str:
    """Its own prefix: every test gets an empty store on the shared cluster."""
    return f"{cluster.store_url}/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def two_etcd_clients(cluster):
    """Two clients (as two processes would have) of one fresh etcd store."""
    url = fresh_url(cluster)
    a, b = open_store(url), open_store(url, migrate=False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return fresh_url(request.getfixturevalue("cluster"))


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


# -- the contract, on both ------------------------------------------------------

def test_documents_in_creation_order_filtered_and_counted(store):
    with store.transaction() as txn:
        for id in ("zz", "aa", "mm"):   # key order is not creation order
            txn.put("ports", id, {"id": id}, project_id="p1" if id != "mm" else "p2",
                    parent_id="n1" if id != "aa" else "n2")
        txn.put("networks", "n/1", {"id": "n/1"}, project_id="p1")   # a "/" in an id
    with store.read() as r:
        assert [d["id"] for d in r.list("ports")] == ["zz", "aa", "mm"]
        assert [d["id"] for d in r.list("ports", parent_id="n1")] == ["zz", "mm"]
        assert [d["id"] for d in r.list("ports", project_id="p1")] == ["zz", "aa"]
        assert r.count("ports") == 3 and r.count("ports", project_id="p2") == 1
        assert r.get("networks", "n/1") == {"id": "n/1"} and r.get("networks", "n") is None
    with store.transaction() as txn:   # an update keeps its place; a move of project
        txn.put("ports", "zz", {"id": "zz", "v": 2}, project_id="p2", parent_id="n1")
    with store.read() as r:
        assert [d["id"] for d in r.list("ports")] == ["zz", "aa", "mm"]
        assert r.count("ports", project_id="p1") == 1 and r.count("ports", project_id="p2") == 2


def test_a_transaction_sees_its_own_writes_and_a_failed_one_writes_nothing(store):
    rev = store.revision()
    with pytest.raises(RuntimeError):
        with store.transaction() as txn:
            txn.put("networks", "n1", {"id": "n1"}, project_id="p")
            txn.claim("mac", "m1", "port:x")
            assert txn.get("networks", "n1") == {"id": "n1"}
            assert [d["id"] for d in txn.list("networks")] == ["n1"]
            assert txn.count("networks", project_id="p") == 1
            assert txn.claimed_keys("mac") == {"m1"} and txn.claim_owner("mac", "m1") == "port:x"
            txn.delete("networks", "n1")
            assert txn.get("networks", "n1") is None and txn.list("networks") == []
            raise RuntimeError("boom")
    assert store.revision() == rev and store.changes_since(rev) == []
    with store.read() as r:
        assert r.get("networks", "n1") is None and r.claim_owner("mac", "m1") is None


def test_one_revision_per_write_and_the_feed_says_what_changed(store):
    rev = store.revision()
    with store.transaction() as txn:
        txn.put("networks", "n1", {"id": "n1", "v": 1})
        txn.put("networks", "n2", {"id": "n2"})
    with store.transaction() as txn:
        txn.delete("networks", "n2")
        txn.delete("networks", "missing")
    changes = store.changes_since(rev)
    assert [(c.revision, c.id, c.op) for c in changes] == [
        (rev + 1, "n1", "put"), (rev + 1, "n2", "put"), (rev + 2, "n2", "delete")]
    assert changes[0].body == {"id": "n1", "v": 1} and changes[2].body is None
    with store.transaction() as txn:
        txn.claim("mac", "m", "port:a")   # a claim alone is no document change
    assert store.revision() == rev + 2
    snap_rev, data = store.snapshot()
    assert snap_rev == rev + 2 and data == {"networks": {"n1": {"id": "n1", "v": 1}}}


def test_claims_release_and_keys(store):
    with store.transaction() as txn:
        txn.claim("mac", "m1", "port:a")
        txn.claim("mac", "m1", "port:a")
        txn.claim("ip:s/1", "10.0.0.2", "port:a")
        with pytest.raises(Conflict) as e:
            txn.claim("mac", "m1", "port:b")
        assert e.value.owner == "port:a"
        assert [txn.allocate_key("k", f"o{i}", low=1, high=4) for i in range(3)] == [1, 2, 3]
    with store.transaction() as txn:
        txn.release_owner("o0")
        assert txn.allocate_key("k", "o3", low=1, high=4) == 4
        assert txn.allocate_key("k", "o4", low=1, high=4) == 1
        with pytest.raises(Conflict):
            txn.allocate_key("k", "o5", low=1, high=4)
        txn.release_owner("port:a")
    with store.read() as r:
        assert r.claimed_keys("mac") == set() and r.claimed_keys("ip:s/1") == set()
        assert r.claimed_keys("k") == {"1", "2", "3", "4"} and r.claim_owner("k", "1") == "o4"


def test_prefetched_reads_are_the_reads_and_a_change_to_one_conflicts(store, store_url):
    with store.transaction() as txn:
        txn.put("networks", "n", {"id": "n"})
        txn.put("subnets", "s", {"id": "s"}, parent_id="n")
        txn.claim("default-sg", "p", "security-group:g")
    other = open_store(store_url, migrate=False)
    try:
        with pytest.raises(TxnConflict if "etcd" in store_url else RuntimeError):
            with store.transaction() as txn:
                txn.prefetch(docs=[("networks", "n"), ("quotas", "p"), ("networks", None)],
                             claims=[("default-sg", "p"), ("mac", None)], kinds=["subnets"])
                assert txn.get("networks", "n") == {"id": "n"} and txn.get("quotas", "p") is None
                assert txn.claim_owner("default-sg", "p") == "security-group:g"
                assert [d["id"] for d in txn.list("subnets", parent_id="n")] == ["s"]
                if "etcd" not in store_url:
                    raise RuntimeError("SQLite's writer lock would hold the other writer back")
                other.run(lambda t: t.put("quotas", "p", {"id": "p", "port": 1}))
                txn.put("ports", "p1", {"id": "p1"})
    finally:
        other.close()


def test_change_hint_moves_on_a_commit_from_another_store_object(store, store_url):
    hint = store.change_hint()
    other = open_store(store_url, migrate=False)
    try:
        with other.transaction() as txn:
            txn.put("networks", "n", {"id": "n"})
    finally:
        other.close()
    time.sleep(0.05)   # past the etcd store's hint cache
    assert store.change_hint() != hint


def test_ensure_secret_is_made_once(store, store_url):
    first = ensure_secret(store, "s")
    other = open_store(store_url, migrate=False)
    try:
        assert ensure_secret(other, "s") == first and len(first) == 32
    finally:
        other.close()


# -- etcd only ------------------------------------------------------------------

def test_url_parsing():
    assert parse_url("etcd://a:1,[::1]:2") == ([("a", 1), ("::1", 2)], "vmflow")
    assert parse_url("etcd://a:1/other/") == ([("a", 1)], "other")
    for bad in ("etcd://", "etcd://a", "etcd://a:x", "http://a:1"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_a_write_that_loses_the_race_conflicts_and_run_runs_it_again(two_etcd_clients):
    a, b = two_etcd_clients
    with pytest.raises(TxnConflict):
        with a.transaction() as txn:
            txn.get("networks", "n")
            with b.transaction() as other:
                other.put("networks", "n", {"id": "n", "by": "b"})
            txn.put("networks", "n", {"id": "n", "by": "a"})
    with a.read() as r:
        assert r.get("networks", "n") == {"id": "n", "by": "b"}   # nothing of a's

    calls = []

    def bump(txn):
        doc = txn.get("networks", "n")
        calls.append(doc["v"] if "v" in doc else 0)
        if len(calls) == 1:   # another writer commits in between, once
            b.run(lambda t: t.put("networks", "n", {"id": "n", "v": 10}))
        txn.put("networks", "n", {"id": "n", "v": doc.get("v", 0) + 1})
        return doc
    a.run(bump)
    assert calls == [0, 10]
    with a.read() as r:
        assert r.get("networks", "n")["v"] == 11   # both increments, none lost


def test_a_write_that_read_nothing_another_changed_commits_after_it_without_running_again(two_etcd_clients):
    a, b = two_etcd_clients
    rev = a.revision()
    calls = []

    def create(txn):
        calls.append(1)
        assert txn.get("ports", "pa") is None and txn.claim_owner("mac", "ma") is None
        assert [d["id"] for d in txn.list("networks")] == ["n"]
        if len(calls) == 1:   # other writes commit in between, touching nothing read here
            b.run(lambda t: (t.put("ports", "pb", {"id": "pb"}), t.claim("mac", "mb", "port:pb")))
            b.run(lambda t: t.put("routers", "r", {"id": "r"}))
        txn.put("ports", "pa", {"id": "pa"})
        txn.claim("mac", "ma", "port:pa")
    with b.transaction() as txn:
        txn.put("networks", "n", {"id": "n"})
    a.run(create)
    assert len(calls) == 1   # sequenced after the others, not run again
    changes = a.changes_since(rev)
    assert [(c.revision, c.id) for c in changes] == [
        (rev + 1, "n"), (rev + 2, "pb"), (rev + 3, "r"), (rev + 4, "pa")]
    assert a.revision() == rev + 4
    with a.read() as r:   # creation order follows the revision it committed as
        assert [d["id"] for d in r.list("ports")] == ["pb", "pa"]


@pytest.mark.parametrize("change", ["add", "update", "delete"])
def test_a_change_in_a_range_the_write_listed_conflicts(two_etcd_clients, change):
    a, b = two_etcd_clients
    b.run(lambda t: (t.put("subnets", "s1", {"id": "s1"}), t.put("subnets", "s2", {"id": "s2"})))
    other = {"add": lambda t: t.put("subnets", "s3", {"id": "s3"}),
             "update": lambda t: t.put("subnets", "s2", {"id": "s2", "v": 2}),
             "delete": lambda t: t.delete("subnets", "s2")}[change]
    with pytest.raises(TxnConflict):
        with a.transaction() as txn:
            seen = [d["id"] for d in txn.list("subnets")]
            b.run(other)
            txn.put("ports", "p", {"id": "p", "subnets": seen})
    with a.read() as r:
        assert r.get("ports", "p") is None


def test_a_write_that_counted_conflicts_with_any_other_write(two_etcd_clients):
    a, b = two_etcd_clients
    with pytest.raises(TxnConflict):
        with a.transaction() as txn:
            n = txn.count("ports", project_id="p")
            b.run(lambda t: t.put("routers", "r", {"id": "r"}))
            txn.put("ports", "p1", {"id": "p1", "n": n}, project_id="p")


def test_concurrent_transactions_allocate_different_keys_without_conflict(two_etcd_clients):
    a, b = two_etcd_clients
    with a.transaction() as ta:
        ka = ta.allocate_key("port-key", "port:a", low=1, high=10)
        with b.transaction() as tb:
            kb = tb.allocate_key("port-key", "port:b", low=1, high=10)
    with a.transaction() as ta:
        kc = ta.allocate_key("port-key", "port:c", low=1, high=10)
    assert (ka, kb, kc) == (1, 2, 3)
    with pytest.raises(RuntimeError):   # a transaction that fails skips its key
        with a.transaction() as ta:
            ta.allocate_key("port-key", "port:d", low=1, high=10)
            raise RuntimeError("boom")
    with a.transaction() as ta:
        assert ta.allocate_key("port-key", "port:e", low=1, high=10) == 5
    with a.read() as r:
        assert r.claimed_keys("port-key") == {"1", "2", "3", "5"}


def test_a_put_unread_over_a_document_made_meanwhile_keeps_its_place_and_index(two_etcd_clients):
    a, b = two_etcd_clients
    b.run(lambda t: t.put("ports", "first", {"id": "first"}))
    with a.transaction() as txn:
        txn.claim("mac", "m", "port:x")   # a read, so the snapshot is taken before b's write
        b.run(lambda t: t.put("ports", "x", {"id": "x", "by": "b"}, project_id="p1"))
        b.run(lambda t: t.put("ports", "last", {"id": "last"}))
        txn.put("ports", "x", {"id": "x", "by": "a"}, project_id="p2")
    with a.read() as r:
        assert r.get("ports", "x") == {"id": "x", "by": "a"}
        assert [d["id"] for d in r.list("ports")] == ["first", "x", "last"]
        assert r.count("ports", project_id="p1") == 0 and r.count("ports", project_id="p2") == 1
    many = [f"p{i}" for i in range(150)]   # more than a commit compares: read after all
    with a.transaction() as txn:
        for id in many:
            txn.put("ports", id, {"id": id}, project_id="p1")
    with a.read() as r:
        assert r.count("ports", project_id="p1") == 150 and len(r.list("ports")) == 153


def test_a_key_claimed_at_the_cursor_after_the_snapshot_is_not_allocated_again(two_etcd_clients):
    a, b = two_etcd_clients
    def body(txn):
        txn.claim("mac", "m", "port:a")   # the snapshot, before b's claim
        if b.run(lambda t: t.claim_owner("port-key", "1")) is None:
            b.run(lambda t: t.claim("port-key", "1", "port:b"))
        return txn.allocate_key("port-key", "port:a", low=1, high=10)
    key = a.run(body)
    with a.read() as r:
        assert key != 1 and r.claim_owner("port-key", "1") == "port:b"
        assert r.claim_owner("port-key", str(key)) == "port:a"


def test_a_write_that_keeps_losing_gives_up_with_txn_conflict(cluster):
    url = fresh_url(cluster)
    a, b = open_store(url, timeout_s=0.5), open_store(url, migrate=False)
    try:
        def always_beaten(txn):
            txn.get("networks", "n")
            b.run(lambda t: t.put("networks", "n", {"id": "n", "t": time.time()}))
            txn.put("networks", "n", {"id": "n", "by": "a"})
        t0 = time.monotonic()
        with pytest.raises(TxnConflict):
            a.run(always_beaten)
        assert time.monotonic() - t0 < 5
    finally:
        a.close()
        b.close()


def _claim_and_count(url, worker, n, out):
    store = open_store(url, migrate=False)
    won = 0
    for i in range(n):
        def body(txn):
            txn.claim("mac", f"m{i}", f"port:{worker}")
            txn.put("ports", f"{worker}-{i}", {"i": i})
            counter = txn.get("counters", "c") or {"id": "c", "n": 0}
            txn.put("counters", "c", {**counter, "n": counter["n"] + 1})
        try:
            store.run(body)
            won += 1
        except Conflict:
            pass
    store.close()
    out.put(won)


def test_processes_racing_for_the_same_claims_win_each_once_and_lose_no_write(cluster):
    url = fresh_url(cluster)
    open_store(url).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_and_count, args=(url, w, 40, out)) for w in range(4)]
    for p in procs:
        p.start()
    wins = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(10)
    s = open_store(url, migrate=False)
    with s.read() as r:
        assert wins == 40 == len(r.claimed_keys("mac")) == len(r.list("ports"))
        assert r.get("counters", "c")["n"] == 40   # read-modify-write, never lost
    s.close()


def test_the_follower_resyncs_when_the_feed_was_compacted_past_it(cluster):
    from controller.follower import RESYNC, StoreFollower
    url = fresh_url(cluster)
    endpoints, prefix = parse_url(url)
    store = EtcdStore(endpoints, prefix=prefix, history=3, compact_every=5)
    counters = Counter()
    follower = StoreFollower(store, counters)
    with store.transaction() as txn:
        txn.put("networks", "n0", {"id": "n0"})
    assert follower.poll() == RESYNC and set(follower.view.networks) == {"n0"}
    with store.transaction() as txn:
        txn.put("networks", "n1", {"id": "n1"})
    assert [c.id for c, _ in follower.poll()] == ["n1"]
    for i in range(2, 12):
        with store.transaction() as txn:
            txn.put("networks", f"n{i}", {"id": f"n{i}"})
    with pytest.raises(HistoryCompacted):
        store.changes_since(follower.view.revision)
    assert follower.poll() == RESYNC and counters["resyncs"] == 1
    assert set(follower.view.networks) == {f"n{i}" for i in range(12)}
    assert follower.view.revision == store.revision() == 12
    store.close()


def test_member_loss_loses_nothing_quorum_loss_is_a_store_error_and_recovery_converges():
    from controller.follower import RESYNC, StoreFollower
    with EtcdCluster(3) as c:
        store = open_store(c.store_url, timeout_s=1.0)
        follower = StoreFollower(store, Counter())
        assert follower.poll() == RESYNC
        for i in range(5):
            store.run(lambda txn, i=i: txn.put("networks", f"a{i}", {"id": f"a{i}"}))

        c.kill_member(0)                       # one of three: nothing is lost
        # If it led, the others elect a new leader first (etcd /health is
        # true once a member has one); a write in that window, under this
        # store's 1 s timeout, may be a StoreError (a 503 from the API) once.
        c.wait_healthy(10, members=[1, 2])
        for i in range(5):
            store.run(lambda txn, i=i: txn.put("networks", f"b{i}", {"id": f"b{i}"}))
        with store.read() as r:
            assert len(r.list("networks")) == 10
        assert len(follower.poll()) == 10 and follower.store_ok

        c.kill_member(1)                       # no quorum: errors, quickly, never a hang
        t0 = time.monotonic()
        with pytest.raises(StoreError):
            store.run(lambda txn: txn.put("networks", "lost", {"id": "lost"}))
        with pytest.raises(StoreError):
            with store.read() as r:
                r.list("networks")
        assert time.monotonic() - t0 < 6
        assert follower.poll() is None and not follower.store_ok
        assert len(follower.view.networks) == 10     # the controller keeps its view

        c.start_member(0, state="existing")
        c.start_member(1, state="existing")
        c.wait_healthy(30)
        deadline = time.monotonic() + 20
        while True:
            try:
                store.run(lambda txn: txn.put("networks", "c0", {"id": "c0"}))
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with store.read() as r:
            assert {d["id"] for d in r.list("networks")} == \
                {f"a{i}" for i in range(5)} | {f"b{i}" for i in range(5)} | {"c0"}
        changes = follower.poll()
        assert follower.store_ok and [ch.id for ch, _ in changes] == ["c0"]
        assert set(follower.view.networks) == {d["id"] for d in store.snapshot()[1]["networks"].values()}
        store.close()
