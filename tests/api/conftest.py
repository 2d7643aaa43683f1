"""Fixtures: a real `vmflow api` (gunicorn, several workers) on a random loopback port.

Every test that uses the session's API (`api`, `client`, `conn`) runs twice:
on the embedded SQLite store and on a 3-member etcd cluster the session
starts on loopback (topology/etcd_cluster.py). Tests that start servers of
their own (make_api, ApiProcess) run on SQLite unless they ask for etcd.
"""
from __future__ import annotations

import pytest

from apihelpers import ApiProcess, Client
from topology.etcd_cluster import EtcdCluster

STORES = ("sqlite", "etcd")


@pytest.fixture(scope="session")
def etcd_cluster():
    """A 3-member etcd cluster for the session; a test that kills members
    starts a cluster of its own instead."""
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session", params=STORES)
def store_kind(request):
    return request.param


@pytest.fixture(scope="session")
def api(store_kind, tmp_path_factory, request):
    store_url = None
    if store_kind == "etcd":
        store_url = request.getfixturevalue("etcd_cluster").store_url
    server = ApiProcess(tmp_path_factory.mktemp(f"api-{store_kind}"), workers=2,
                        store_url=store_url)
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
