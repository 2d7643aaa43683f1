"""A minimal OpenFlow 1.3 "switch" over a plain socket, for scenarios that
need a client OVS would never be: an impostor claiming a datapath id, a
client that stops after HELLO, one that never speaks. It answers what a
switch must answer to finish the handshake (FEATURES_REQUEST, the port
description request, ECHO_REQUEST) and records the type of every message
the controller sends it."""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Optional

VERSION = 4
HEADER = struct.Struct("!BBHI")
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 1, 2, 3
OFPT_EXPERIMENTER, OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 4, 5, 6
OFPT_PACKET_OUT, OFPT_FLOW_MOD, OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY = 13, 14, 18, 19
OFPT_BARRIER_REQUEST, OFPT_METER_MOD = 20, 29
OFPMP_PORT_DESC = 13
# What a controller sends only to a switch it took over.
PROGRAMMING = {OFPT_FLOW_MOD: "FLOW_MOD", OFPT_PACKET_OUT: "PACKET_OUT",
               OFPT_METER_MOD: "METER_MOD", OFPT_EXPERIMENTER: "EXPERIMENTER (bundle)",
               OFPT_BARRIER_REQUEST: "BARRIER_REQUEST"}


def msg(type_: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, type_, HEADER.size + len(body), xid) + body


def hello(xid: int = 1) -> bytes:
    return msg(OFPT_HELLO, xid)


class FakeSwitch:
    """connect(); handshake(dpid) answers until the controller is done with
    the handshake; then received, closed, and wait_closed()."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0,
                 tls: Optional[ssl.SSLContext] = None):
        """tls: a client context (its certificate, the controller CA); the
        TLS handshake happens here."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self.received: list[tuple[int, int]] = []     # (type, xid)
        self.closed = False
        self.dpid: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_msg(self) -> Optional[tuple[int, int, bytes]]:
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        _v, type_, length, xid = HEADER.unpack(head)
        body = self._read_exact(length - HEADER.size) if length > HEADER.size else b""
        if body is None:
            return None
        return type_, xid, body

    def _read_exact(self, n: int) -> Optional[bytes]:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _answer(self, type_: int, xid: int, body: bytes) -> None:
        if type_ == OFPT_FEATURES_REQUEST:
            self.send(msg(OFPT_FEATURES_REPLY, xid,
                          struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0x4F, 0)))
        elif type_ == OFPT_MULTIPART_REQUEST and struct.unpack_from("!H", body)[0] == OFPMP_PORT_DESC:
            self.send(msg(OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", OFPMP_PORT_DESC, 0)))
        elif type_ == OFPT_ECHO_REQUEST:
            self.send(msg(OFPT_ECHO_REPLY, xid, body))

    def _run(self, answer_echo: bool) -> None:
        while True:
            m = self._read_msg()
            if m is None:
                with self._lock:
                    self.closed = True
                return
            type_, xid, body = m
            with self._lock:
                self.received.append((type_, xid))
            if type_ == OFPT_ECHO_REQUEST and not answer_echo:
                continue
            try:
                self._answer(type_, xid, body)
            except OSError:
                pass

    def handshake(self, dpid: int, answer_echo: bool = True) -> "FakeSwitch":
        """Say HELLO as datapath `dpid` and answer the controller from a thread."""
        self.dpid = dpid
        self.send(hello())
        self._thread = threading.Thread(target=self._run, args=(answer_echo,), daemon=True)
        self._thread.start()
        return self

    def types(self) -> list[int]:
        with self._lock:
            return [t for t, _ in self.received]

    def programming(self) -> list[str]:
        """Names of the messages received that only a taken-over switch gets."""
        return [PROGRAMMING[t] for t in self.types() if t in PROGRAMMING]

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.closed:
                    return True
            if self._thread is None:
                # Not reading in a thread: read here until the end.
                try:
                    self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    if self.sock.recv(65536) == b"":
                        self.closed = True
                        return True
                except socket.timeout:
                    return False
                except OSError:
                    self.closed = True
                    return True
                continue
            time.sleep(0.05)
        return False

    def close(self) -> None:
        # shutdown first: close() alone leaves the connection up (no FIN)
        # while the reading thread is still inside recv() on it.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def tls_client(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """A switch's TLS context: its certificate and key, the controller's CA
    (no host name check: OVS does none either)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    return ctx


def proc_status(pid: int) -> dict:
    """A process's thread count and resident memory (kB), from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(value.split()[0])
    return out
