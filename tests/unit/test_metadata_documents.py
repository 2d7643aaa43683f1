"""Metadata documents (EC2, OpenStack, IMDSv2) and the HTTP layer, as pure functions."""
from __future__ import annotations

import base64
import json

import pytest

from apps.metadata import documents
from apps.metadata.documents import Context, serve
from apps.metadata.http import (MAX_HEAD, HttpSession, ParseError, Request, Response,
                                parse_request, render)
from apps.metadata.tokens import TokenIssuer, parse_ttl
from topology.view import TopologyView

NET, SUBNET = "net-1", "sub-1"
PORT_ID = "port-vm1-aaaaaaaa"
PORT2_ID = "port-vm2-bbbbbbbb"
NOINST_ID = "port-vm3-cccccccc"
VM_MAC, VM_IP = "fa:16:3e:00:00:05", "10.0.0.5"
VM2_MAC, VM2_IP = "fa:16:3e:00:00:06", "10.0.0.6"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4E test@example"
USER_DATA = b"#cloud-config\nhostname: vm-one\n"


def port_doc(pid, key, mac, addr, device, host="h1", sgs=("sg-1",)):
    return {"id": pid, "network_id": NET, "mac_address": mac,
            "fixed_ips": [{"subnet_id": SUBNET, "ip_address": addr}],
            "device_id": device, "device_owner": "compute:nova", "binding:host_id": host,
            "security_groups": list(sgs), "_key": key, "project_id": "proj-1"}


def make_view(user_data=USER_DATA, extra_ports=(), floating=None) -> TopologyView:
    ports = [port_doc(PORT_ID, 5, VM_MAC, VM_IP, "inst-1"),
             port_doc(PORT2_ID, 6, VM2_MAC, VM2_IP, "inst-2", host="h2"),
             port_doc(NOINST_ID, 7, "fa:16:3e:00:00:07", "10.0.0.7", ""),
             *extra_ports]
    inst1 = {"id": "inst-1", "hostname": "vm-one", "name": "VM One",
             "user_data": base64.b64encode(user_data).decode() if user_data else None,
             "meta": {"role": "web"}, "public_keys": {"mykey": KEY},
             "availability_zone": "az-1", "project_id": "proj-1"}
    inst2 = {"id": "inst-2", "hostname": "vm-two", "user_data": None, "meta": {},
             "public_keys": {}, "availability_zone": "az-2", "project_id": "proj-1"}
    data = {
        "networks": {NET: {"id": NET, "mtu": 1400, "_key": 1}},
        "subnets": {SUBNET: {"id": SUBNET, "network_id": NET, "cidr": "10.0.0.0/24",
                             "gateway_ip": "10.0.0.1", "dns_nameservers": ["10.0.0.53"],
                             "host_routes": [{"destination": "192.168.0.0/16",
                                              "nexthop": "10.0.0.254"}],
                             "enable_dhcp": True, "ip_version": 4}},
        "ports": {p["id"]: p for p in ports},
        "security_groups": {"sg-1": {"id": "sg-1", "name": "default"}},
        "instances": {"inst-1": inst1, "inst-2": inst2},
        "hosts": {"h1": {"name": "h1", "datapath_id": "0000000000000001"},
                  "h2": {"name": "h2", "datapath_id": "0000000000000002"}},
    }
    if floating:
        data["floatingips"] = {"fip-1": {"id": "fip-1", "port_id": PORT_ID,
                                         "floating_ip_address": floating}}
    return TopologyView(1, data)


TOKENS = TokenIssuer(b"k" * 32)


def ask(path, port_id=PORT_ID, method="GET", headers=None, view=None, now=100.0) -> Response:
    view = view or make_view()
    port = view.ports.get(port_id)
    inst = view.instance_for_port(port) if port else None
    hdrs = {"host": "169.254.169.254", **{k.lower(): v for k, v in (headers or {}).items()}}
    return serve(Request(method, path, "HTTP/1.1", hdrs), Context(port, inst, view, TOKENS, now))


def text(path, **kw) -> str:
    r = ask(path, **kw)
    assert r.status == 200, (path, r.status)
    return r.body.decode()


# -- EC2 ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["latest", "2009-04-04"])
def test_ec2_leaves(version):
    base = f"/{version}/meta-data/"
    assert text(base + "instance-id") == "inst-1"
    assert text(base + "hostname") == "vm-one"
    assert text(base + "local-hostname") == "vm-one"
    assert text(base + "local-ipv4") == VM_IP
    assert text(base + "mac") == VM_MAC
    assert text(base + "public-ipv4") == ""
    assert text(base + "placement/availability-zone") == "az-1"
    assert text(base + "security-groups") == "default"
    assert text(base + "public-keys/0/openssh-key") == KEY + "\n"
    assert ask(f"/{version}/user-data").body == USER_DATA


def test_ec2_listings_mark_directories_with_a_slash():
    listing = text("/latest/meta-data/").split("\n")
    for leaf in ("instance-id", "hostname", "local-hostname", "local-ipv4", "mac",
                 "public-ipv4", "security-groups"):
        assert leaf in listing
    for d in ("network/", "placement/", "public-keys/"):
        assert d in listing
    assert text("/latest/meta-data") == text("/latest/meta-data/")
    assert text("/latest/meta-data/placement/") == "availability-zone"
    assert text("/latest/meta-data/public-keys/") == "0=mykey"
    assert text("/latest/meta-data/public-keys/0/") == "openssh-key"
    assert text("/") == "2009-04-04\nlatest"
    assert text("/latest/") == "meta-data/\nuser-data"


def test_ec2_network_interfaces():
    assert text("/latest/meta-data/network/") == "interfaces/"
    assert text("/latest/meta-data/network/interfaces/") == "macs/"
    assert text("/latest/meta-data/network/interfaces/macs/") == VM_MAC + "/"
    base = f"/latest/meta-data/network/interfaces/macs/{VM_MAC}/"
    listing = text(base).split("\n")
    assert {"device-number", "local-ipv4s", "mac", "subnet-id",
            "subnet-ipv4-cidr-block", "security-group-ids"} <= set(listing)
    assert text(base + "local-ipv4s") == VM_IP
    assert text(base + "subnet-ipv4-cidr-block") == "10.0.0.0/24"
    assert text(base + "device-number") == "0"
    assert text(base + "mac") == VM_MAC


def test_second_port_of_the_instance_is_listed_after_the_asking_one():
    extra = port_doc("port-vm1b-dddddddd", 8, "fa:16:3e:00:00:08", "10.0.0.8", "inst-1")
    view = make_view(extra_ports=[extra])
    macs = text("/latest/meta-data/network/interfaces/macs/", view=view).split("\n")
    assert macs == [VM_MAC + "/", "fa:16:3e:00:00:08/"]
    assert text("/latest/meta-data/local-ipv4", view=view) == VM_IP


def test_floating_ip_is_the_public_ipv4():
    assert text("/latest/meta-data/public-ipv4", view=make_view(floating="203.0.113.9")) \
        == "203.0.113.9"


def test_user_data_absent_is_404():
    view = make_view(user_data=None)
    assert ask("/latest/user-data", view=view).status == 404
    assert text("/latest/", view=view) == "meta-data/"
    assert ask("/openstack/latest/user_data", view=view).status == 404


def test_each_vm_gets_its_own_data():
    assert text("/latest/meta-data/instance-id", port_id=PORT2_ID) == "inst-2"
    assert text("/latest/meta-data/local-ipv4", port_id=PORT2_ID) == VM2_IP
    assert ask("/latest/user-data", port_id=PORT2_ID).status == 404


def test_port_without_instance_gets_404_for_everything():
    for path in ("/", "/latest/meta-data/", "/latest/meta-data/instance-id",
                 "/openstack/latest/meta_data.json"):
        assert ask(path, port_id=NOINST_ID).status == 404
    assert ask("/latest/api/token", port_id=NOINST_ID, method="PUT",
               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).status == 404
    assert ask("/latest/meta-data/", port_id="gone").status == 404


@pytest.mark.parametrize("path", ["/nope", "/latest/meta-data/nope", "/latest/nope",
                                  "/latest/meta-data/instance-id/x", "/openstack/1999-01-01",
                                  "/openstack/latest/nope.json", "/latest/meta-data/../user-data",
                                  "/latest/meta-data/public-keys/1/openssh-key"])
def test_unknown_paths_are_404(path):
    assert ask(path).status == 404


def test_other_methods_are_405():
    assert ask("/latest/meta-data/", method="POST").status == 405
    assert ask("/latest/meta-data/", method="PUT").status == 405
    assert ask("/latest/api/token", method="GET").status == 405


# -- IMDSv2 ---------------------------------------------------------------------------
def token(ttl="60", port_id=PORT_ID, now=100.0) -> Response:
    return ask("/latest/api/token", method="PUT", port_id=port_id, now=now,
               headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})


def test_token_put_and_use():
    r = token("60")
    assert r.status == 200 and ("x-aws-ec2-metadata-token-ttl-seconds", "60") in r.headers
    tok = r.body.decode()
    hdr = {"X-aws-ec2-metadata-token": tok}
    assert text("/latest/meta-data/instance-id", headers=hdr, now=150.0) == "inst-1"
    assert ask("/latest/meta-data/instance-id", headers=hdr, now=161.0).status == 401   # expired
    assert ask("/latest/meta-data/instance-id", port_id=PORT2_ID, headers=hdr).status == 401
    assert ask("/latest/meta-data/instance-id",
               headers={"X-aws-ec2-metadata-token": tok[:-2] + "xx"}).status == 401
    assert ask("/latest/meta-data/instance-id",
               headers={"X-aws-ec2-metadata-token": "garbage"}).status == 401
    assert ask("/openstack/latest/meta_data.json", headers={"X-aws-ec2-metadata-token": ""}).status == 401


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "abc", "1.5", "9" * 20])
def test_token_put_needs_a_valid_ttl(ttl):
    headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    assert ask("/latest/api/token", method="PUT", headers=headers).status == 400


def test_token_put_through_a_proxy_is_forbidden():
    assert ask("/latest/api/token", method="PUT",
               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60",
                        "X-Forwarded-For": "1.2.3.4"}).status == 403


def test_ttl_parsing_bounds():
    assert parse_ttl("1") == 1 and parse_ttl("21600") == 21600
    assert parse_ttl("0") is None and parse_ttl(None) is None


def test_tokens_from_another_controller_secret_are_refused():
    tok = TokenIssuer(b"a" * 32).issue(PORT_ID, 60, 100.0)
    assert not TOKENS.valid(tok, PORT_ID, 100.0)


# -- OpenStack ---------------------------------------------------------------------------------
def test_openstack_listings():
    versions = text("/openstack").split("\n")
    assert versions[-1] == "latest" and "2012-08-10" in versions
    assert text("/openstack/") == text("/openstack")
    assert text("/openstack/latest").split("\n") == [
        "meta_data.json", "network_data.json", "user_data", "vendor_data.json"]


def test_openstack_meta_data():
    r = ask("/openstack/latest/meta_data.json")
    assert r.status == 200 and r.content_type == "application/json"
    doc = json.loads(r.body)
    assert doc["uuid"] == "inst-1" and doc["name"] == "VM One" and doc["hostname"] == "vm-one"
    assert doc["availability_zone"] == "az-1" and doc["project_id"] == "proj-1"
    assert doc["public_keys"] == {"mykey": KEY} and doc["meta"] == {"role": "web"}
    assert doc["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert json.loads(ask("/openstack/2012-08-10/meta_data.json").body) == doc


def test_openstack_user_vendor_and_network_data():
    assert ask("/openstack/latest/user_data").body == USER_DATA
    assert json.loads(ask("/openstack/latest/vendor_data.json").body) == {}
    nd = json.loads(ask("/openstack/latest/network_data.json").body)
    assert nd["links"] == [{"id": "tapport-vm1-aa", "vif_id": PORT_ID, "type": "ovs",
                            "ethernet_mac_address": VM_MAC, "mtu": 1400}]
    (net,) = nd["networks"]
    assert net["link"] == "tapport-vm1-aa" and net["ip_address"] == VM_IP
    assert net["netmask"] == "255.255.255.0" and net["network_id"] == NET
    assert {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"} in net["routes"]
    assert {"network": "192.168.0.0", "netmask": "255.255.0.0",
            "gateway": "10.0.0.254"} in net["routes"]
    assert nd["services"] == [{"type": "dns", "address": "10.0.0.53"}]


def test_user_data_that_is_not_base64_is_served_raw():
    view = make_view()
    view.instances["inst-1"]["user_data"] = "not base64 !!"
    assert ask("/latest/user-data", view=view).body == b"not base64 !!"


# -- HTTP -----------------------------------------------------------------------------------------
def test_parse_request_basics():
    req, used = parse_request(b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET")
    assert used == len(b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert req.method == "GET" and req.target == "/latest/meta-data/" and req.keep_alive
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n") == (None, 0)
    req, _ = parse_request(b"GET http://169.254.169.254/latest HTTP/1.0\n\n")
    assert req.target == "/latest" and not req.keep_alive
    req, _ = parse_request(b"\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert req.keep_alive
    req, _ = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not req.keep_alive


def test_parse_request_body_waits_for_content_length():
    head = b"PUT /latest/api/token HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
    assert parse_request(head + b"ab") == (None, 0)
    req, used = parse_request(head + b"abcdGET")
    assert req.body == b"abcd" and used == len(head) + 4


@pytest.mark.parametrize("raw,status", [
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / FTP/1.1\r\n\r\n", 400),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                   # no Host
    (b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
])
def test_parse_request_refuses(raw, status):
    assert parse_request(raw) == (ParseError(status), 0)


def test_endless_head_is_refused_once_over_the_bound():
    assert parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 100) == (None, 0)
    assert parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD) == (ParseError(431), 0)


def test_render_and_head():
    r = Response(200, b"hello")
    full = render(r)
    assert full.startswith(b"HTTP/1.1 200 OK\r\n") and full.endswith(b"\r\n\r\nhello")
    assert b"Content-Length: 5\r\n" in full and b"Connection: keep-alive" in full
    head = render(r, head_only=True, keep_alive=False)
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 5" in head and b"close" in head


def test_session_answers_one_request_at_a_time_and_closes_on_garbage():
    s = HttpSession(lambda req: Response(200, req.target.encode()))
    buf = bytearray(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGE")
    out, close = s.on_data(buf)
    assert out.endswith(b"/a") and not close
    out, close = s.on_data(buf)
    assert out.endswith(b"/b") and not close and buf == b"GE"
    assert s.on_data(buf) == (b"", False)
    buf += b"T / HTTP/9\r\n\r\n"
    out, close = s.on_data(buf)
    assert out.startswith(b"HTTP/1.1 505") and close and not buf


def test_session_turns_a_failing_document_into_500():
    def boom(req):
        raise RuntimeError("bug")
    counts = {}
    s = HttpSession(boom, lambda n: counts.__setitem__(n, counts.get(n, 0) + 1))
    out, close = s.on_data(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 500") and not close
    assert counts["metadata.http.internal_error"] == 1


def test_head_request_has_no_body():
    s = HttpSession(lambda req: serve(req, Context(make_view().ports[PORT_ID],
                                                   make_view().instances["inst-1"],
                                                   make_view(), TOKENS, 0.0)))
    out, _ = s.on_data(bytearray(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert out.endswith(b"\r\n\r\n") and b"Content-Length: 6" in out


def test_documents_module_lists_versions():
    assert "latest" in documents.EC2_VERSIONS and "latest" in documents.OPENSTACK_VERSIONS
