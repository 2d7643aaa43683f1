"""`vmflow api`: the falcon app under gunicorn, started from Python.

Workers are topology.api.worker.BufferingWorker: gunicorn's gthread worker
whose event loop reads every request whole (with header and body deadlines
and size limits) before a thread runs it, so slow clients cannot take the
threads. bench/RESULTS.md has the measurements behind the choice.

The master opens the store once (running schema migrations) and closes it
before forking, so no SQLite connection crosses a fork; each worker then
builds its own app and connections. SIGTERM is gunicorn's graceful stop:
workers finish the requests they hold (up to api.graceful_timeout) and exit.
"""
from __future__ import annotations

import ipaddress
import logging

from gunicorn.app.base import BaseApplication
from oslo_config import cfg

from topology.api import metrics
from topology.api.app import create_app, parse_vlan_ranges
from topology.api.auth import load_tokens
from topology.config import split_hostport
from topology.store import open_store

LOG = logging.getLogger(__name__)


def bind_address(listen: str) -> str:
    host, port = split_hostport(listen, "api_listen")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ApiServer(BaseApplication):
    def __init__(self, conf: cfg.ConfigOpts):
        self.conf = conf
        super().__init__()

    def load_config(self) -> None:
        api = self.conf.api
        options = {
            "bind": [bind_address(self.conf.api_listen)],
            "workers": api.workers,
            "worker_class": "topology.api.worker.BufferingWorker",
            "threads": api.threads,
            "worker_connections": api.worker_connections,
            "keepalive": api.keepalive_timeout,
            # The worker refuses a header over api.max_header_size as a whole,
            # with a Neutron body; gunicorn's own per-line limits (4094 bytes
            # a request line by default: a port list filtered by a few dozen
            # ids) would refuse less, and in gunicorn's own shape.
            "limit_request_line": 0,
            "limit_request_field_size": api.max_header_size,
            "limit_request_fields": 32768,
            "timeout": api.timeout,
            "graceful_timeout": api.graceful_timeout,
            "preload_app": False,
            "proc_name": "vmflow-api",
            "loglevel": self.conf.log_level.lower(),
            "errorlog": "-",
            "accesslog": None,
            # Several API servers (tests, benchmarks) may run side by side.
            "control_socket_disable": True,
        }
        if metrics.enabled():
            options["child_exit"] = lambda _arbiter, worker: metrics.worker_exited(worker.pid)
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        # check() migrated in the master. A worker that opened the store as it
        # boots would fail to boot while the store is stalled, and gunicorn
        # stops the whole server when a worker fails to boot.
        return create_app(self.conf, open_store(self.conf.store, migrate=False,
                                                timeout_s=self.conf.api.store_timeout))


def check(conf: cfg.ConfigOpts) -> None:
    """Fail before forking on what every worker would trip over."""
    store = open_store(conf.store)
    store.close()
    parse_vlan_ranges(conf.api.network_vlan_ranges)
    if conf.api.auth_strategy == "token":
        load_tokens(conf.api.token_file)
    if conf.api.metrics_listen:
        split_hostport(conf.api.metrics_listen, "api.metrics_listen")
    host, _port = split_hostport(conf.api_listen, "api_listen")
    if conf.api.auth_strategy == "noauth" and not is_loopback(host):
        raise ValueError(f"auth_strategy=noauth makes every caller an admin: it listens on "
                         f"loopback only, not {conf.api_listen}; use auth_strategy=token")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(conf: cfg.ConfigOpts) -> int:
    try:
        check(conf)
    except ValueError as e:
        LOG.error("%s", e)
        return 2
    LOG.info("API on http://%s with %d workers of %d threads, store %s", conf.api_listen,
             conf.api.workers, conf.api.threads, conf.store)
    metrics_dir = None
    if conf.api.metrics_listen:
        metrics_dir = metrics.prepare()
        try:
            metrics.serve(split_hostport(conf.api.metrics_listen, "api.metrics_listen"))
        except OSError as e:
            LOG.error("api.metrics_listen %s: %s", conf.api.metrics_listen, e)
            metrics.cleanup(metrics_dir)
            return 2
        LOG.info("API metrics on http://%s/metrics", conf.api.metrics_listen)
    try:
        ApiServer(conf).run()
    finally:
        metrics.cleanup(metrics_dir)
    return 0
