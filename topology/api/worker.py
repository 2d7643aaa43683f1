"""The API's gunicorn worker: gthread, with each request read whole before a thread sees it.

gunicorn's gthread worker hands a connection to a thread as soon as its first
byte arrives; a client that then sends the rest slowly holds that thread, and
a few hundred such clients hold them all (sync workers are worse: one client
per process). gunicorn's documentation asks for a buffering proxy in front.
This worker is that buffer, inside each worker process: its event loop
(the thread that accepts) reads requests without blocking, up to
api.max_header_size and api.max_body_size, within api.header_timeout and
api.body_timeout, and only a complete request goes to the thread pool, where
gunicorn's parser reads it from memory. A slow client costs a buffer and a
file descriptor (api.worker_connections caps those per worker), never a
thread; one that reads its response too slowly is cut off after
api.response_timeout. Kept-alive connections return to the same loop
between requests, and connections close without the loop waiting on them.

Refusals are answered from the loop with a Neutron error body: 408 when a
request is not in by its deadline, 413 for a body over the limit (nothing
reaches the app, so nothing is written), 431 for an oversized header, 411
for a chunked body.
"""
from __future__ import annotations

import selectors
import socket
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from topology.api.errors import error_body
from topology.api.framing import Refusal, error_response, frame

# How long a refused connection is kept open to read what its client is
# still sending, so that the client reads the refusal rather than a reset.
REFUSAL_LINGER_S = 5.0
# How long a connection closed after its answer waits for the client's end
# (gunicorn's own close_graceful waits as long).
CLOSE_LINGER_S = 2.0
# How long a stopping worker still waits for requests that are arriving.
STOP_LINGER_S = 2.0


class _Pending:
    """A connection whose next request is still arriving."""

    __slots__ = ("conn", "buf", "deadline", "end", "discard", "refused")

    def __init__(self, conn: TConn, buf: bytes, deadline: float):
        self.conn = conn
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.end: int | None = None  # the request's length, once its header is in
        self.discard = 0  # refused: body bytes still to throw away (-1: until EOF)
        self.refused = False


class BufferingWorker(ThreadWorker):

    def init_process(self):
        api = self.app.conf.api
        self.header_timeout = float(api.header_timeout)
        self.body_timeout = float(api.body_timeout)
        self.response_timeout = float(api.response_timeout)
        self.max_header = int(api.max_header_size)
        self.max_body = int(api.max_body_size)
        self.pending: dict[socket.socket, _Pending] = {}
        self.stop_by: float | None = None
        super().init_process()

    # -- where connections enter the loop ------------------------------------
    def accept(self, listener):
        try:
            sock, addr = listener.accept()
        except BlockingIOError:
            return
        except OSError:
            return  # ECONNABORTED and the like: the client is gone already
        self.nr_conns += 1
        self._read_next(TConn(self.cfg, sock, addr, listener.getsockname()), b"")

    def on_client_socket_readable(self, conn, client):
        # A kept-alive connection starts its next request.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_next(conn, b"")

    def finish_request(self, conn, fs):
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:
            result = False
        if result is True and self.alive and conn.parser.unreader.buf.getvalue():
            # A client may pipeline its next request behind the last one; the
            # parser holds what it read ahead. That request, too, is read
            # whole in the loop rather than by a thread that would block on
            # its rest.
            self._read_next(conn, conn.parser.unreader.take_buffered())
        elif result is False:
            # gthread closes "gracefully" by reading from the socket until
            # the client closes, for up to 2 s, in this loop: 20 clients
            # that keep their end open after a "Connection: close" answer
            # stalled every other client of the worker for 34 s. The same
            # linger, without blocking:
            self._linger(conn)
        else:
            super().finish_request(conn, fs)

    def _linger(self, conn: TConn) -> None:
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        p = _Pending(conn, b"", time.monotonic() + CLOSE_LINGER_S)
        p.refused, p.discard = True, -1
        self.pending[conn.sock] = p
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, p))

    def handle_request(self, req, conn):
        # Runs in a thread, on a blocking socket: the timeout bounds how long
        # a client that does not read its response can hold the thread.
        conn.sock.settimeout(self.response_timeout)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.warning("closing a connection from %s: its client took more than %g s "
                             "to read a response", conn.client, self.response_timeout)
            return False

    # -- reading -------------------------------------------------------------
    def _read_next(self, conn: TConn, buffered: bytes) -> None:
        conn.sock.setblocking(False)
        p = _Pending(conn, buffered, time.monotonic() + self.header_timeout)
        self.pending[conn.sock] = p
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, p))
        if buffered:
            self._advance(p)

    def _on_readable(self, p: _Pending, sock) -> None:
        # An exception here would end the worker process and every
        # connection it holds: it ends this connection only.
        try:
            self._receive(p, sock)
        except Exception:
            self.log.exception("dropping a connection after an error reading its request")
            if p.conn.sock in self.pending:
                self._close(p)

    def _receive(self, p: _Pending, sock) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(p)
            return
        if p.refused:
            if p.discard > 0:
                p.discard -= len(data)
                if p.discard <= 0:
                    self._close(p)
            return
        p.buf += data
        self._advance(p)

    def _advance(self, p: _Pending) -> None:
        if p.end is None:
            f = frame(p.buf, self.max_header, self.max_body)
            if f.refusal:
                self._refuse(p, f.refusal)
                return
            if f.end is None:
                return
            p.end = f.end
            p.deadline = time.monotonic() + self.body_timeout
            if f.expects_continue:
                # The client waits for this before it sends the body. gunicorn
                # sends its own once the request reaches it: a second 1xx,
                # which HTTP clients must accept.
                self._send(p.conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(p.buf) >= p.end:
            self._dispatch(p)

    def _dispatch(self, p: _Pending) -> None:
        conn = p.conn
        self._forget(p)
        conn.init()  # makes gunicorn's parser (plain HTTP/1.1: reads nothing)
        conn.parser.unreader.unread(bytes(p.buf))
        conn.data_ready = True
        self.enqueue_req(conn)

    # -- refusing and closing ------------------------------------------------
    def _refuse(self, p: _Pending, refusal: Refusal) -> None:
        body = error_body(refusal.type, refusal.message).encode()
        self._send(p.conn.sock, error_response(refusal.status, body))
        p.refused = True
        p.buf = bytearray()
        p.discard = refusal.discard if refusal.discard > 0 else -1
        if refusal.discard <= 0:
            try:
                p.conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        p.deadline = time.monotonic() + REFUSAL_LINGER_S

    @staticmethod
    def _send(sock, data: bytes) -> None:
        # A fresh connection's send buffer takes a few hundred bytes whole;
        # a client that cannot take them is dropped with the connection.
        try:
            sock.send(data)
        except OSError:
            pass

    def _forget(self, p: _Pending) -> None:
        del self.pending[p.conn.sock]
        try:
            self.poller.unregister(p.conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, p: _Pending) -> None:
        self._forget(p)
        self.nr_conns -= 1
        p.conn.close()

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        if not self.alive:
            # Stopping: a request still arriving gets what gthread gives a
            # kept-alive connection, not its whole header or body timeout,
            # and every connection here is closed by then.
            if self.stop_by is None:
                self.stop_by = now + STOP_LINGER_S
            for p in self.pending.values():
                p.deadline = min(p.deadline, self.stop_by)
        for p in [p for p in self.pending.values()
                  if p.deadline <= now or (not self.alive and not p.buf and not p.refused)]:
            if p.refused or not p.buf:
                self._close(p)  # idle, or its refusal is already sent
            else:
                self._refuse(p, Refusal("408 Request Timeout", "HTTPRequestTimeout",
                                        "The request was not received in time."))
