"""8 clients create 800 ports on one /22: against 4 gunicorn workers on
SQLite, and against 2 API processes (`vmflow api`, 2 workers each) sharing
a 3-member etcd cluster, each client talking to one of them."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from apihelpers import ApiProcess, Client

CLIENTS = 8
PORTS = 800
# The etcd run creates fewer in the suite (800 take ~50 s on a 2-core
# machine); VMFLOW_ETCD_CONCURRENCY_PORTS=800 runs the full count.
ETCD_PORTS = int(os.environ.get("VMFLOW_ETCD_CONCURRENCY_PORTS", "200"))


def test_no_address_given_twice_and_no_write_lost(make_api):
    api = make_api(workers=4)
    create_and_check([api], api)


def test_two_api_processes_on_etcd_give_no_address_twice_and_lose_no_write(
        make_api, etcd_cluster):
    apis = [make_api(workers=2, store_url=etcd_cluster.store_url) for _ in range(2)]
    create_and_check(apis, apis[0], ETCD_PORTS)


def create_and_check(apis: list[ApiProcess], api: ApiProcess, ports: int = PORTS) -> None:
    setup = Client(api.url)
    net = setup.network()
    sub = setup.subnet(net["id"], "10.64.0.0/22")

    def worker(n: int) -> list[dict]:
        c = Client(apis[n % len(apis)].url)
        made = []
        for _ in range(ports // CLIENTS):
            r = c.call("POST", "/ports", {"port": {"network_id": net["id"]}})
            assert r.status_code == 201, r.text
            made.append(r.json()["port"])
        return made

    with ThreadPoolExecutor(CLIENTS) as pool:
        created = [p for batch in pool.map(worker, range(CLIENTS)) for p in batch]

    assert len(created) == ports
    ips = [p["fixed_ips"][0]["ip_address"] for p in created]
    macs = [p["mac_address"] for p in created]
    assert len(set(ips)) == ports
    assert len(set(macs)) == ports
    assert all(p["fixed_ips"][0]["subnet_id"] == sub["id"] for p in created)

    listed = setup.call("GET", f"/ports?network_id={net['id']}").json()["ports"]
    vm_ports = {p["id"]: p for p in listed if p["device_owner"] != "network:dhcp"}
    assert set(vm_ports) == {p["id"] for p in created}
    for p in created:
        assert vm_ports[p["id"]]["fixed_ips"] == p["fixed_ips"]
        assert vm_ports[p["id"]]["mac_address"] == p["mac_address"]
    dhcp_ip = next(p for p in listed if p["device_owner"] == "network:dhcp")["fixed_ips"][0]["ip_address"]
    assert dhcp_ip not in ips

    # The store agrees: one claim per address, one port key per port.
    store = api.open_store()
    with store.read() as r:
        assert len(r.claimed_keys(f"ip:{sub['id']}")) == ports + 1
        keys = [r.get("ports", p["id"])["_key"] for p in created]
    store.close()
    assert len(set(keys)) == ports
