"""The store's interface: everything callers may rely on, and nothing more.

The store holds resources as JSON documents keyed by (kind, id), where kind is
the Neutron collection name ("networks", "subnets", "ports", ...). A document
is the resource as the API shows it, plus internal fields whose names start
with "_" (for example "_key", the small integer a network or port is known by
in flows); the API never shows those.

Uniqueness (a MAC, an IP in a subnet, a VLAN id on a physical network, a
datapath id) is kept by *claims*: a (namespace, key) pair owned by one
resource. Claiming a taken key raises Conflict, inside the caller's
transaction, so a write that loses a race changes nothing.

Every committed write transaction gets the next revision. The change feed
answers "what changed after revision N"; the controller follows it. An etcd
backend maps these one to one: documents and claims are keys, a transaction is
one etcd txn guarded by compares on what it read and on the store's
revision key, and the feed
is a range of per-revision log keys (topology/store/etcd.py says why).

Writers that may meet a concurrent writer (the etcd store is optimistic)
use Store.run(fn): fn(txn) is the whole transaction body, run again on
fresh reads when another write committed first, so it must have no effect
outside the transaction it is given.
"""
from __future__ import annotations

import abc
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, TypeVar

Document = dict[str, Any]
T = TypeVar("T")


def stamp() -> str:
    """A document's created_at or updated_at for now, as Neutron shows them.
    The one format for every writer: the API and the controller's status
    write-backs."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StoreError(Exception):
    """The store could not be reached or failed; the caller may retry."""


class TxnConflict(StoreError):
    """Another write committed between this transaction's reads and its
    commit, so nothing was written. Store.run() runs the body again; one
    that still loses when the store's timeout is up reaches the API as 409."""


class Conflict(Exception):
    """A claim is already owned by another resource."""

    def __init__(self, namespace: str, key: str, owner: str):
        super().__init__(f"{namespace} {key} is already used by {owner}")
        self.namespace = namespace
        self.key = key
        self.owner = owner


class HistoryCompacted(Exception):
    """The change feed no longer reaches back to the asked revision: resync whole."""


@dataclass(frozen=True, slots=True)
class Change:
    revision: int
    kind: str
    id: str
    op: str  # "put" or "delete"
    body: Optional[Document]  # the new document for "put", None for "delete"


class ReadTxn(abc.ABC):
    """A consistent read view."""

    @abc.abstractmethod
    def get(self, kind: str, id: str) -> Optional[Document]: ...

    @abc.abstractmethod
    def list(self, kind: str, *, project_id: Optional[str] = None,
             parent_id: Optional[str] = None) -> list[Document]:
        """Documents of a kind, optionally narrowed by project or parent.

        The parent is the containing resource: a subnet's or port's network,
        a security group rule's group.
        """

    def count(self, kind: str, *, project_id: Optional[str] = None) -> int:
        """How many documents list() would return (backends may count without reading them)."""
        return len(self.list(kind, project_id=project_id))

    @abc.abstractmethod
    def claim_owner(self, namespace: str, key: str) -> Optional[str]: ...

    def prefetch(self, docs: Iterable[tuple[str, str]] = (),
                 claims: Iterable[tuple[str, str]] = (), kinds: Iterable[str] = ()) -> None:
        """A hint: the caller will read these documents (kind, id), claims
        (namespace, key) and whole kinds next. A store whose every read is a
        round trip (etcd) asks for them in one; others need not do anything."""

    @abc.abstractmethod
    def claimed_keys(self, namespace: str) -> set[str]: ...

    @abc.abstractmethod
    def revision(self) -> int: ...


class Txn(ReadTxn):
    """A write transaction: all of it commits, or none of it."""

    @abc.abstractmethod
    def put(self, kind: str, id: str, body: Document, *,
            project_id: Optional[str] = None, parent_id: Optional[str] = None) -> None: ...

    @abc.abstractmethod
    def delete(self, kind: str, id: str) -> None: ...

    @abc.abstractmethod
    def claim(self, namespace: str, key: str, owner: str) -> None:
        """Take (namespace, key) for owner; Conflict if someone else has it.

        Claiming a key the same owner already holds is a no-op.
        """

    @abc.abstractmethod
    def release(self, namespace: str, key: str) -> None: ...

    @abc.abstractmethod
    def release_owner(self, owner: str) -> None:
        """Drop every claim the owner holds (on delete of the owner)."""

    @abc.abstractmethod
    def allocate_key(self, namespace: str, owner: str, *, low: int = 1,
                     high: int = 0xFFFF) -> int:
        """Claim and return a free integer in [low, high] for owner.

        Keys are handed out in rising order and reused only after wrapping,
        so a freed key is not given again straight away. Conflict (with
        owner "nobody") when the range is full.
        """


SECRETS_KIND = "secrets"   # controller-internal documents; the API never shows them


def pick_key(namespace: str, start: int, low: int, high: int,
             owner_of: Callable[[str], Optional[str]], held: Callable[[], set[str]]) -> int:
    """The first key from start, wrapping within [low, high], that nobody
    holds: the round-robin allocation every store shares. Past the first
    collision one set of the held keys beats a lookup per key."""
    if owner_of(str(start)) is None:
        return start
    taken = held()
    candidate = start
    for _ in range(high - low + 1):
        candidate = candidate + 1 if candidate < high else low
        if str(candidate) not in taken:
            return candidate
    raise Conflict(namespace, "*", "nobody")


def ensure_secret(store: "Store", name: str, nbytes: int = 32) -> bytes:
    """A random secret kept in the store under name: made once, by whichever
    caller comes first, then the same for every process that asks."""
    def body(txn: Txn) -> Document:
        doc = txn.get(SECRETS_KIND, name)
        if doc is None:
            doc = {"id": name, "value": os.urandom(nbytes).hex()}
            txn.put(SECRETS_KIND, name, doc)
        return doc
    return bytes.fromhex(store.run(body)["value"])


class Store(abc.ABC):

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Txn]:
        """A write transaction; commits on normal exit, rolls back on exception.

        On an optimistic store it may raise TxnConflict at exit: callers
        that can repeat their body use run()."""

    def run(self, fn: Callable[[Txn], T]) -> T:
        """fn(txn) in a write transaction, run again while it loses to a
        concurrent write (TxnConflict), up to the store's timeout; its result.

        The SQLite store's writers queue on a lock and never conflict."""
        with self.transaction() as txn:
            return fn(txn)

    @abc.abstractmethod
    def read(self) -> contextlib.AbstractContextManager[ReadTxn]: ...

    @abc.abstractmethod
    def revision(self) -> int: ...

    def change_hint(self) -> Any:
        """A cheap value that moves whenever a write may have committed.

        A follower polls it often and reads the change feed only when it
        differs from the value it saw before its last read, so noticing a
        change soon costs next to nothing while nothing changes. It may move
        without a change (a needless read), never stay put across one.
        """
        return self.revision()

    @abc.abstractmethod
    def changes_since(self, revision: int, limit: int = 10000) -> list[Change]:
        """Changes with a revision above `revision`, oldest first.

        HistoryCompacted if changes after `revision` were already dropped.
        """

    @abc.abstractmethod
    def snapshot(self) -> tuple[int, dict[str, dict[str, Document]]]:
        """(revision, {kind: {id: document}}) for every kind, consistently."""

    def close(self) -> None:
        pass
