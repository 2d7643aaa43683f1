"""The scale-out store: an etcd v3 cluster, spoken to over gRPC.

Several API processes on several machines and several controllers share it.
Everything lives under one prefix (/vmflow/ by default):

    d/KIND/ID                  a document: {"b": body, "p": project, "n": parent,
                               "o": [revision, n]: created n-th by that write}
    i/KIND/PROJECT/ID          empty; counts a project's documents without reading them
    c/NAMESPACE/KEY            a claim: the owner
    o/OWNER/NAMESPACE/KEY      empty; the claims an owner holds, for release_owner
    l/REVISION                 the change feed: the changes one write made
    m/rev, m/compacted, m/schema, m/next:NAMESPACE   counters and cursors

(each path component URL-quoted, so a "/" in an id cannot shift the
others). The prefix is the URL's path (etcd://h:p,h:p/NAME): several stores
can share one cluster.

Transactions are optimistic. Every read of one transaction is taken at one
etcd revision (a consistent snapshot: the first read fixes it, and brings
m/rev along); reads a caller announces (prefetch) go out together, as one
etcd Txn of ranges. Writes are kept in the transaction and sent at the end
as one etcd Txn that also bumps m/rev, guarded by compares: every key and
range the transaction read is as it was at its snapshot, and m/rev is as
last seen. If a key it read changed, nothing is written: TxnConflict, and
Store.run() runs the body again on fresh reads; a write is retried, or
after the store's timeout refused (409), never lost. If only m/rev moved,
another write committed that touched nothing this one read, so this one
holds after it too: the same Txn's failure branch reads m/rev back and the
writes are sent again after it, without running the body. m/rev is still
compared and moved by every commit, so writers are serialised on one key
at their commit, as SQLite's single writer lock serialises them, and every
claim (MAC, IP, VLAN id, key) is atomic across processes and machines. A
transaction that read more than a Txn can compare, or counted (a count has
no keys to compare), asks instead that no write at all came since its
snapshot. Key cursors move by their own compare-and-swap when a key is
taken, so concurrent creates take different keys. Within a process, write
transactions also queue on a lock, so threads of one API worker do not
throw away each other's work.

The store revision is m/rev, one per committed write, and the change feed
is l/: each write transaction stores its changes under its revision, in the
same etcd Txn as the write itself. The feed is ranged, not watched: a
follower asks "after N" exactly as it asks SQLite, deletions included, and
HistoryCompacted (older than m/compacted) makes it resync from a snapshot.
It does not depend on etcd's own compaction, which operators configure
(--auto-compaction-retention) for etcd's MVCC history.

Every RPC has a deadline (the store timeout). A member that refuses the
connection is skipped for the next; a cluster without quorum cannot answer
a linearizable read or a write in time: StoreError, which the API answers
with 503 and Retry-After. The channels and the failover are
topology/etcd_rpc.py's, shared with the controllers' membership.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from typing import Any, Callable, Iterator, Optional, TypeVar
from urllib.parse import quote, unquote

from topology.etcd_rpc import Connection, etcdrpc, prefix_end
from topology.store.base import (Change, Conflict, Document, HistoryCompacted,
                                 ReadTxn, Store, StoreError, Txn, TxnConflict,
                                 pick_key)

DEFAULT_PREFIX = "vmflow"
SCHEMA_VERSION = 1
# Revisions of change feed kept. Each is one etcd key holding a write's
# changes; a follower further behind resyncs from a snapshot.
DEFAULT_HISTORY = 20_000
COMPACT_EVERY = 1000
DEFAULT_TIMEOUT_S = 5.0
# change_hint() answers from the last m/rev read for this long: a follower
# polling every few ms would otherwise cost an RPC each time.
HINT_CACHE_S = 0.02
# The longest pause before running a conflicting transaction again: about
# the length of one, so a loser is ready as soon as the winner commits.
RETRY_MAX_S = 0.01
MIN_ATTEMPTS = 3
# Most compares a commit makes to check its reads (etcd refuses a Txn of
# more than --max-txn-ops, 128 by default, compares); a transaction that
# read more checks that nothing at all was written since (m/rev).
MAX_READ_CHECKS = 100

T = TypeVar("T")

def parse_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """etcd://host:port[,host:port...][/PREFIX] -> ([(host, port), ...], PREFIX).

    The prefix (default "vmflow") lets several vmflow stores share a cluster."""
    if not url.startswith("etcd://"):
        raise ValueError(f"not an etcd URL: {url!r}")
    rest, _, prefix = url[len("etcd://"):].partition("/")
    prefix = prefix.strip("/") or DEFAULT_PREFIX
    out = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"etcd URL {url!r}: {part!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out, prefix


def _q(text: str) -> bytes:
    return quote(str(text), safe="").encode()


class Keys:
    """Every key of one vmflow store, under its prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX):
        self.root = b"/" + _q(prefix) + b"/"
        self.rev = self.root + b"m/rev"
        self.compacted = self.root + b"m/compacted"
        self.schema = self.root + b"m/schema"
        self.log_prefix = self.root + b"l/"
        self.docs = self.root + b"d/"

    def doc(self, kind: str, id: str) -> bytes:
        return self.docs + _q(kind) + b"/" + _q(id)

    def kind(self, kind: str) -> bytes:
        return self.docs + _q(kind) + b"/"

    def project_index(self, kind: str, project: str, id: str = "") -> bytes:
        return self.root + b"i/" + _q(kind) + b"/" + _q(project) + b"/" + (_q(id) if id else b"")

    def claim(self, namespace: str, key: str = "") -> bytes:
        return self.root + b"c/" + _q(namespace) + b"/" + (_q(key) if key else b"")

    def owner(self, owner: str, namespace: str = "", key: str = "") -> bytes:
        base = self.root + b"o/" + _q(owner) + b"/"
        return base + _q(namespace) + b"/" + _q(key) if namespace else base

    def log(self, revision: int) -> bytes:
        return self.log_prefix + b"%020d" % revision

    def meta(self, name: str) -> bytes:
        return self.root + b"m/" + _q(name)


def _put(key: bytes, value: bytes) -> etcdrpc.RequestOp:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))


def _delete(key: bytes, range_end: bytes = b"") -> etcdrpc.RequestOp:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
        key=key, range_end=range_end))


def _get(key: bytes) -> etcdrpc.RequestOp:
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))


def _mod_is(key: bytes, mod_revision: int, range_end: bytes = b"",
            result=etcdrpc.Compare.EQUAL) -> etcdrpc.Compare:
    """key's mod revision compared (0: the key does not exist)."""
    return etcdrpc.Compare(key=key, range_end=range_end, target=etcdrpc.Compare.MOD,
                           result=result, mod_revision=mod_revision)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class _EtcdRead(ReadTxn):
    """Reads at one etcd revision, fixed by the first of them. What was read
    at that revision cannot change, so each range is asked once."""

    def __init__(self, conn: Connection, keys: Keys):
        self._conn = conn
        self.k = keys
        self._at = 0   # etcd revision of the snapshot; 0 until the first read
        self._seen: dict[tuple, Any] = {}

    def _range(self, key: bytes, range_end: bytes = b"", **kw):
        memo = (key, range_end, tuple(sorted(kw.items())))
        if memo not in self._seen:
            self._fetch([memo])
        return self._seen[memo]

    def _first_reads(self) -> list[tuple]:
        """Ranges the view's first read brings along."""
        return []

    def _fetch(self, memos: list[tuple]) -> None:
        """Ranges (key, range_end, sorted options), those not read yet, in one
        RPC: a Range, or a Txn of Ranges, which etcd answers at one revision.

        The first read is linearizable: it fixes a revision no older than
        any write already acknowledged. The rest read that revision, which
        no member can answer differently, so from the member's own copy
        (serializable: no round to the leader). A member that has not
        applied it yet refuses (OUT_OF_RANGE), a conflict run again."""
        if not self._at:
            memos = list(memos) + self._first_reads()
        memos = [m for m in dict.fromkeys(memos) if m not in self._seen]
        if not memos:
            return
        reqs = [etcdrpc.RangeRequest(key=key, range_end=end, revision=self._at,
                                     serializable=bool(self._at), **dict(kw))
                for key, end, kw in memos]
        if len(reqs) == 1:
            answers = [self._conn.call("Range", reqs[0])]
            header = answers[0].header
        else:
            resp = self._conn.call("Txn", etcdrpc.TxnRequest(
                success=[etcdrpc.RequestOp(request_range=r) for r in reqs]), readonly=True)
            answers = [op.response_range for op in resp.responses]
            header = resp.header
        if not self._at:
            self._at = header.revision
        self._seen.update(zip(memos, answers))

    def prefetch(self, docs=(), claims=(), kinds=()):
        self._fetch([(self.k.doc(kind, id), b"", ()) for kind, id in docs if id is not None]
                    + [(self.k.claim(ns, key), b"", ()) for ns, key in claims if key is not None]
                    + [(self.k.kind(kind), prefix_end(self.k.kind(kind)), ()) for kind in kinds])

    def _get_raw(self, key: bytes) -> Optional[bytes]:
        kvs = self._range(key).kvs
        return kvs[0].value if kvs else None

    def _envelope(self, kind: str, id: str) -> Optional[dict]:
        raw = self._get_raw(self.k.doc(kind, id))
        return json.loads(raw) if raw is not None else None

    def _envelopes(self, kind: str) -> list[tuple[str, dict]]:
        """(id, envelope) in creation order, as SQLite lists them."""
        prefix = self.k.kind(kind)
        resp = self._range(prefix, prefix_end(prefix))
        out = [(unquote(kv.key[len(prefix):].decode()), json.loads(kv.value)) for kv in resp.kvs]
        out.sort(key=lambda item: item[1]["o"])
        return out

    def _meta_int(self, key: bytes) -> int:
        raw = self._get_raw(key)
        return int(raw) if raw else 0

    def get(self, kind, id):
        if id is None:   # callers look up optional references as they are
            return None
        env = self._envelope(kind, id)
        return env["b"] if env is not None else None

    def list(self, kind, *, project_id=None, parent_id=None):
        return [env["b"] for _id, env in self._envelopes(kind)
                if (project_id is None or env.get("p") == project_id)
                and (parent_id is None or env.get("n") == parent_id)]

    def count(self, kind, *, project_id=None):
        if project_id is None:
            prefix = self.k.kind(kind)
        else:
            prefix = self.k.project_index(kind, project_id)
        return self._range(prefix, prefix_end(prefix), count_only=True).count

    def claim_owner(self, namespace, key):
        if key is None:
            return None
        raw = self._get_raw(self.k.claim(namespace, key))
        return raw.decode() if raw is not None else None

    def claimed_keys(self, namespace):
        prefix = self.k.claim(namespace)
        resp = self._range(prefix, prefix_end(prefix), keys_only=True)
        return {unquote(kv.key[len(prefix):].decode()) for kv in resp.kvs}

    def _owned(self, owner: str) -> list[tuple[str, str]]:
        prefix = self.k.owner(owner)
        resp = self._range(prefix, prefix_end(prefix), keys_only=True)
        out = []
        for kv in resp.kvs:
            ns, _, key = kv.key[len(prefix):].decode().partition("/")
            out.append((unquote(ns), unquote(key)))
        return out

    def revision(self) -> int:
        return self._meta_int(self.k.rev)


_DELETED = object()


class _EtcdTxn(_EtcdRead, Txn):
    """Reads see the transaction's own writes; the writes go out in commit()."""

    def __init__(self, conn: Connection, keys: Keys):
        super().__init__(conn, keys)
        self._docs: dict[tuple[str, str], Any] = {}     # -> envelope or _DELETED
        self._old_docs: dict[tuple[str, str], Optional[dict]] = {}
        self._claims: dict[tuple[str, str], Optional[str]] = {}
        self._old_claims: dict[tuple[str, str], Optional[str]] = {}
        self._meta: dict[bytes, bytes] = {}
        self._cursors: dict[bytes, tuple[int, int]] = {}   # -> (value, mod revision) we set
        self._changes: list[list] = []
        self._created = 0
        self._saw_revision = False
        self._latest_rev: Optional[tuple[int, int]] = None

    def _first_reads(self) -> list[tuple]:
        return [(self.k.rev, b"", ())]

    def _saw_rev(self, kvs) -> None:
        """m/rev read after the snapshot: the commit's first guess at the
        revision it follows (the later the guess, the likelier it holds)."""
        latest = (kvs[0].mod_revision, int(kvs[0].value)) if kvs else (0, 0)
        if self._latest_rev is None or latest[0] > self._latest_rev[0]:
            self._latest_rev = latest

    def _rev(self) -> tuple[int, int]:
        """m/rev at the snapshot: (its mod revision, the store revision)."""
        kvs = self._range(self.k.rev).kvs
        return (kvs[0].mod_revision, int(kvs[0].value)) if kvs else (0, 0)

    # -- reads through the transaction's writes ----------------------------
    def _current_env(self, kind: str, id: str) -> Optional[dict]:
        k = (kind, id)
        if k in self._docs:
            env = self._docs[k]
            return None if env is _DELETED else env
        if k not in self._old_docs:
            self._old_docs[k] = self._envelope(kind, id)
        return self._old_docs[k]

    def get(self, kind, id):
        if id is None:
            return None
        env = self._current_env(kind, id)
        return json.loads(json.dumps(env["b"])) if env is not None else None

    def list(self, kind, *, project_id=None, parent_id=None):
        mine = {id: env for (k, id), env in self._docs.items() if k == kind}
        out = []
        seen = set()
        for id, env in self._envelopes(kind):
            self._old_docs.setdefault((kind, id), env)
            seen.add(id)
            if id in mine:
                env = mine[id]
                if env is _DELETED:
                    continue
            out.append(env)
        out.extend(env for id, env in mine.items() if id not in seen and env is not _DELETED)
        return [json.loads(json.dumps(env["b"])) for env in out
                if (project_id is None or env.get("p") == project_id)
                and (parent_id is None or env.get("n") == parent_id)]

    def count(self, kind, *, project_id=None):
        if any(k == kind for k, _ in self._docs):
            return len(self.list(kind, project_id=project_id))
        return super().count(kind, project_id=project_id)

    def _current_owner(self, namespace: str, key: str) -> Optional[str]:
        k = (namespace, key)
        if k in self._claims:
            return self._claims[k]
        if k not in self._old_claims:
            self._old_claims[k] = super().claim_owner(namespace, key)
        return self._old_claims[k]

    def claim_owner(self, namespace, key):
        return self._current_owner(namespace, key)

    def claimed_keys(self, namespace):
        keys = super().claimed_keys(namespace)
        for (ns, key), owner in self._claims.items():
            if ns == namespace:
                if owner is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return keys

    def revision(self) -> int:
        # A body that saw the revision may have written it down: its writes
        # must not be sequenced after another (see commit).
        self._saw_revision = True
        return self._rev()[1]

    # -- writes ------------------------------------------------------------
    def put(self, kind, id, body, *, project_id=None, parent_id=None):
        k = (kind, id)
        if k in self._docs or k in self._old_docs:
            old = self._current_env(kind, id)   # its place in the order; its project index
        else:
            # Not read: a new id, as a create's is. Rather than a read now,
            # the commit checks that it is still missing, and if it is not,
            # learns what is there and writes over it (see commit).
            old = None
        if old is not None:
            order = old["o"]
        else:
            # Its place is [the revision this write commits as, n]; that
            # revision is known only when the commit is sequenced (_ops).
            self._created += 1
            order = [None, self._created]
        body = json.loads(json.dumps(body))
        self._docs[(kind, id)] = {"b": body, "p": project_id, "n": parent_id, "o": order}
        self._changes.append([kind, id, "put", body])

    def delete(self, kind, id):
        k = (kind, id)
        if k in self._docs and k not in self._old_docs:   # put unread: its project index
            self._old_docs[k] = self._envelope(kind, id)
        if self._current_env(kind, id) is None:
            return
        self._docs[(kind, id)] = _DELETED
        self._changes.append([kind, id, "delete", None])

    def claim(self, namespace, key, owner):
        current = self._current_owner(namespace, key)
        if current is None:
            self._claims[(namespace, key)] = owner
        elif current != owner:
            raise Conflict(namespace, key, current)

    def release(self, namespace, key):
        if self._current_owner(namespace, key) is not None:
            self._claims[(namespace, key)] = None

    def release_owner(self, owner):
        for ns, key in self._owned(owner):
            if self._current_owner(ns, key) == owner:
                self._claims[(ns, key)] = None
        for k, who in list(self._claims.items()):
            if who == owner:
                self._claims[k] = None

    def allocate_key(self, namespace, owner, *, low=1, high=0xFFFF):
        """The cursor is moved at once, by its own compare-and-swap, not in
        the transaction's commit: concurrent writers then pick different
        keys and do not conflict over the cursor. Uniqueness is the claim's,
        checked at commit like any read; a transaction that does not commit
        leaves its key unused, skipped as a key freed meanwhile would be (the
        order stays rising, nothing is handed out twice)."""
        cursor = self.k.meta(f"next:{namespace}")
        if cursor in self._cursors:
            stored, mod = self._cursors[cursor]
        else:
            # Read now, not at the snapshot: there it is stale as soon as any
            # other writer allocated since, and the swap would fail.
            kvs = self._conn.call("Range", etcdrpc.RangeRequest(key=cursor)).kvs
            stored, mod = (int(kvs[0].value), kvs[0].mod_revision) if kvs else (0, 0)
        deadline = time.monotonic() + self._conn.timeout_s
        held_now: set[str] = set()   # found claimed when tried, after the snapshot
        while True:
            seen, old_claims = set(self._seen), set(self._old_claims)
            start = stored if low <= stored <= high else low
            claim_key = self.k.claim(namespace, str(start))
            memo = (claim_key, b"", ())
            # The usual case: the key at the cursor is free. Its claim is
            # then read by the swap itself (compared missing), not before it.
            fast = ((namespace, str(start)) not in self._claims and memo not in self._seen
                    and str(start) not in held_now)
            if fast:
                candidate = start
                compare = [_mod_is(cursor, mod), _mod_is(claim_key, 0)]
            else:
                candidate = pick_key(
                    namespace, start, low, high,
                    lambda k: "?" if k in held_now else self._current_owner(namespace, k),
                    lambda: self.claimed_keys(namespace) | held_now)
                compare = [_mod_is(cursor, mod)]
            following = candidate + 1 if candidate < high else low
            resp = self._conn.call("Txn", etcdrpc.TxnRequest(
                compare=compare,
                success=[_put(cursor, str(following).encode()), _get(self.k.rev)],
                failure=[_get(cursor), _get(self.k.rev), _get(claim_key)]))
            self._saw_rev(resp.responses[1].response_range.kvs)
            if resp.succeeded:
                if fast:   # read missing; the commit checks that it still is
                    self._seen[memo] = etcdrpc.RangeResponse()
                self._cursors[cursor] = (following, resp.header.revision)
                break
            if time.monotonic() >= deadline:
                raise TxnConflict(f"the {namespace} cursor kept moving")
            # The claims looked at for a key not taken are no part of what
            # this transaction depends on: unread, so the commit checks only
            # those of the key it takes.
            for k in set(self._seen) - seen:
                del self._seen[k]
            for k in set(self._old_claims) - old_claims:
                del self._old_claims[k]
            if fast and resp.responses[2].response_range.kvs:
                held_now.add(str(start))
            kvs = resp.responses[0].response_range.kvs
            stored, mod = (int(kvs[0].value), kvs[0].mod_revision) if kvs else (0, 0)
        self.claim(namespace, str(candidate), owner)
        return candidate

    # -- commit ------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._docs or self._claims or self._meta)

    def _ops(self, revision: int, history: int, compact_every: int) -> list:
        """The writes, as the commit after store revision `revision`."""
        ops = []
        if self._changes:
            revision += 1
        for (kind, id), env in self._docs.items():
            old = self._old_docs.get((kind, id))
            old_project = old.get("p") if old else None
            if env is _DELETED:
                ops.append(_delete(self.k.doc(kind, id)))
                if old_project:
                    ops.append(_delete(self.k.project_index(kind, old_project, id)))
                continue
            if env["o"][0] is None:   # new here; or put unread over one there
                env = {**env, "o": old["o"] if old else [revision, env["o"][1]]}
            ops.append(_put(self.k.doc(kind, id), _dumps(env)))
            if old_project and old_project != env["p"]:
                ops.append(_delete(self.k.project_index(kind, old_project, id)))
            if env["p"] and env["p"] != old_project:
                ops.append(_put(self.k.project_index(kind, env["p"], id), b""))
        for (ns, key), owner in self._claims.items():
            old = self._old_claims.get((ns, key))
            if owner == old:
                continue
            if old is not None:
                ops.append(_delete(self.k.owner(old, ns, key)))
            if owner is None:
                ops.append(_delete(self.k.claim(ns, key)))
            else:
                ops.append(_put(self.k.claim(ns, key), owner.encode()))
                ops.append(_put(self.k.owner(owner, ns, key), b""))
        for key, value in self._meta.items():
            ops.append(_put(key, value))
        if self._changes:
            ops.append(_put(self.k.log(revision), _dumps(self._changes)))
            if revision % compact_every == 0 and revision > history:
                floor = revision - history
                ops.append(_delete(self.k.log_prefix, self.k.log(floor + 1)))
                ops.append(_put(self.k.compacted, str(floor).encode()))
        # Always written, even when only claims changed: every writer
        # compares it, so every write must move it.
        ops.append(_put(self.k.rev, str(revision).encode()))
        return ops

    def _read_checks(self) -> Optional[list]:
        """Compares that hold at commit only if nothing this transaction read
        has changed since its snapshot: each key read has the mod revision
        it had then (0: still missing), each range read has no key written
        after the snapshot (nothing added or changed) and still every key it
        had (nothing deleted). None when that is more compares than
        MAX_READ_CHECKS, or a read they cannot express (a count): the commit
        then asks that no write at all came in between, as m/rev says."""
        if self._saw_revision:
            return None
        checks = []
        for (key, range_end, kw), resp in self._seen.items():
            if key == self.k.rev and not range_end:
                continue   # compared on its own
            if dict(kw).get("count_only") or resp.more:
                return None
            if range_end:
                checks.append(_mod_is(key, self._at + 1, range_end, etcdrpc.Compare.LESS))
                checks.extend(_mod_is(kv.key, kv.mod_revision) for kv in resp.kvs)
            else:
                checks.append(_mod_is(key, resp.kvs[0].mod_revision if resp.kvs else 0))
            if len(checks) > MAX_READ_CHECKS:
                return None
        return checks

    def commit(self, history: int, compact_every: int) -> None:
        """One etcd Txn: the writes, the change feed entry and m/rev moved
        on, if m/rev is as last read and (see _read_checks) nothing this
        transaction read has changed. When only m/rev moved, another write
        committed that touched nothing read here: this one is as valid after
        it, and the same writes are sequenced after it (the next revision,
        read back in the same Txn) without running the body again. Either
        way every commit moves m/rev by one, compared, so the feed keeps one
        revision per write, in commit order, with no gap. A document put
        without being read is compared as missing; if it is there after all,
        the failure branch has read it, and the writes go again over it."""
        if not self.dirty:
            return
        checks = self._read_checks()
        unread = [k for k in self._docs if k not in self._old_docs]
        if len(unread) + len(checks or ()) > MAX_READ_CHECKS:
            # Too many to compare (a bulk create): read them after all, at
            # the snapshot, in one round.
            self._fetch([(self.k.doc(*k), b"", ()) for k in unread])
            for k in unread:
                self._old_docs[k] = self._envelope(*k)
            checks = self._read_checks()
        rev_mod, rev_value = self._rev()
        if checks is not None and self._latest_rev is not None:
            rev_mod, rev_value = max(self._latest_rev, (rev_mod, rev_value))
        found = []   # checks of documents put unread that turned out to be there
        deadline = time.monotonic() + self._conn.timeout_s
        while True:
            unread = [k for k in self._docs if k not in self._old_docs]
            reads = (checks or []) + found
            compare = reads + [_mod_is(self.k.doc(*k), 0) for k in unread] + \
                [_mod_is(self.k.rev, rev_mod)]
            failure = [_get(self.k.rev)] + [_get(self.k.doc(*k)) for k in unread]
            if checks is not None:
                failure.append(etcdrpc.RequestOp(request_txn=etcdrpc.TxnRequest(
                    compare=reads, success=[], failure=[])))
            resp = self._conn.call("Txn", etcdrpc.TxnRequest(
                compare=compare, success=self._ops(rev_value, history, compact_every),
                failure=failure))
            if resp.succeeded:
                return
            answers = [op.response_range for op in resp.responses[:1 + len(unread)]]
            for k, answer in zip(unread, answers[1:]):
                if answer.kvs:
                    self._old_docs[k] = json.loads(answer.kvs[0].value)
                    found.append(_mod_is(self.k.doc(*k), answer.kvs[0].mod_revision))
            kvs = answers[0].kvs
            now_mod, now_value = (kvs[0].mod_revision, int(kvs[0].value)) if kvs else (0, 0)
            if checks is None:
                if now_mod != rev_mod:
                    raise TxnConflict("another write committed first")
            elif not resp.responses[-1].response_txn.succeeded:
                raise TxnConflict("another write committed first")
            if time.monotonic() >= deadline:
                raise TxnConflict("other writes kept committing first")
            rev_mod, rev_value = now_mod, now_value


class EtcdStore(Store):
    def __init__(self, endpoints: list[tuple[str, int]], *, prefix: str = DEFAULT_PREFIX,
                 timeout_s: float = DEFAULT_TIMEOUT_S, history: int = DEFAULT_HISTORY,
                 compact_every: int = COMPACT_EVERY, migrate: bool = True):
        self.endpoints = endpoints
        self.k = Keys(prefix)
        self.timeout_s = timeout_s
        self.history = history
        self.compact_every = compact_every
        self._conn = Connection(endpoints, timeout_s)
        # One writer at a time per process: losing a race to a thread of the
        # same process would only throw its work away.
        self._write_lock = threading.Lock()
        self._hint: tuple[float, Any] = (0.0, None)
        if migrate:
            self._migrate()

    @classmethod
    def from_url(cls, url: str, **kw) -> "EtcdStore":
        endpoints, prefix = parse_url(url)
        return cls(endpoints, prefix=prefix, **kw)

    def _migrate(self) -> None:
        def step(txn: _EtcdTxn) -> None:
            version = txn._meta_int(self.k.schema)
            if version > SCHEMA_VERSION:
                raise StoreError(f"store schema {version} is newer than this vmflow ({SCHEMA_VERSION})")
            if version < 1:
                txn._meta[self.k.compacted] = b"0"
            if version < SCHEMA_VERSION:
                txn._meta[self.k.schema] = str(SCHEMA_VERSION).encode()
        self.run(step)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Txn]:
        """One attempt: TxnConflict at the end if another write came first.
        Callers that can run their body again use run()."""
        with self._write_lock:
            txn = _EtcdTxn(self._conn, self.k)
            yield txn
            txn.commit(self.history, self.compact_every)

    def run(self, fn: Callable[[Txn], T]) -> T:
        """Each RPC waits at most the store timeout (a cluster without
        quorum); a body that keeps losing is run again for the store timeout,
        and at least MIN_ATTEMPTS times (a long one, a bulk create, may take
        longer than the timeout by itself)."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.001
        attempts = 0
        while True:
            attempts += 1
            try:
                with self.transaction() as txn:
                    result = fn(txn)
                return result
            except TxnConflict as e:
                if time.monotonic() + delay >= deadline and attempts >= MIN_ATTEMPTS:
                    raise TxnConflict(f"gave up after {self.timeout_s:g} s of concurrent "
                                      f"writes: {e}") from None
                # Jittered, growing: contenders from other processes spread out.
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, RETRY_MAX_S)

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        yield _EtcdRead(self._conn, self.k)

    def revision(self) -> int:
        return _EtcdRead(self._conn, self.k).revision()

    def change_hint(self) -> Any:
        now = time.monotonic()
        at, value = self._hint
        if value is not None and now - at < HINT_CACHE_S:
            return value
        kvs = self._conn.call("Range", etcdrpc.RangeRequest(key=self.k.rev)).kvs
        value = kvs[0].mod_revision if kvs else 0
        self._hint = (now, value)
        return value

    def changes_since(self, revision: int, limit: int = 10000) -> list[Change]:
        r = _EtcdRead(self._conn, self.k)
        floor = r._meta_int(self.k.compacted)
        if revision < floor:
            raise HistoryCompacted(f"changes before revision {floor} were compacted")
        resp = r._range(self.k.log(revision + 1), prefix_end(self.k.log_prefix), limit=limit)
        out = []
        for kv in resp.kvs:
            rev = int(kv.key[len(self.k.log_prefix):])
            for kind, id, op, body in json.loads(kv.value):
                out.append(Change(rev, kind, id, op, body))
        return out

    def snapshot(self):
        r = _EtcdRead(self._conn, self.k)
        rev = r.revision()
        prefix = self.k.docs
        resp = r._range(prefix, prefix_end(prefix))
        found = []
        for kv in resp.kvs:
            kind, _, id = kv.key[len(prefix):].decode().partition("/")
            env = json.loads(kv.value)
            found.append((env["o"], unquote(kind), unquote(id), env["b"]))
        found.sort(key=lambda item: item[0])
        data: dict[str, dict[str, Document]] = {}
        for _order, kind, id, body in found:
            data.setdefault(kind, {})[id] = body
        return rev, data

    def close(self) -> None:
        self._conn.close()
