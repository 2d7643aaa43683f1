"""`vmflow controller`: start os-ken with our app and the controller core.

os-ken 4.x has no osken-manager: its options are parsed with
os_ken.cfg.CONF(args=[...]) and apps started with AppManager.run_apps,
which blocks. The hub is native threads, whose kill() is a no-op, so
run_apps' shutdown path can raise AttributeError on t.kill(); and os-ken's
threads are not daemons, so after a clean stop the process leaves with
os._exit(0) rather than waiting on sockets that never close.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time

from controller.app import APPS
from controller.core import Controller
from controller.dispatch import Dispatcher
from controller.status import default_path, write_status
from topology.config import parse_ofp_listen
from topology.store import open_store
from topology.store.base import ensure_secret

LOG = logging.getLogger(__name__)



class AppLoadError(Exception):
    """A configured app cannot run: the controller must not start without it
    (a controller silently missing ARP or DHCP looks healthy and is not)."""


def load_apps(conf) -> list:
    names = [n.strip() for n in conf.controller.apps if n.strip()]
    if not names:
        raise AppLoadError("[controller] apps is empty: nothing would program the switches")
    apps = []
    for name in names:
        if name not in APPS:
            raise AppLoadError(f"[controller] apps: unknown app {name!r} "
                               f"(known: {', '.join(APPS)})")
        module, cls = APPS[name].entry.split(":")
        try:
            app = getattr(importlib.import_module(module), cls)(conf)
        except Exception as e:
            raise AppLoadError(f"app {name} ({module}.{cls}) failed to load: "
                               f"{type(e).__name__}: {e}") from e
        apps.append(app)
    LOG.info("apps: %s", ", ".join(a.name for a in apps))
    return apps


def build_controller(conf, store=None, apps=None) -> Controller:
    """The controller core with its dispatcher, not yet started (also used by tests)."""
    store = store if store is not None else open_store(conf.store)
    apps = apps if apps is not None else load_apps(conf)
    if any(a.name == "metadata" for a in apps):
        from apps.metadata import TOKEN_SECRET
        ensure_secret(store, TOKEN_SECRET)
    ctl = Controller(conf, store, apps, status_path=default_path(conf))

    def send_packet(dpid: int, port: int, data: bytes) -> None:
        sw = ctl.switches.get(dpid)
        if sw is None:
            raise LookupError(f"switch {dpid:016x} is not connected")
        sw.channel.packet_out(port, data)

    def lookup(dpid: int, in_port: int):
        sw, port = ctl.port_at(dpid, in_port)
        return sw, port, ctl.view

    ctl.dispatcher = Dispatcher(apps, queue_size=conf.controller.packet_in_queue,
                                lock=ctl.lock, lookup=lookup, send_packet=send_packet,
                                call_later=ctl.call_later)
    return ctl


PIN_CHECK_S = 1.0


def _pins_from(ctl):
    """dpid -> its host's switch_cert_sha256 in the controller's view. Read
    without the core's lock (one dict lookup on a view the core swaps or
    updates in place), so admitting a switch never waits on a recompute."""
    def pin_for(dpid: int):
        view = ctl.view
        host = view.host_for_dpid(dpid) if view is not None else None
        return host.get("switch_cert_sha256") if host else None
    return pin_for


def _enforce_pins(conns) -> None:
    """A pin set or changed in the API reaches connected switches within PIN_CHECK_S."""
    while True:   # a daemon thread: it ends with the process
        time.sleep(PIN_CHECK_S)
        try:
            conns.enforce_pins()
        except Exception:
            LOG.exception("checking switch certificate pins")


def join_cluster(conf, ctl, ofp_port: int):
    """Several controllers: join the etcd membership and hold roles by it
    (controller/cluster.py). Raises if etcd cannot be reached."""
    import socket
    from controller.cluster import Membership, parse_endpoints
    endpoints = parse_endpoints(conf.cluster.etcd)
    cid = conf.cluster.controller_id or f"{socket.gethostname()}-{ofp_port}"
    membership = Membership(endpoints, cid, lease_ttl=conf.cluster.lease_ttl,
                            info={"ofp_listen": conf.ofp_listen})
    ctl.attach_cluster(membership)
    membership.start(timeout=max(10.0, 3 * conf.cluster.lease_ttl))
    LOG.info("cluster: controller %s, lease TTL %d s, etcd %s", cid,
             conf.cluster.lease_ttl, conf.cluster.etcd)
    return membership


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT to leave run_apps."""


def open_listener(conf):
    """The bound OpenFlow listener (ofconn.Listener) for conf.ofp_listen;
    ValueError or OSError says why there is none."""
    from controller.ofconn import Connections, Limits, Listener, is_loopback, tls_context
    scheme, host, port = parse_ofp_listen(conf.ofp_listen, "--ofp-listen")
    tls = tls_context(conf) if scheme == "ssl" else None
    if tls is None and not is_loopback(host):
        LOG.warning("OpenFlow listens on plain TCP at %s:%d: anyone who reaches it can "
                    "connect as a switch. Use ofp_listen = ssl:%s:%d with [openflow] "
                    "ca_cert, certificate and private_key (README: OpenFlow over TLS)",
                    host, port, host, port)
    return Listener.bind(host, port, Connections(Limits.from_conf(conf)), tls)


def serve(conf) -> int:
    # Imported here: importing os-ken's controller registers its CLI options.
    import os_ken.cfg
    from os_ken.base.app_manager import AppManager
    import os_ken.controller.controller  # noqa: F401  (after app_manager: import cycle)
    from os_ken.controller import ofp_handler

    from controller import ofapp

    try:
        listener = open_listener(conf)
    except (ValueError, OSError) as e:
        LOG.error("controller not started: OpenFlow listener %s: %s", conf.ofp_listen, e)
        print(f"vmflow controller: OpenFlow listener {conf.ofp_listen}: {e}", file=sys.stderr)
        return 2
    try:
        ctl = build_controller(conf)
    except AppLoadError as e:
        LOG.error("controller not started: %s", e)
        print(f"vmflow controller: {e}", file=sys.stderr)
        return 2
    ctl.ofconns = listener.conns
    listener.conns.pin_for = _pins_from(ctl)
    threading.Thread(target=_enforce_pins, args=(listener.conns,), daemon=True,
                     name="vmflow-pins").start()
    ofapp.CORE = ctl
    ofapp.CONNECTIONS = listener.conns
    # os-ken's OFPHandler builds its listener by this module-level name and
    # runs it; ours replaces os-ken's, whose connections leak their threads
    # (controller/ofconn.py says how).
    ofp_handler.OpenFlowController = lambda: listener
    os_ken.cfg.CONF(args=[], project="os_ken", default_config_files=[])
    host, port = listener.address

    def stop(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metrics_server = None
    if conf.controller.metrics_listen:
        from controller import metrics
        try:
            metrics_server = metrics.serve(ctl, conf.controller.metrics_listen)
        except (ValueError, OSError) as e:
            LOG.error("controller not started: metrics listener %s: %s",
                      conf.controller.metrics_listen, e)
            print(f"vmflow controller: metrics listener {conf.controller.metrics_listen}: {e}",
                  file=sys.stderr)
            return 2
    membership = None
    if conf.cluster.etcd:
        try:
            membership = join_cluster(conf, ctl, port)
        except Exception as e:   # a bad endpoint list, or etcd out of reach
            LOG.error("controller not started: [cluster] etcd %s: %s", conf.cluster.etcd, e)
            print(f"vmflow controller: [cluster] etcd {conf.cluster.etcd}: {e}", file=sys.stderr)
            return 2
    ctl.start()
    ctl.dispatcher.start()
    LOG.info("controller listening for OpenFlow 1.3 on %s:%s:%d",
             "ssl" if listener.tls is not None else "tcp", host, port)
    code = 0
    try:
        AppManager.run_apps(["controller.ofapp"])
        # run_apps returns on its own only when os-ken's threads died.
        LOG.error("os-ken stopped by itself")
        code = 1
    except _Stop:
        pass
    except AttributeError as e:
        # run_apps' finally calls t.kill() on native threads, which have none.
        LOG.debug("os-ken shutdown: %s", e)
    except Exception:
        LOG.exception("controller failed")
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if membership is not None:
                # Revoked, not left to expire: the others take over at once.
                membership.stop()
            ctl.stop()
            ctl.dispatcher.stop()
            if metrics_server is not None:
                metrics_server.shutdown()
            if ctl.status_path:
                write_status(ctl.status_path, ctl.status())
        except Exception:
            LOG.exception("controller shutdown")
        LOG.info("controller stopped")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
