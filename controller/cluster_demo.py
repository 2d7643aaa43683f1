"""`vmflow cluster-demo`: a 3-member etcd on loopback, N controllers holding
OpenFlow roles, and the API, on one machine; Ctrl-C stops everything.

Each controller gets its own OpenFlow port (ofp_base_port, +1, ...), its own
status file and [cluster] controller_id c0, c1, ...; they share the store, by
default the same etcd cluster (--store names another).
The demo prints the ovs-vsctl line that connects a bridge to all of them
(as service controllers, README: OVS restarts).
Kill one (`kill -9 PID`) and watch its switches move: `vmflow status
--config WORKDIR/vmflow-cN.conf` shows each switch's role.
"""
from __future__ import annotations

import configparser
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.cli import stop_children

LOG = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--controllers", type=int, default=3, choices=(2, 3, 4, 5),
                   help="how many controllers (default 3)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the configs, logs and etcd data go (default: a new "
                        "temporary directory, removed at the end)")
    p.add_argument("--ofp-base-port", type=int, default=6653,
                   help="controller i listens for OpenFlow on 127.0.0.1:BASE+i (default 6653)")
    p.add_argument("--lease-ttl", type=int, default=3, help="[cluster] lease_ttl (default 3)")


def write_configs(workdir: Path, n: int, etcd: str, *, store: str, api_listen: str,
                  ofp_base_port: int, lease_ttl: int) -> list[Path]:
    """One config file per controller; the first also serves the API."""
    paths = []
    for i in range(n):
        cp = configparser.ConfigParser()
        cp["DEFAULT"] = {"store": store, "api_listen": api_listen,
                         "ofp_listen": f"127.0.0.1:{ofp_base_port + i}"}
        cp["controller"] = {"status_file": str(workdir / f"controller-c{i}-status.json")}
        cp["cluster"] = {"etcd": etcd, "controller_id": f"c{i}", "lease_ttl": str(lease_ttl)}
        path = workdir / f"vmflow-c{i}.conf"
        with open(path, "w") as f:
            cp.write(f)
        paths.append(path)
    return paths


def run(args) -> int:
    from topology.etcd_cluster import EtcdCluster

    own = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vmflow-cluster-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = args.store
    api_listen = args.api_listen or "127.0.0.1:9696"
    etcd = EtcdCluster(3, workdir=str(workdir / "etcd"))
    children: list[subprocess.Popen] = []
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        etcd.start()
        endpoints = ",".join(f"127.0.0.1:{m.client_port}" for m in etcd.members)
        # The documents live in the same etcd cluster as the membership,
        # unless --store names another store.
        store = store or "etcd://" + endpoints
        configs = write_configs(workdir, args.controllers, endpoints, store=store,
                                api_listen=api_listen, ofp_base_port=args.ofp_base_port,
                                lease_ttl=args.lease_ttl)
        base = [sys.executable, "-m", "controller.cli"]
        for name, conf in [("api", configs[0])] + [(f"controller-c{i}", c)
                                                    for i, c in enumerate(configs)]:
            log = open(workdir / f"{name}.log", "ab")
            cmd = "api" if name == "api" else "controller"
            children.append(subprocess.Popen(base + [cmd, "--config", str(conf)],
                                             stdout=log, stderr=subprocess.STDOUT))
            log.close()
        connect = "ovs-vsctl " + " ".join(
            f"-- --id=@c{i} create controller target='\"tcp:127.0.0.1:{args.ofp_base_port + i}\"'"
            f" type=service" for i in range(args.controllers)) + \
            " -- set bridge BRIDGE controller=[" + ",".join(
                f"@c{i}" for i in range(args.controllers)) + "]"
        print(f"etcd:        {endpoints} (3 members, data in {workdir / 'etcd'})")
        print(f"store:       {store}")
        print(f"API:         http://{api_listen}/v2.0/  (pid {children[0].pid})")
        for i, c in enumerate(children[1:]):
            print(f"controller:  c{i} pid {c.pid}, OpenFlow 127.0.0.1:{args.ofp_base_port + i}, "
                  f"config {configs[i]}")
        print(f"connect:     {connect}")
        print(f"logs:        {workdir}/*.log   stop: Ctrl-C", flush=True)
        # A controller that dies is what the demo is for: its switches move
        # to the others. Only the API's end, or the last controller's, ends it.
        reported: set[int] = set()
        while not stopping:
            for c in children:
                if c.poll() is not None and c.pid not in reported:
                    reported.add(c.pid)
                    print(f"cluster-demo: pid {c.pid} exited ({c.returncode})", file=sys.stderr,
                          flush=True)
            if children[0].poll() is not None or all(c.poll() is not None
                                                     for c in children[1:]):
                code = 1
                break
            time.sleep(0.2)
    finally:
        stop_children(children)
        etcd.stop()
        if own:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    return code

