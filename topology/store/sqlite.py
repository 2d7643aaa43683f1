"""The embedded store: one SQLite file in WAL mode.

Several processes (gunicorn workers, the controller) open the same file. A
write transaction starts with BEGIN IMMEDIATE, so writers queue on SQLite's
lock instead of failing half-way, and readers never block (WAL).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from typing import Iterator, Optional

from topology.store.base import (Change, Conflict, Document, HistoryCompacted,
                                 ReadTxn, Store, StoreError, Txn, pick_key)

# Versioned schema: each entry upgrades from the version before it. Never edit
# a shipped entry; add a new one.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE resources (
            kind TEXT NOT NULL, id TEXT NOT NULL,
            project_id TEXT, parent_id TEXT,
            body TEXT NOT NULL, revision INTEGER NOT NULL,
            PRIMARY KEY (kind, id));
        CREATE INDEX resources_project ON resources (kind, project_id);
        CREATE INDEX resources_parent ON resources (kind, parent_id);
        CREATE TABLE claims (
            namespace TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
            PRIMARY KEY (namespace, key));
        CREATE INDEX claims_owner ON claims (owner);
        CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            revision INTEGER NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
            op TEXT NOT NULL, body TEXT);
        CREATE INDEX changes_revision ON changes (revision);
        INSERT INTO meta (key, value) VALUES ('revision', 0);
        INSERT INTO meta (key, value) VALUES ('compacted_before', 0);
    """),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# How many revisions of history the change feed keeps. A follower further
# behind than this resyncs from a snapshot.
DEFAULT_HISTORY = 200_000


def path_from_url(url: str) -> str:
    """sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy spells it."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite:///"):]
    if not path:
        raise ValueError("sqlite URL has no file path")
    return path


class _SqliteRead(ReadTxn):
    def __init__(self, conn: sqlite3.Connection):
        self._c = conn

    def get(self, kind: str, id: str) -> Optional[Document]:
        row = self._c.execute("SELECT body FROM resources WHERE kind=? AND id=?",
                              (kind, id)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind, *, project_id=None, parent_id=None):
        sql = "SELECT body FROM resources WHERE kind=?"
        args: list = [kind]
        if project_id is not None:
            sql += " AND project_id=?"
            args.append(project_id)
        if parent_id is not None:
            sql += " AND parent_id=?"
            args.append(parent_id)
        return [json.loads(r[0]) for r in self._c.execute(sql + " ORDER BY rowid", args)]

    def count(self, kind, *, project_id=None):
        if project_id is None:
            return self._c.execute("SELECT COUNT(*) FROM resources WHERE kind=?", (kind,)).fetchone()[0]
        return self._c.execute("SELECT COUNT(*) FROM resources WHERE kind=? AND project_id=?",
                               (kind, project_id)).fetchone()[0]

    def claim_owner(self, namespace, key):
        row = self._c.execute("SELECT owner FROM claims WHERE namespace=? AND key=?",
                              (namespace, key)).fetchone()
        return row[0] if row else None

    def claimed_keys(self, namespace):
        return {r[0] for r in self._c.execute(
            "SELECT key FROM claims WHERE namespace=?", (namespace,))}

    def revision(self) -> int:
        return self._c.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]


class _SqliteTxn(_SqliteRead, Txn):
    def __init__(self, conn: sqlite3.Connection):
        super().__init__(conn)
        self._revision: Optional[int] = None

    def _next_revision(self) -> int:
        if self._revision is None:
            self._revision = self.revision() + 1
            self._c.execute("UPDATE meta SET value=? WHERE key='revision'", (self._revision,))
        return self._revision

    def put(self, kind, id, body, *, project_id=None, parent_id=None):
        rev = self._next_revision()
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        self._c.execute(
            "INSERT INTO resources (kind, id, project_id, parent_id, body, revision) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (kind, id) DO UPDATE SET "
            "project_id=excluded.project_id, parent_id=excluded.parent_id, "
            "body=excluded.body, revision=excluded.revision",
            (kind, id, project_id, parent_id, text, rev))
        self._c.execute("INSERT INTO changes (revision, kind, id, op, body) VALUES (?,?,?,?,?)",
                        (rev, kind, id, "put", text))

    def delete(self, kind, id):
        cur = self._c.execute("DELETE FROM resources WHERE kind=? AND id=?", (kind, id))
        if cur.rowcount:
            rev = self._next_revision()
            self._c.execute("INSERT INTO changes (revision, kind, id, op, body) "
                            "VALUES (?,?,?,?,NULL)", (rev, kind, id, "delete"))

    def claim(self, namespace, key, owner):
        try:
            self._c.execute("INSERT INTO claims (namespace, key, owner) VALUES (?,?,?)",
                            (namespace, key, owner))
        except sqlite3.IntegrityError:
            current = self.claim_owner(namespace, key)
            if current != owner:
                raise Conflict(namespace, key, current or "?") from None

    def release(self, namespace, key):
        self._c.execute("DELETE FROM claims WHERE namespace=? AND key=?", (namespace, key))

    def release_owner(self, owner):
        self._c.execute("DELETE FROM claims WHERE owner=?", (owner,))

    def allocate_key(self, namespace, owner, *, low=1, high=0xFFFF):
        cursor_key = f"next:{namespace}"
        row = self._c.execute("SELECT value FROM meta WHERE key=?", (cursor_key,)).fetchone()
        start = row[0] if row and low <= row[0] <= high else low
        candidate = pick_key(namespace, start, low, high,
                             lambda k: self.claim_owner(namespace, k),
                             lambda: self.claimed_keys(namespace))
        self.claim(namespace, str(candidate), owner)
        nxt = candidate + 1 if candidate < high else low
        self._c.execute("INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT (key) "
                        "DO UPDATE SET value=excluded.value", (cursor_key, nxt))
        return candidate


class SqliteStore(Store):
    def __init__(self, path: str, *, history: int = DEFAULT_HISTORY, busy_timeout_s: float = 30.0,
                 migrate: bool = True):
        self.path = path
        self.history = history
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        # migrate=False: someone else (the API's master) has migrated, and
        # this opens nothing until first used.
        if migrate:
            self._migrate()

    @classmethod
    def from_url(cls, url: str, **kw) -> "SqliteStore":
        return cls(path_from_url(url), **kw)

    # A connection per thread and per process: sqlite3 connections must not
    # cross a fork (gunicorn) or be shared between threads.
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                   isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against a process crash; a power
            # loss may drop the last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        self._local.conn = conn
        self._local.lock_fd = lock_fd
        self._local.pid = os.getpid()
        return conn

    def _migrate(self) -> None:
        conn = self._conn()
        with self._immediate(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"store schema {version} is newer than this vmflow ({SCHEMA_VERSION})")
            for number, sql in MIGRATIONS:
                if number > version:
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={number}")

    @contextlib.contextmanager
    def _immediate(self, conn: sqlite3.Connection) -> Iterator[None]:
        # Writers queue on an flock first: the kernel wakes the next one the
        # moment the lock is free, where SQLite's busy handler would sleep
        # (up to 100 ms a time) and poll. A dead process's flock is released
        # by the kernel, so a crash never wedges the store.
        #
        # The wait is bounded by busy_timeout_s from here, not per stage: a
        # writer that got the flock late waits on SQLite only for what is
        # left, and one whose time is up gives up before starting, so queued
        # writers behind a stalled one (say, another process holding SQLite's
        # lock) fail together instead of one busy_timeout after another. The
        # flock itself has no timeout: its holder is a vmflow writer, bounded
        # the same way (a stopped API worker is killed by gunicorn after
        # api.timeout). Waiting for it in a helper thread instead cost ~0.7 ms
        # of CPU a contended write (bench/api.py).
        deadline = time.monotonic() + self.busy_timeout_s
        fcntl.flock(self._local.lock_fd, fcntl.LOCK_EX)
        try:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise StoreError("store busy: timed out waiting for the other writers")
            try:
                conn.execute(f"PRAGMA busy_timeout={left_ms}")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"store busy or unavailable: {e}") from e
            # All of the transaction commits, or none of it: any failure
            # inside, the COMMIT's own included, rolls it all back.
            try:
                yield
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"store busy or unavailable: {e}") from e
                raise
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            fcntl.flock(self._local.lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Txn]:
        conn = self._conn()
        with self._immediate(conn):
            txn = _SqliteTxn(conn)
            yield txn
            if txn._revision is not None and txn._revision % 1000 == 0:
                self._compact(conn, txn._revision)

    def _compact(self, conn: sqlite3.Connection, revision: int) -> None:
        floor = revision - self.history
        if floor > 0:
            conn.execute("DELETE FROM changes WHERE revision <= ?", (floor,))
            conn.execute("UPDATE meta SET value=? WHERE key='compacted_before'", (floor,))

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        conn = self._conn()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as e:
            raise StoreError(f"store unavailable: {e}") from e
        try:
            yield _SqliteRead(conn)
        except sqlite3.Error as e:
            # A read that waited out busy_timeout (a writer in another
            # process holding an exclusive lock): the caller may retry.
            raise StoreError(f"store busy or unavailable: {e}") from e
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def revision(self) -> int:
        try:
            return self._conn().execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e

    def change_hint(self) -> int:
        # PRAGMA data_version moves when another connection commits (any
        # process), reading only the WAL index in shared memory: a few
        # microseconds. It never moves for its own connection's commits, so
        # it is asked on a connection of its own that never writes.
        conn = getattr(self._local, "hint_conn", None)
        try:
            if conn is None or self._local.hint_pid != os.getpid():
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                       isolation_level=None, check_same_thread=True)
                self._local.hint_conn = conn
                self._local.hint_pid = os.getpid()
            return conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e

    def changes_since(self, revision: int, limit: int = 10000) -> list[Change]:
        try:
            with self.read() as r:
                conn = r._c  # type: ignore[attr-defined]
                floor = conn.execute("SELECT value FROM meta WHERE key='compacted_before'").fetchone()[0]
                if revision < floor:
                    raise HistoryCompacted(f"changes before revision {floor} were compacted")
                rows = conn.execute(
                    "SELECT seq, revision, kind, id, op, body FROM changes WHERE revision > ? "
                    "ORDER BY seq LIMIT ?", (revision, limit)).fetchall()
                if len(rows) == limit:
                    # Never split a revision: a follower resumes after the last whole one.
                    last_seq, last_rev = rows[-1][0], rows[-1][1]
                    rows += conn.execute(
                        "SELECT seq, revision, kind, id, op, body FROM changes "
                        "WHERE revision = ? AND seq > ? ORDER BY seq", (last_rev, last_seq)).fetchall()
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e
        return [Change(rev, kind, id, op, json.loads(body) if body else None)
                for _seq, rev, kind, id, op, body in rows]

    def snapshot(self):
        try:
            with self.read() as r:
                conn = r._c  # type: ignore[attr-defined]
                rev = r.revision()
                data: dict[str, dict[str, Document]] = {}
                for kind, id, body in conn.execute("SELECT kind, id, body FROM resources ORDER BY rowid"):
                    data.setdefault(kind, {})[id] = json.loads(body)
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e
        return rev, data

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            os.close(self._local.lock_fd)
            self._local.conn = None
        hint_conn = getattr(self._local, "hint_conn", None)
        if hint_conn is not None:
            hint_conn.close()
            self._local.hint_conn = None


def open_store(url: str, *, timeout_s: Optional[float] = None, migrate: bool = True) -> Store:
    """The store named by a URL: sqlite:///path, or etcd://host:port[,host:port...].

    timeout_s: how long a read or write may wait on a lock before StoreError.
    migrate=False: the schema is known to be current; touch nothing yet.
    """
    if url.startswith("sqlite:///"):
        kw: dict = {"migrate": migrate}
        if timeout_s is not None:
            kw["busy_timeout_s"] = timeout_s
        return SqliteStore.from_url(url, **kw)
    if url.startswith("etcd://"):
        # Imported here: gRPC is loaded only by processes that use etcd.
        from topology.store.etcd import EtcdStore
        kw = {"migrate": migrate}
        if timeout_s is not None:
            kw["timeout_s"] = timeout_s
        return EtcdStore.from_url(url, **kw)
    raise ValueError(f"unsupported store URL {url!r} (expected sqlite:///PATH or "
                     f"etcd://HOST:PORT[,HOST:PORT...])")
