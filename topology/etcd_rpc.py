"""gRPC channels to the members of one etcd cluster, with failover between
them: the one client of the etcd store (topology/store/etcd.py) and of the
controllers' membership (controller/cluster.py).

A call goes to the member that last answered, then to the others. A member
that refuses the connection or is not ready is skipped; one that does not
answer before the call's deadline means the cluster cannot (no quorum):
EtcdUnavailable, a StoreError, so the API answers it with 503.
"""
from __future__ import annotations

import os
import random
import threading
import time
from typing import Callable, Iterator, Optional

# gRPC's fork handlers restart its pollers in a forked child, and while other
# threads are inside gRPC that child sometimes dies before it can exec (7 %
# of 200 subprocess.Popen(preexec_fn=...) calls from a process polling a
# channel; 0 % with them off). Nothing here uses gRPC across a fork: children
# exec, and gunicorn workers open their own channels after the fork. This is
# the one module that imports grpc (and etcd3, which imports it): the others
# take etcdrpc from here, so the variable is always set first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402  (reads the variable above when imported)
from etcd3 import etcdrpc  # noqa: E402

from topology.store.base import StoreError, TxnConflict

# A snapshot of a large cloud is one range answer, far over gRPC's default
# 4 MiB; a bulk create is one request (etcd itself bounds it with
# --max-request-bytes). A member that comes back is reconnected to within a
# second: gRPC's default backoff grows to two minutes, and calls on a
# channel waiting it out fail at once, so a restarted member would stay
# unused and a lone one would keep a controller counted out that long.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 1 << 30),
                   ("grpc.max_send_message_length", 256 << 20),
                   ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]

# Stubs by the name callers give the service.
SERVICES = {"KV": etcdrpc.KVStub, "Lease": etcdrpc.LeaseStub, "Watch": etcdrpc.WatchStub}
# Streaming methods used for one request and its one answer.
ONE_SHOT_STREAMS = {"LeaseKeepAlive"}


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with prefix."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdUnavailable(StoreError):
    """No member answered in time: none reachable, or no quorum."""


class Connection:
    """Channels to every member, made in the process that uses them (a
    channel must not cross gunicorn's fork).

    `timeout_s` bounds a call on all members together (the store: one
    request, one budget), or with `each_member` each member's try: a call
    that one hung member timed out goes on to the next, at the cost of a
    call taking up to that many timeouts when there is no quorum (the
    controllers' membership, which must renew its lease within a TTL)."""

    def __init__(self, endpoints: list[tuple[str, int]], timeout_s: float, *,
                 each_member: bool = False):
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.each_member = each_member
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._stubs: list[dict] = []
        self._channels: list = []
        self._current = 0

    def _ensure(self) -> list[dict]:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._channels = [grpc.insecure_channel(f"{h}:{p}", options=CHANNEL_OPTIONS)
                                      for h, p in self.endpoints]
                    self._stubs = [{name: stub(c) for name, stub in SERVICES.items()}
                                   for c in self._channels]
                    self._current = random.randrange(len(self._stubs))
                    self._pid = os.getpid()
        return self._stubs

    def _name(self, i: int) -> str:
        return f"{self.endpoints[i][0]}:{self.endpoints[i][1]}"

    def _failure(self, i: int, e: grpc.RpcError) -> tuple[Optional[grpc.StatusCode], str]:
        """A member's failed RPC: its status code, and a line naming the member."""
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else e
        return code, f"{self._name(i)}: {code.name if code else '?'} {details}"

    def _attempts(self, timeout_s: Optional[float]) -> Iterator[tuple[int, dict, float]]:
        """(member index, its stubs, seconds left) for each member in turn,
        from the one last known good, all within one deadline (the
        connection's timeout unless given), or each its own (each_member)."""
        stubs = self._ensure()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        first = self._current
        for n in range(len(stubs)):
            i = (first + n) % len(stubs)
            if self.each_member:
                deadline = time.monotonic() + timeout
            left = deadline - time.monotonic()
            if left <= 0:
                return
            yield i, stubs[i], left

    def call(self, method: str, request, timeout_s: Optional[float] = None, *,
             service: str = "KV", readonly: bool = False):
        """One RPC on the member last known good, then on the others, all
        within one deadline (the connection's timeout unless given).
        readonly: a Txn of reads only, safe to send again elsewhere."""
        errors = []
        for i, stub, left in self._attempts(timeout_s):
            rpc = getattr(stub[service], method)
            try:
                if method in ONE_SHOT_STREAMS:
                    resp = next(iter(rpc(iter([request]), timeout=left)))
                else:
                    resp = rpc(request, timeout=left)
            except grpc.RpcError as e:
                code, failure = self._failure(i, e)
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    # A snapshot revision compacted away under a transaction.
                    raise TxnConflict(f"etcd: {e.details()}") from None
                if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    # An answer (a lease that expired, say): no other member
                    # would answer otherwise.
                    raise StoreError(f"etcd refused the request: {e.details()}") from None
                errors.append(failure)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # No quorum, or this member hangs (stopped, or cut off
                    # by a partition that drops packets). The next call
                    # starts at the next member, so a hung member is not
                    # asked first for ever.
                    self._current = (i + 1) % len(self.endpoints)
                    if not self.each_member:
                        break
                if method == "Txn" and not readonly and "connect" not in (e.details() or "").lower():
                    # The member had it ("leader changed", "request timed
                    # out"): it may still commit. Sent again elsewhere, its
                    # compare would fail and the body run again would write
                    # twice; the caller is told the outcome is unknown.
                    raise StoreError("etcd: write outcome unknown: " + errors[-1]) from None
                continue
            except StopIteration:
                errors.append(f"{self._name(i)}: {method} stream closed without an answer")
                continue
            self._current = i
            return resp
        raise EtcdUnavailable("etcd cluster unavailable (no quorum or no member reachable): "
                              + "; ".join(errors or ["timed out"]))

    def watch(self, create: "etcdrpc.WatchCreateRequest",
              timeout_s: Optional[float] = None) -> tuple[Iterator, Callable[[], None]]:
        """Open a watch on the member last known good, then on the others:
        (the stream of WatchResponses after etcd confirmed the watch, a
        function that ends it). The stream ends with grpc.RpcError when its
        member goes away; the caller opens another. EtcdUnavailable when no
        member confirms within the deadline."""
        errors = []
        for i, stub, left in self._attempts(timeout_s):
            done = threading.Event()

            def requests(done=done):
                yield etcdrpc.WatchRequest(create_request=create)
                # etcd ends a watch when the client half-closes: hold the
                # request side open until the watch is ended.
                done.wait()
            # hasleader: etcd ends the watch when its member loses the
            # leader, which a member cut off from the others does; the
            # caller then watches on one that still has it.
            stream = stub["Watch"].Watch(requests(), metadata=[("hasleader", "true")])

            def end(stream=stream, done=done):
                done.set()
                stream.cancel()
            # No deadline on the stream itself (it lives as long as the
            # watch); the wait for etcd's confirmation has one.
            timer = threading.Timer(left, end)
            timer.daemon = True
            timer.start()
            try:
                first_resp = next(stream)
            except grpc.RpcError as e:
                errors.append(self._failure(i, e)[1])
                end()
                continue
            except StopIteration:
                errors.append(f"{self._name(i)}: watch stream closed at once")
                end()
                continue
            finally:
                timer.cancel()
            if not first_resp.created or first_resp.canceled:
                errors.append(f"{self._name(i)}: watch not created: {first_resp.cancel_reason}")
                end()
                continue
            self._current = i
            return stream, end
        raise EtcdUnavailable("etcd cluster unavailable (no member opened a watch): "
                              + "; ".join(errors or ["timed out"]))

    def close(self) -> None:
        if self._pid == os.getpid():
            for c in self._channels:
                c.close()
        self._pid = None
        self._stubs = []
        self._channels = []
