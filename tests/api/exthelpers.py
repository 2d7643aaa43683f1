"""Building blocks for the external network API tests: an external network,
a tenant subnet behind a router with a gateway, a VM port on it."""
from __future__ import annotations

import itertools

# Every external network is a VLAN on its own id of physnet "ext", so the
# tests can share the session's API server without claiming the same segment.
_segments = itertools.count(3001)


def external_network(client, cidr: str, **subnet_attrs) -> tuple[dict, dict]:
    net = client.network(name="ext", **{"router:external": True,
                                        "provider:network_type": "vlan",
                                        "provider:physical_network": "ext",
                                        "provider:segmentation_id": next(_segments)})
    subnet = client.subnet(net["id"], cidr, enable_dhcp=False, **subnet_attrs)
    return net, subnet


def router_with_gateway(client, ext_net: dict, **attrs) -> dict:
    return client.create("routers", "router", name="gw",
                         external_gateway_info={"network_id": ext_net["id"]}, **attrs)


def tenant_subnet(client, cidr: str, router: dict | None = None) -> tuple[dict, dict]:
    net = client.network(name="tenant")
    subnet = client.subnet(net["id"], cidr)
    if router is not None:
        r = client.call("PUT", f"/routers/{router['id']}/add_router_interface",
                        {"subnet_id": subnet["id"]})
        assert r.status_code == 200, r.text
    return net, subnet


def world(client, ext_cidr: str, tenant_cidr: str) -> dict:
    """External network, a router with its gateway there, a tenant subnet on
    the router and a VM port on that subnet."""
    ext, ext_sub = external_network(client, ext_cidr)
    router = router_with_gateway(client, ext)
    net, sub = tenant_subnet(client, tenant_cidr, router)
    port = client.port(net["id"], device_id="vm", device_owner="compute:nova")
    return {"ext": ext, "ext_subnet": ext_sub, "router": router, "net": net, "subnet": sub,
            "port": port}


def fip(client, network_id: str, **attrs):
    return client.call("POST", "/floatingips",
                       {"floatingip": {"floating_network_id": network_id, **attrs}})


def count(client, path: str, key: str) -> int:
    return len(client.call("GET", path).json()[key])
