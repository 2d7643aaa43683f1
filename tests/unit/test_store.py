"""The SQLite store: whole-or-nothing transactions, revisions, feed, claims, keys."""
from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from topology.store import SqliteStore, open_store
from topology.store.base import Conflict, HistoryCompacted
from topology.store.sqlite import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def test_put_get_list_by_project_and_parent(store):
    with store.transaction() as txn:
        txn.put("networks", "n1", {"id": "n1"}, project_id="p1")
        txn.put("ports", "a", {"id": "a", "network_id": "n1"}, project_id="p1", parent_id="n1")
        txn.put("ports", "b", {"id": "b", "network_id": "n2"}, project_id="p2", parent_id="n2")
    with store.read() as r:
        assert r.get("networks", "n1") == {"id": "n1"}
        assert r.get("networks", "zz") is None
        assert [d["id"] for d in r.list("ports")] == ["a", "b"]
        assert [d["id"] for d in r.list("ports", parent_id="n1")] == ["a"]
        assert [d["id"] for d in r.list("ports", project_id="p2")] == ["b"]


def test_failed_transaction_writes_nothing(store):
    rev = store.revision()
    with pytest.raises(RuntimeError):
        with store.transaction() as txn:
            txn.put("networks", "n1", {"id": "n1"})
            txn.claim("mac", "fa:16:3e:00:00:01", "port:x")
            raise RuntimeError("boom")
    assert store.revision() == rev
    with store.read() as r:
        assert r.get("networks", "n1") is None
        assert r.claim_owner("mac", "fa:16:3e:00:00:01") is None
    assert store.changes_since(rev) == []


def test_change_hint_moves_on_every_commit_and_only_then(store, tmp_path):
    """The controller reads the feed only when the hint moves: it must move for
    commits from this store object, another one (another process) alike."""
    hint = store.change_hint()
    assert store.change_hint() == hint
    with store.read() as r:
        r.revision()
    assert store.change_hint() == hint                  # a read is not a change
    with store.transaction() as txn:
        txn.put("networks", "n1", {"id": "n1"})
    moved = store.change_hint()
    assert moved != hint
    other = SqliteStore(str(tmp_path / "s.db"))
    try:
        with other.transaction() as txn:
            txn.put("networks", "n2", {"id": "n2"})
    finally:
        other.close()
    assert store.change_hint() != moved


def test_claims(store):
    with store.transaction() as txn:
        txn.claim("mac", "m1", "port:a")
        txn.claim("mac", "m1", "port:a")  # same owner: no-op
        txn.claim("mac", "m2", "port:a")
        txn.claim("ip:s1", "10.0.0.2", "port:a")
        with pytest.raises(Conflict) as e:
            txn.claim("mac", "m1", "port:b")
        assert e.value.owner == "port:a"
    with store.transaction() as txn:
        assert txn.claimed_keys("mac") == {"m1", "m2"}
        txn.release("mac", "m2")
        assert txn.claimed_keys("mac") == {"m1"}
        txn.release_owner("port:a")
        assert txn.claimed_keys("mac") == set() and txn.claimed_keys("ip:s1") == set()


def test_allocate_key_rises_wraps_and_fills(store):
    with store.transaction() as txn:
        keys = [txn.allocate_key("k", f"o{i}", low=1, high=4) for i in range(3)]
        assert keys == [1, 2, 3]
        txn.release_owner("o0")
        # a freed key is not handed out again straight away
        assert txn.allocate_key("k", "o3", low=1, high=4) == 4
        assert txn.allocate_key("k", "o4", low=1, high=4) == 1
        with pytest.raises(Conflict):
            txn.allocate_key("k", "o5", low=1, high=4)


def test_history_compaction(tmp_path):
    s = SqliteStore(str(tmp_path / "c.db"), history=10)
    for i in range(1000):
        with s.transaction() as txn:
            txn.put("networks", "n", {"id": "n", "i": i})
    with pytest.raises(HistoryCompacted):
        s.changes_since(0)
    assert [c.revision for c in s.changes_since(995)] == [996, 997, 998, 999, 1000]
    s.close()


def test_schema_version_and_refuses_newer(tmp_path):
    path = str(tmp_path / "m.db")
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    from topology.store.base import StoreError
    with pytest.raises(StoreError):
        SqliteStore(path)


def test_open_store_urls(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/u.db")
    assert s.revision() == 0
    s.close()
    for bad in ("etcd://x", "sqlite:///", "postgres://x"):
        with pytest.raises(ValueError):
            open_store(bad)


def _claim_many(path, worker, n, out):
    s = SqliteStore(path)
    won = 0
    for i in range(n):
        try:
            with s.transaction() as txn:
                txn.claim("mac", f"m{i}", f"port:{worker}")
                txn.put("ports", f"{worker}-{i}", {"i": i})
            won += 1
        except Conflict:
            pass
    out.put(won)


def test_processes_racing_for_claims_each_key_won_once(tmp_path):
    path = str(tmp_path / "race.db")
    SqliteStore(path).close()
    out = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_claim_many, args=(path, w, 200, out))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    wins = sum(out.get(timeout=5) for _ in procs)
    s = SqliteStore(path)
    with s.read() as r:
        assert wins == 200 == len(r.claimed_keys("mac")) == len(r.list("ports"))
    s.close()


def test_reading_a_store_locked_by_another_process_is_a_store_error(tmp_path):
    import sqlite3

    from topology.store.base import StoreError

    path = str(tmp_path / "s.db")
    store = SqliteStore(path, busy_timeout_s=0.2)
    with store.transaction() as txn:
        txn.put("networks", "a", {"id": "a"})
    store.close()
    # Out of WAL mode, a writer's exclusive lock blocks readers too.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError):
            with store.read() as r:
                r.list("networks")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.close()
