"""Fixtures: a real `vmflow api` (gunicorn, several workers) on a random loopback port."""
from __future__ import annotations

import pytest

from apihelpers import ApiProcess, Client


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    server = ApiProcess(tmp_path_factory.mktemp("api"), workers=2)
    yield server
    server.stop()


@pytest.fixture
def client(api) -> Client:
    return Client(api.url)


@pytest.fixture
def make_api(tmp_path):
    servers = []

    def start(**kw) -> ApiProcess:
        home = tmp_path / f"server{len(servers)}"
        home.mkdir()
        server = ApiProcess(home, **kw)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def conn(api):
    """openstacksdk, unchanged, against the session's API (no auth, endpoint override)."""
    import openstack
    c = openstack.connect(auth_type="none", network_endpoint_override=api.url + "/",
                          region_name="")
    yield c
    c.close()
