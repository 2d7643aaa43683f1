"""The core's inbox of switch events, coalesced so it is bounded by construction.

os-ken's event thread hands the core three kinds of event (core.py):
("connect", dpid, channel, ports), ("disconnect", dpid, channel) and
("port", dpid, name, ofport). Should the core fall behind, a plain queue
would grow without limit (a flapping interface sends port-status after
port-status). Here only what still matters is kept, per switch:

  - a connect carries the switch's whole port list and retires whatever
    channel the dpid had, so it supersedes everything queued before it for
    that dpid;
  - a port event supersedes the earlier one for the same interface name
    (only the latest ofport matters), and moves behind everything queued;
  - a disconnect is kept per channel (the core ignores one for a channel
    that is no longer the dpid's), and a later connect supersedes it.

So at most 1 connect + 1 event per interface name + 1 disconnect per
channel not yet superseded wait per switch; no event is ever dropped
without a later one that makes it moot, so nothing needs a resync. The
interface is queue.Queue's get/get_nowait/put, and put(None) wakes a
waiting get with None (the core's stop signal).
"""
from __future__ import annotations

import queue
import threading
from typing import Optional


class SwitchEvents:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: dict[tuple, tuple] = {}      # key -> event, in arrival order
        self._keys_by_dpid: dict[int, set] = {}
        self._wake = False
        self.coalesced = 0                       # events superseded by a later one

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, ev: Optional[tuple]) -> int:
        """Queue an event (None: wake the reader); returns how many queued
        events it superseded, which the caller no longer waits on."""
        with self._cond:
            superseded = 0 if ev is None else self._add(ev)
            if ev is None:
                self._wake = True
            self.coalesced += superseded
            self._cond.notify()
            return superseded

    def _add(self, ev: tuple) -> int:
        kind, dpid = ev[0], ev[1]
        keys = self._keys_by_dpid.setdefault(dpid, set())
        superseded = 0
        if kind == "connect":
            for k in keys:
                del self._items[k]
            superseded = len(keys)
            keys.clear()
            key: tuple = (dpid, "connect")
        elif kind == "port":
            key = (dpid, "port", ev[2])
        elif kind == "disconnect":
            # The event holds the channel, so its id is not reused while queued.
            key = (dpid, "disconnect", id(ev[2]))
        else:
            raise ValueError(f"unknown switch event {kind!r}")
        if key in self._items:
            del self._items[key]   # re-inserted at the end: it is the newest now
            superseded += 1
        self._items[key] = ev
        keys.add(key)
        return superseded

    def get(self, timeout: Optional[float] = None) -> Optional[tuple]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._wake, timeout):
                raise queue.Empty
            return self._pop()

    def get_nowait(self) -> Optional[tuple]:
        with self._cond:
            if not (self._items or self._wake):
                raise queue.Empty
            return self._pop()

    def _pop(self) -> Optional[tuple]:
        if not self._items:
            self._wake = False
            return None
        key = next(iter(self._items))
        ev = self._items.pop(key)
        keys = self._keys_by_dpid[key[0]]
        keys.discard(key)
        if not keys:
            del self._keys_by_dpid[key[0]]
        return ev
