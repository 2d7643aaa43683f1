"""Arbitrary JSON bodies never crash the API: 2xx, or a 4xx in Neutron's shape
that writes nothing. Runs the falcon app in-process for speed; the same app
serves under gunicorn in tests/api."""
from __future__ import annotations

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topology.api.app import create_app
from topology.config import new_conf
from topology.store import SqliteStore

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["10.0.0.5", "10.0.0.0/24", "fa:16:3e:00:00:01", "vlan",
                                     "flat", "physnet1", "true", "0x1", "aGk="]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)

FIELDS = {
    "networks": ["name", "mtu", "shared", "admin_state_up", "provider:network_type",
                 "provider:physical_network", "provider:segmentation_id"],
    "subnets": ["network_id", "cidr", "gateway_ip", "allocation_pools", "dns_nameservers",
                "host_routes", "enable_dhcp", "ip_version"],
    "ports": ["network_id", "mac_address", "fixed_ips", "allowed_address_pairs",
              "security_groups", "binding:profile", "port_security_enabled"],
    "hosts": ["name", "datapath_id", "physical_networks", "dvr_mac", "is_gateway",
              "switch_cert_sha256"],
    "instances": ["id", "hostname", "user_data", "meta", "public_keys"],
}
MEMBER = {"networks": "network", "subnets": "subnet", "ports": "port", "hosts": "host",
          "instances": "instance"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = SqliteStore(str(tmp_path_factory.mktemp("fuzz") / "s.db"))
    client = falcon.testing.TestClient(create_app(conf, store))
    net = client.simulate_post("/v2.0/networks", json={"network": {}}).json["network"]
    client.simulate_post("/v2.0/subnets", json={"subnet": {"network_id": net["id"],
                                                           "cidr": "10.0.0.0/24"}})
    yield client, store, net["id"]
    store.close()


@st.composite
def bodies(draw):
    collection = draw(st.sampled_from(sorted(FIELDS)))
    names = draw(st.lists(st.sampled_from(FIELDS[collection]), max_size=4, unique=True))
    body = {n: draw(JSON) for n in names}
    return collection, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bodies(), use_network=st.booleans())
def test_any_body_is_a_clean_answer(app, case, use_network):
    client, store, network_id = app
    collection, body = case
    if use_network and "network_id" in FIELDS[collection]:
        body["network_id"] = network_id
    before = store.revision()
    r = client.simulate_post(f"/v2.0/{collection}", json={MEMBER[collection]: body})
    assert r.status_code in (201, 400, 403, 404, 409), r.text
    if r.status_code != 201:
        err = r.json["NeutronError"]
        assert err["type"] and err["message"]
        assert store.revision() == before
