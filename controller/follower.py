"""The store follower: the controller's TopologyView, kept current from the store.

It asks the store's cheap change hint every store_poll_interval and reads
the change feed only when the hint moved (or at least once a second, a
safety net for a hint that misses a write). A feed compacted past the view's
revision is a resync from a snapshot, never a crash. A store that cannot be
read keeps the last view: nothing on the switches changes for it.

Only the core thread calls it. Reading and applying are two steps so the
store is never read under the controller's lock: fetch() reads (it may
wait as long as the store's busy timeout on a locked store), apply() then
updates the view under the lock, quickly. Packet-in services share that
lock and answer from the view, so a stalled store never stalls them. What
the changes dirty on which switch is the controller's business (core.py).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Optional

from topology.store.base import HistoryCompacted, Store, StoreError
from topology.view import TopologyView

LOG = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
# The change feed is read at least this often whatever the store's change
# hint says, a safety net for a store whose hint misses a write.
FEED_READ_MAX_S = 1.0
FEED_BATCH = 10000   # changes read from the feed at most at once
# A store not read successfully for this long is reported not ok, even
# while the read that will fail is still waiting on the store's lock.
STALE_S = 5.0

RESYNC = "resync"


class StoreFollower:
    def __init__(self, store: Store, counters: Counter):
        self.store = store
        self.counters = counters
        self.view: Optional[TopologyView] = None
        self.store_ok = False
        self.last_read: Optional[float] = None   # wall time of the last successful read
        self._store_error_logged = False
        self._hint: Any = None            # the store's change hint before the last feed read
        self._next_feed_read = 0.0        # monotonic time of the next unconditional feed read

    def wake(self) -> None:
        """Read the feed at the next due() whatever the hint says."""
        self._next_feed_read = 0.0

    def due(self, now: float) -> bool:
        """Whether to read the change feed now: when the store's change hint
        moved, or FEED_READ_MAX_S after the last read; after a failed read,
        RETRY_MIN_S after it."""
        hint = None
        if not self.store_ok:
            due = now >= self._next_feed_read
        elif now >= self._next_feed_read:
            due = True
        else:
            try:
                hint = self.store.change_hint()
            except StoreError:
                return True   # the feed read fails too, and says why
            due = hint != self._hint
        if due:
            # The hint as it was before this read: a write committed during
            # the read moves it again, so it is read next time.
            if hint is None:
                try:
                    hint = self.store.change_hint()
                except StoreError:
                    pass
            self._hint = hint
            self._next_feed_read = now + FEED_READ_MAX_S
        return due

    def healthy(self, now: Optional[float] = None) -> bool:
        """The last read succeeded and is recent: a read stuck on a locked
        store has not failed yet, but the view is aging all the same."""
        if not self.store_ok or self.last_read is None:
            return False
        return (time.time() if now is None else now) - self.last_read < STALE_S

    def fetch(self):
        """Read what changed, outside the controller's lock: a Snapshot (the
        view must be rebuilt), a list of changes, or None when the store
        could not be read (the view is kept)."""
        try:
            if self.view is None:
                got = Snapshot(TopologyView(*self.store.snapshot()))
            else:
                try:
                    got = self.store.changes_since(self.view.revision, FEED_BATCH)
                except HistoryCompacted:
                    LOG.warning("change feed compacted past revision %d; resyncing",
                                self.view.revision)
                    self.counters["resyncs"] += 1
                    got = Snapshot(TopologyView(*self.store.snapshot()))
        except StoreError as e:
            # Keep the last view and every installed flow; try again soon.
            self._next_feed_read = time.monotonic() + RETRY_MIN_S
            self._hint = None
            self.counters["store_errors"] += 1
            if not self._store_error_logged:
                LOG.error("store unreachable (flows left as they are): %s", e)
                self._store_error_logged = True
            self.store_ok = False
            return None
        self.last_read = time.time()
        if isinstance(got, list) and len(got) >= FEED_BATCH:
            self._next_feed_read = 0.0   # more may wait behind a hint that will not move again
        return got

    def apply(self, got):
        """Apply what fetch() read to the view (under the controller's lock):
        RESYNC (the view was rebuilt), a list of (change, the document it
        replaced), or None when nothing was read."""
        if got is None:
            return None
        self._store_error_logged = False
        if isinstance(got, Snapshot):
            self.view = got.view
            self.store_ok = True
            LOG.info("topology loaded at revision %d", got.view.revision)
            return RESYNC
        if not self.store_ok:
            LOG.info("store reachable at revision %d", self.view.revision)
        self.store_ok = True
        out = []
        for change in got:
            out.append((change, self.view.apply(change)))
            self.counters["changes"] += 1
        return out

    def poll(self):
        """fetch() and apply() in one step, for callers that hold no lock."""
        return self.apply(self.fetch())


class Snapshot:
    """A view built from the whole store, read outside the lock, to replace the current one."""

    def __init__(self, view: TopologyView) -> None:
        self.view = view
