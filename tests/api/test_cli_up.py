"""`vmflow up`: the API and the controller as children of one command; SIGTERM
stops both cleanly (exit 0), and the death of one child stops the other
(exit non-zero)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from harness import free_port

ROOT = Path(__file__).resolve().parents[2]
VMFLOW = ROOT / ".venv" / "bin" / "vmflow"


def children(pid: int) -> dict[str, int]:
    """{"api": pid, "controller": pid} of `up`'s direct children."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except FileNotFoundError:
            continue
        for k in kids:
            try:
                argv = Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            for role in ("api", "controller"):
                if role.encode() in argv:
                    out[role] = int(k)
    return out


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Up:
    def __init__(self, tmp: Path):
        self.api_port, self.ofp_port = free_port(), free_port()
        self.status = tmp / "state" / "controller-status.json"
        conf = tmp / "vmflow.conf"
        conf.write_text("[DEFAULT]\nlog_level = WARNING\n[api]\nworkers = 1\n"
                        "graceful_timeout = 2\n"
                        f"[controller]\nstatus_file = {self.status}\n")
        self.log = open(tmp / "up.log", "w+")
        self.proc = subprocess.Popen(
            [str(VMFLOW), "up", "--config", str(conf), "--store", f"sqlite:///{tmp}/store.db",
             "--api-listen", f"127.0.0.1:{self.api_port}",
             "--ofp-listen", f"127.0.0.1:{self.ofp_port}"],
            cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 30) -> dict[str, int]:
        deadline = time.time() + timeout
        api_ok = ofp_ok = False
        while time.time() < deadline:
            assert self.proc.poll() is None, f"vmflow up exited early:\n{self.logs()}"
            if not api_ok:
                try:
                    r = requests.get(f"http://127.0.0.1:{self.api_port}/", timeout=1)
                    api_ok = r.status_code in (200, 300) and "versions" in r.json()
                except requests.ConnectionError:
                    pass
            ofp_ok = ofp_ok or listening(self.ofp_port)
            if api_ok and ofp_ok and self.status.exists():
                kids = children(self.proc.pid)
                if set(kids) == {"api", "controller"}:
                    return kids
            time.sleep(0.1)
        pytest.fail(f"vmflow up not ready (api={api_ok} ofp={ofp_ok} "
                    f"status={self.status.exists()}):\n{self.logs()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def up(tmp_path):
    u = Up(tmp_path)
    yield u
    u.close()


def test_up_serves_both_and_sigterm_stops_both_with_exit_0(up):
    kids = up.wait_ready()
    status = json.loads(up.status.read_text())
    assert status["pid"] == kids["controller"]

    t0 = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    rc = up.proc.wait(15)
    took = time.monotonic() - t0
    assert rc == 0, up.logs()
    assert took < 8, f"up took {took:.1f}s to stop"
    assert not alive(kids["api"]) and not alive(kids["controller"])
    assert not listening(up.api_port) and not listening(up.ofp_port)


def test_a_dead_child_stops_the_other_and_up_fails(up):
    kids = up.wait_ready()
    os.kill(kids["controller"], signal.SIGKILL)
    rc = up.proc.wait(15)
    assert rc == 128 + signal.SIGKILL, up.logs()
    assert not alive(kids["api"])
    assert not listening(up.api_port)
    assert (f"controller (pid {kids['controller']}) exited with signal SIGKILL; "
            "stopping the other") in up.logs()
