"""Helpers for API tests: a real `vmflow api` process (gunicorn) and a small client."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

# the one free-port helper of the tests; tests/conftest.py puts tests/mininet on sys.path
from harness import free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    def __init__(self, tmp: Path, *, workers: int = 2, auth: dict | None = None,
                 extra: str = "", store_url: str | None = None):
        self.db = tmp / "store.db"
        # SQLite in the test's directory unless a store (an etcd cluster) is given.
        self.store_url = store_url or f"sqlite:///{self.db}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = tmp / "vmflow.conf"
        lines = ["[DEFAULT]", "log_level = WARNING", "[api]", f"workers = {workers}",
                 "graceful_timeout = 5"]
        if auth is not None:
            tokens = tmp / "tokens.json"
            tokens.write_text(json.dumps(auth))
            lines += ["auth_strategy = token", f"token_file = {tokens}"]
        conf.write_text("\n".join(lines) + "\n" + extra)
        self.log = open(tmp / "api.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "api", "--config", str(conf),
             "--store", self.store_url, "--api-listen", f"127.0.0.1:{self.port}"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vmflow api exited: {self.logs()}")
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"vmflow api did not answer: {self.logs()}")

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def open_store(self):
        """The server's store, opened from the test (close it after)."""
        from topology.store import open_store
        return open_store(self.store_url, migrate=False)

    def revision(self) -> int:
        store = self.open_store()
        try:
            return store.revision()
        finally:
            store.close()


class Client:
    """requests against the API, with Neutron's envelope helpers."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url + "/v2.0"
        self.s = requests.Session()
        if token:
            self.s.headers["X-Auth-Token"] = token

    def call(self, method: str, path: str, body=None, **kw) -> requests.Response:
        return self.s.request(method, self.url + path, json=body, timeout=30, **kw)

    def create(self, collection: str, member: str, **attrs) -> dict:
        r = self.call("POST", f"/{collection}", {member: attrs})
        assert r.status_code == 201, r.text
        return r.json()[member]

    def network(self, **attrs) -> dict:
        return self.create("networks", "network", **attrs)

    def subnet(self, network_id: str, cidr: str, **attrs) -> dict:
        return self.create("subnets", "subnet", network_id=network_id, cidr=cidr, **attrs)

    def port(self, network_id: str, **attrs) -> dict:
        return self.create("ports", "port", network_id=network_id, **attrs)


def error(r: requests.Response) -> dict:
    body = r.json()["NeutronError"]
    assert set(body) == {"type", "message", "detail"}
    return body
