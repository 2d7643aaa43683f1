"""The `vmflow` command: up | api | controller.

    vmflow api         the Neutron-compatible REST API under gunicorn
    vmflow controller  the OpenFlow controller
    vmflow up          both, with the embedded SQLite store
    vmflow tables      print the pipeline's table map
    vmflow status      print the running controller's status file
    vmflow trace       walk a packet through a host's desired flows (controller/trace.py)
    vmflow explain     name the app and resource that own a flow, by cookie

Every subcommand takes --config FILE, --store URL, --api-listen HOST:PORT and
--ofp-listen HOST:PORT; flags override the file. SIGTERM stops each cleanly.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from oslo_config import cfg

from topology.config import new_conf, parse_ofp_listen, split_hostport

LOG = logging.getLogger("vmflow")


def build_conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    conf = new_conf()
    files = [args.config] if args.config else []
    for path in files:
        if not os.path.exists(path):
            raise SystemExit(f"vmflow: --config {path}: no such file")
    conf(args=[], project="vmflow", default_config_files=files, default_config_dirs=[])
    if args.store:
        conf.set_override("store", args.store)
    if args.api_listen:
        conf.set_override("api_listen", args.api_listen)
    if args.ofp_listen:
        conf.set_override("ofp_listen", args.ofp_listen)
    try:
        split_hostport(conf.api_listen, "--api-listen")
        parse_ofp_listen(conf.ofp_listen, "--ofp-listen")
    except ValueError as e:
        raise SystemExit(f"vmflow: {e}")
    logging.basicConfig(level=getattr(logging, conf.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    return conf


def run_api(conf: cfg.ConfigOpts) -> int:
    from topology.api.server import serve
    return serve(conf)


def run_controller(conf: cfg.ConfigOpts) -> int:
    from controller.runtime import serve
    return serve(conf)


def run_status(conf: cfg.ConfigOpts) -> int:
    """The controller's status file: switches (claimed or not), sync state, counters."""
    import json

    from controller.status import default_path, read_status
    path = default_path(conf)
    status = read_status(path) if path else None
    if status is None:
        print(f"vmflow: no controller status at {path}", file=sys.stderr)
        return 1
    try:
        os.kill(status["pid"], 0)
        status["running"] = True
    except OSError:
        status["running"] = False   # the file outlives the process: say so
    # A controller that stopped writing (hung, or gone) left claims that are
    # no longer known to hold: say how old they are, and claim no sync.
    import time

    from controller.status import STALE_S
    status["age"] = round(time.time() - status.get("time", 0), 3)
    if not status["running"] or status["age"] > STALE_S:
        status["stale"] = True
        status["synced"] = False
        status["store_ok"] = False
        for sw in (status.get("switches") or {}).values():
            sw["in_sync"] = False
    else:
        status["stale"] = False
    print(json.dumps(status, indent=1, sort_keys=True))
    return 0


def run_up(args: argparse.Namespace) -> int:
    """Both processes as children; the first to die, or SIGTERM, stops both."""
    base = [sys.executable, "-m", "controller.cli"]
    passthrough = []
    for flag in ("config", "store", "api_listen", "ofp_listen"):
        value = getattr(args, flag)
        if value:
            passthrough += ["--" + flag.replace("_", "-"), value]
    children = [subprocess.Popen(base + [cmd] + passthrough) for cmd in ("api", "controller")]
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    names = dict(zip(children, ("api", "controller")))
    try:
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        for c in children:
            if not stopping and c.returncode is not None:
                LOG.error("vmflow up: %s (pid %d) exited with %s; stopping the other",
                          names[c], c.pid, _exit_text(c.returncode))
    finally:
        stop_children(children)
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
    if stopping and not failed:
        return 0
    # A child killed by a signal reports -N; exit as a shell would (128+N).
    code = failed[0] if failed else 1
    return 128 - code if code < 0 else code


def stop_children(children: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM every child still running; SIGKILL those not gone within grace_s."""
    for c in children:
        if c.poll() is None:
            c.terminate()
    deadline = time.time() + grace_s
    for c in children:
        try:
            c.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"status {returncode}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vmflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "API and controller together (embedded SQLite store)"),
                       ("api", "the Neutron-compatible REST API"),
                       ("controller", "the OpenFlow 1.3 controller"),
                       ("tables", "print the pipeline's table map"),
                       ("status", "print the running controller's status file (JSON)"),
                       ("trace", "walk a packet through a host's desired flows"),
                       ("explain", "name the app and resource that own a flow"),
                       ("cluster-demo", "a 3-member etcd, several controllers holding "
                                        "OpenFlow roles, and the API, on loopback")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", metavar="FILE", help="oslo.config INI file")
        p.add_argument("--store", metavar="URL", help="store URL (default sqlite:///var/vmflow.db)")
        p.add_argument("--api-listen", metavar="HOST:PORT", help="default 127.0.0.1:9696")
        p.add_argument("--ofp-listen", metavar="[tcp:|ssl:]HOST:PORT",
                       help="default 0.0.0.0:6653 (plain TCP)")
        if name in ("trace", "explain"):
            from controller.trace import add_arguments
            add_arguments(name, p)
        if name == "cluster-demo":
            from controller.cluster_demo import add_arguments as demo_arguments
            demo_arguments(p)
    args = parser.parse_args(argv)
    if args.command in ("trace", "explain"):
        from controller.trace import run
        return run(args.command, build_conf(args), args)
    if args.command == "tables":
        from controller.pipeline import describe
        print(describe())
        return 0
    if args.command == "cluster-demo":
        from controller.cluster_demo import run as run_demo
        return run_demo(args)
    if args.command == "status":
        return run_status(build_conf(args))
    if args.command == "up":
        build_conf(args)  # validate flags before starting anything
        return run_up(args)
    conf = build_conf(args)
    return run_api(conf) if args.command == "api" else run_controller(conf)


if __name__ == "__main__":
    sys.exit(main())
