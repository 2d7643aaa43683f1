"""A process that talks to etcd can still start children: gRPC's fork
handlers, on by default, sometimes killed a child between fork and exec
while other threads were inside gRPC (the Mininet harness lost tcpdumps to
it, with "Epoll1Poller ... epoll_wait error: Bad file descriptor")."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILDREN = r"""
import subprocess, sys, threading
sys.path.insert(0, sys.argv[1])
# What a test or the controller imports first: the store, and the cluster.
import topology.store.etcd  # noqa: F401
import controller.cluster  # noqa: F401
import grpc

# Threads inside gRPC at the moment of each fork: a channel that keeps
# trying to reach a port nobody listens on.
channel = grpc.insecure_channel("127.0.0.1:1", options=[
    ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100)])

def poke():
    while True:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.05)
        except Exception:
            pass

for _ in range(4):
    threading.Thread(target=poke, daemon=True).start()
bad = 0
for _ in range(200):
    # preexec_fn forces fork() (no vfork), as the harness's children use it.
    p = subprocess.Popen(["true"], stderr=subprocess.PIPE, preexec_fn=lambda: None)
    _, err = p.communicate()
    bad += bool(p.returncode or err)
print(bad)
"""


def test_children_of_a_grpc_process_start_cleanly():
    p = subprocess.run([sys.executable, "-c", CHILDREN, str(ROOT)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "0", f"{p.stdout.strip()} of 200 children failed: {p.stderr[-2000:]}"
