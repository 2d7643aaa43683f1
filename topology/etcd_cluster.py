"""Local etcd members on loopback: for tests, benchmarks and `vmflow cluster-demo`.

vmflow never runs etcd as a system service; whoever needs a cluster starts
its own members here, each with its own data directory and ports, and stops
them (even on failure) with `stop()` or the context manager. Debian's
`etcd-server` provides the binary (scripts/setup installs it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_ports(n: int) -> list[int]:
    """n loopback TCP ports that are free now (bound and released at once)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    proc: Optional[subprocess.Popen] = None
    log_path: str = ""

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """n members on loopback. `store_url` is what `--store` takes."""
    size: int = 3
    workdir: Optional[str] = None
    members: list[Member] = field(default_factory=list)
    _own_workdir: bool = False

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="vmflow-etcd-")
            self._own_workdir = True
        ports = free_ports(2 * self.size)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1],
                               os.path.join(self.workdir, f"m{i}"))
                        for i in range(self.size)]

    @property
    def store_url(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start_member(self, i: int, *, state: str = "new") -> None:
        m = self.members[i]
        os.makedirs(m.data_dir, exist_ok=True)
        m.log_path = os.path.join(self.workdir, f"{m.name}.log")
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(
            [ETCD, "--name", m.name, "--data-dir", m.data_dir,
             "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
             "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
             "--initial-cluster", self._initial_cluster(),
             "--initial-cluster-state", state,
             "--initial-cluster-token", os.path.basename(self.workdir),
             # Small heartbeats: a lost member is noticed in tests' time scale.
             "--heartbeat-interval", "50", "--election-timeout", "500",
             # vmflow's store writes a whole API request in one txn (a bulk
             # create of many ports); etcd's defaults allow 128 operations
             # and 1.5 MiB a request.
             "--max-txn-ops", "100000", "--max-request-bytes", str(64 << 20)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start(self, timeout_s: float = 20.0) -> "EtcdCluster":
        for i in range(self.size):
            self.start_member(i)
        self.wait_healthy(timeout_s)
        return self

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(self.members[i].client_url + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = 20.0, members: Optional[list[int]] = None) -> None:
        want = range(self.size) if members is None else members
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in want):
                return
            time.sleep(0.1)
        logs = {m.name: _tail(m.log_path) for m in self.members}
        raise RuntimeError(f"etcd members not healthy after {timeout_s} s: {logs}")

    def kill_member(self, i: int, sig: int = signal.SIGKILL) -> None:
        m = self.members[i]
        if m.running:
            m.proc.send_signal(sig)
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)

    def restart_member(self, i: int) -> None:
        self.kill_member(i)
        self.start_member(i, state="existing")

    def stop(self) -> None:
        for i in range(self.size):
            self.kill_member(i, signal.SIGTERM)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
