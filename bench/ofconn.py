"""Short OpenFlow connections against the real controller: threads and memory.

    .venv/bin/python bench/ofconn.py [--cycles 1000] [--code DIR]

Starts `vmflow controller` (from this tree, or from DIR, another checkout, to
compare) on a temporary SQLite store and a loopback port, then runs --cycles
connections of each kind, one after the other, and prints the controller's
thread count and RSS (/proc/PID/status) after each kind, once its threads
have settled:

    hello-read   connect, read the controller's HELLO, close
    features     connect, read HELLO, send HELLO, read FEATURES_REQUEST, close
    full         the whole handshake as an unknown datapath (every 20th cycle
                 of the kind; the rest as hello-read), then close

In each kind the client leaves when the controller has nothing more to send:
the case in which os-ken's own listener kept a connection's two threads.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "mininet"))

from ofclient import FakeSwitch, hello, proc_status  # noqa: E402


def settled(pid: int) -> dict:
    last = None
    for _ in range(60):
        now = proc_status(pid)["Threads"]
        if now == last:
            break
        last = now
        time.sleep(1.0)
    return proc_status(pid)


def read_exact(s: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        chunk = s.recv(n - got)
        if not chunk:
            raise RuntimeError("the controller closed the connection early")
        got += len(chunk)


def run(kind: str, port: int, cycles: int) -> None:
    for i in range(cycles):
        if kind == "full" and i % 20 == 0:
            sw = FakeSwitch(port).handshake(0xBE000000 + i)
            deadline = time.monotonic() + 10
            while sw.types().count(18) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            sw.close()
            continue
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        read_exact(s, 8)
        if kind == "features":
            s.sendall(hello())
            read_exact(s, 8)
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--code", default=str(REPO), help="the vmflow tree to run the controller from")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = Path(tmp) / "vmflow.conf"
        conf.write_text(f"[DEFAULT]\nstore = sqlite:///{tmp}/vmflow.db\n"
                        f"ofp_listen = 127.0.0.1:{port}\nlog_level = WARNING\n"
                        f"[controller]\nstatus_file = {tmp}/status.json\n")
        log = open(Path(tmp) / "controller.log", "w")
        ctl = subprocess.Popen([sys.executable, "-m", "controller.cli", "controller",
                                "--config", str(conf)], cwd=args.code, stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=args.code))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or ctl.poll() is not None:
                        raise SystemExit("the controller did not start")
                    time.sleep(0.2)
            start = settled(ctl.pid)
            print(f"controller from {args.code}")
            print(f"  start:            {start['Threads']:5d} threads  {start['VmRSS'] / 1024:6.1f} MB")
            for kind in ("hello-read", "features", "full"):
                t0 = time.monotonic()
                run(kind, port, args.cycles)
                took = time.monotonic() - t0
                st = settled(ctl.pid)
                print(f"  +{args.cycles} {kind:10s} {st['Threads']:5d} threads  "
                      f"{st['VmRSS'] / 1024:6.1f} MB   ({args.cycles / took:,.0f} connections/s)")
        finally:
            ctl.terminate()
            try:
                ctl.wait(10)
            except subprocess.TimeoutExpired:
                ctl.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
