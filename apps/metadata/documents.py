"""The metadata documents: a pure function (request, who is asking) -> response.

EC2 (under `latest/` and `2009-04-04/`) and OpenStack (`/openstack/...`)
documents, as Nova's metadata API and EC2 serve them, built from the asking
port, the instance its device_id names, and the topology view. Directories
list their entries one per line, subdirectories with a trailing "/", and are
served whether or not the request path ends in "/". Anything unknown is a
404; a port with no instance gets a 404 for everything.

IMDSv2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
(1..21600) returns a token bound to the port; a request that carries
`X-aws-ec2-metadata-token` must carry a valid, unexpired one (else 401).
Requests without a token are answered too (IMDSv1), as Nova does.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import netaddr

from apps.metadata.http import Request, Response, error_response
from apps.metadata.tokens import TokenIssuer, parse_ttl
from topology.store.base import Document
from topology.view import TopologyView, interface_name

EC2_VERSIONS = ("2009-04-04", "latest")
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest")
TOKEN_HEADER = "x-aws-ec2-metadata-token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
JSON = "application/json"


@dataclass(frozen=True)
class Context:
    port: Optional[Document]
    instance: Optional[Document]
    view: TopologyView
    tokens: TokenIssuer
    now: float


class Dir:
    """A directory: entries by name; a value is a leaf (str/bytes), a Dir, or a
    callable returning either (computed only when asked for)."""

    def __init__(self, entries: dict[str, Any], listing: Optional[list[str]] = None):
        self.entries = entries
        self.listing = listing

    def render(self) -> str:
        if self.listing is not None:
            return "\n".join(self.listing)
        return "\n".join(k + "/" if isinstance(self._peek(k), Dir) else k for k in self.entries)

    def _peek(self, name: str) -> Any:
        v = self.entries[name]
        if callable(v) and not isinstance(v, Dir):
            v = v()
            self.entries[name] = v
        return v

    def get(self, name: str) -> Any:
        return self._peek(name) if name in self.entries else None


Node = Union[Dir, str, bytes, None]


def _text(body: Union[str, bytes], content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(200, body.encode() if isinstance(body, str) else body, content_type)


def _json(doc: Any) -> Response:
    return Response(200, json.dumps(doc, sort_keys=True).encode(), JSON)


def user_data(instance: Document) -> Optional[bytes]:
    raw = instance.get("user_data")
    if not raw:
        return None
    if isinstance(raw, bytes):
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return str(raw).encode()


# -- facts about the asking port --------------------------------------------
def _ipv4s(port: Document) -> list[str]:
    out = []
    for fip in port.get("fixed_ips") or ():
        addr = fip.get("ip_address") if isinstance(fip, dict) else None
        if addr and netaddr.valid_ipv4(addr):
            out.append(addr)
    return out


def _subnet_of(view: TopologyView, port: Document, addr: str) -> Optional[Document]:
    for fip in port.get("fixed_ips") or ():
        if isinstance(fip, dict) and fip.get("ip_address") == addr:
            return view.subnets.get(fip.get("subnet_id", ""))
    return None


def _floating_ips(view: TopologyView, port: Document) -> list[str]:
    fips = view.docs.get("floatingips") or {}
    return sorted(f["floating_ip_address"] for f in fips.values()
                  if f.get("port_id") == port["id"] and f.get("floating_ip_address"))


def _security_groups(view: TopologyView, port: Document) -> list[tuple[str, str]]:
    out = []
    for sg_id in port.get("security_groups") or ():
        sg = view.docs.get("security_groups", {}).get(sg_id) or {}
        out.append((sg_id, sg.get("name") or sg_id))
    return out


def _instance_ports(ctx: Context) -> list[Document]:
    """The instance's ports, the asking one first."""
    iid = ctx.instance["id"]
    others = sorted((p for p in ctx.view.ports.values()
                     if p.get("device_id") == iid and p["id"] != ctx.port["id"]),
                    key=lambda p: p["id"])
    return [ctx.port] + others


def _hostname(instance: Document) -> str:
    return instance.get("hostname") or instance.get("name") or instance["id"]


# -- EC2 ---------------------------------------------------------------------
def _interface_dir(ctx: Context, port: Document, number: int) -> Dir:
    ips = _ipv4s(port)
    subnet = _subnet_of(ctx.view, port, ips[0]) if ips else None
    sgs = _security_groups(ctx.view, port)
    entries: dict[str, Any] = {
        "device-number": str(number),
        "interface-id": port["id"],
        "local-hostname": _hostname(ctx.instance),
        "local-ipv4s": "\n".join(ips),
        "mac": port.get("mac_address", ""),
    }
    fl = _floating_ips(ctx.view, port)
    if fl:
        entries["public-ipv4s"] = "\n".join(fl)
    entries["security-group-ids"] = "\n".join(i for i, _ in sgs)
    entries["security-groups"] = "\n".join(n for _, n in sgs)
    if subnet:
        entries["subnet-id"] = subnet["id"]
        entries["subnet-ipv4-cidr-block"] = subnet.get("cidr", "")
    return Dir(entries)


def _macs_dir(ctx: Context) -> Dir:
    entries: dict[str, Any] = {}
    for n, port in enumerate(_instance_ports(ctx)):
        mac = port.get("mac_address")
        if mac and mac not in entries:
            entries[mac] = (lambda p=port, i=n: _interface_dir(ctx, p, i))
    return Dir(entries)


def _public_keys_dir(instance: Document) -> Dir:
    keys = instance.get("public_keys") or {}
    names = sorted(keys) if isinstance(keys, dict) else []
    entries = {str(i): Dir({"openssh-key": str(keys[name]) + "\n"}) for i, name in enumerate(names)}
    return Dir(entries, [f"{i}={name}" for i, name in enumerate(names)])


def ec2_meta_data(ctx: Context) -> Dir:
    port, inst = ctx.port, ctx.instance
    ips = _ipv4s(port)
    fl = _floating_ips(ctx.view, port)
    return Dir({
        "ami-launch-index": "0",
        "hostname": _hostname(inst),
        "instance-id": inst["id"],
        "local-hostname": _hostname(inst),
        "local-ipv4": ips[0] if ips else "",
        "mac": port.get("mac_address", ""),
        "network": lambda: Dir({"interfaces": Dir({"macs": _macs_dir(ctx)})}),
        "placement": lambda: Dir({"availability-zone": inst.get("availability_zone") or ""}),
        "public-hostname": fl[0] if fl else "",
        "public-ipv4": fl[0] if fl else "",
        "public-keys": lambda: _public_keys_dir(inst),
        "security-groups": lambda: "\n".join(n for _, n in _security_groups(ctx.view, port)),
    })


def _walk(node: Node, parts: list[str]) -> Node:
    for name in parts:
        if not isinstance(node, Dir):
            return None
        node = node.get(name)
    return node


def _serve_node(node: Node) -> Response:
    if node is None:
        return error_response(404)
    if isinstance(node, Dir):
        return _text(node.render())
    return _text(node)


def _ec2(ctx: Context, version: str, rest: list[str]) -> Response:
    ud = user_data(ctx.instance)
    if not rest:
        return _text("meta-data/" + ("\nuser-data" if ud is not None else ""))
    if rest == ["user-data"]:
        return _text(ud, "application/octet-stream") if ud is not None else error_response(404)
    if rest[0] == "meta-data":
        return _serve_node(_walk(ec2_meta_data(ctx), rest[1:]))
    return error_response(404)


# -- OpenStack -----------------------------------------------------------------
def openstack_meta_data(ctx: Context) -> dict:
    inst = ctx.instance
    keys = inst.get("public_keys") or {}
    keys = keys if isinstance(keys, dict) else {}
    return {
        "uuid": inst["id"],
        "name": inst.get("name") or _hostname(inst),
        "hostname": _hostname(inst),
        "launch_index": 0,
        "availability_zone": inst.get("availability_zone") or "",
        "project_id": inst.get("project_id") or "",
        "public_keys": {k: str(v) for k, v in keys.items()},
        "keys": [{"name": k, "type": "ssh", "data": str(keys[k])} for k in sorted(keys)],
        "meta": inst.get("meta") or {},
        "devices": [],
    }


def network_data(ctx: Context) -> dict:
    view = ctx.view
    links, networks, dns = [], [], []
    for port in _instance_ports(ctx):
        net = view.networks.get(port.get("network_id", "")) or {}
        link_id = interface_name(port)
        links.append({"id": link_id, "vif_id": port["id"], "type": "ovs",
                      "ethernet_mac_address": port.get("mac_address", ""),
                      "mtu": net.get("mtu", 1500)})
        for addr in _ipv4s(port):
            subnet = _subnet_of(view, port, addr) or {}
            routes = []
            gw = subnet.get("gateway_ip")
            if gw:
                routes.append({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gw})
            for hr in subnet.get("host_routes") or ():
                try:
                    n = netaddr.IPNetwork(hr["destination"])
                    routes.append({"network": str(n.network), "netmask": str(n.netmask),
                                   "gateway": hr["nexthop"]})
                except (KeyError, TypeError, ValueError, netaddr.AddrFormatError):
                    continue
            servers = [s for s in subnet.get("dns_nameservers") or () if isinstance(s, str)]
            dns += [s for s in servers if s not in dns]
            netmask = (str(netaddr.IPNetwork(subnet["cidr"]).netmask)
                       if subnet.get("cidr") else "255.255.255.255")
            networks.append({
                "id": f"network{len(networks)}",
                "link": link_id,
                "type": "ipv4_dhcp" if subnet.get("enable_dhcp", True) else "ipv4",
                "ip_address": addr,
                "netmask": netmask,
                "routes": routes,
                "network_id": port.get("network_id", ""),
                "services": [{"type": "dns", "address": s} for s in servers],
            })
    return {"links": links, "networks": networks,
            "services": [{"type": "dns", "address": s} for s in dns]}


def _openstack(ctx: Context, rest: list[str]) -> Response:
    if not rest:
        return _text("\n".join(OPENSTACK_VERSIONS))
    if rest[0] not in OPENSTACK_VERSIONS:
        return error_response(404)
    ud = user_data(ctx.instance)
    files: dict[str, Callable[[], Response]] = {
        "meta_data.json": lambda: _json(openstack_meta_data(ctx)),
        "network_data.json": lambda: _json(network_data(ctx)),
        "vendor_data.json": lambda: _json({}),
    }
    if ud is not None:
        files["user_data"] = lambda: _text(ud, "application/octet-stream")
    if len(rest) == 1:
        return _text("\n".join(sorted(files)))
    if len(rest) == 2 and rest[1] in files:
        return files[rest[1]]()
    return error_response(404)


# -- entry point -------------------------------------------------------------
def _token_put(req: Request, ctx: Context) -> Response:
    if req.header("x-forwarded-for") is not None:
        return error_response(403)                  # as EC2: no tokens through a proxy
    ttl = parse_ttl(req.header(TTL_HEADER))
    if ttl is None:
        return error_response(400)
    token = ctx.tokens.issue(ctx.port["id"], ttl, ctx.now)
    return Response(200, token.encode(), "text/plain", ((TTL_HEADER, str(ttl)),))


def serve(req: Request, ctx: Context) -> Response:
    if ctx.port is None or ctx.instance is None:
        return error_response(404)
    raw_parts = req.target.split("/")
    parts = [p for p in raw_parts if p]
    if any(p in (".", "..") for p in parts):
        return error_response(404)
    if parts == ["latest", "api", "token"]:
        if req.method == "PUT":
            return _token_put(req, ctx)
        return error_response(405)
    if req.method not in ("GET", "HEAD"):
        return error_response(405)
    token = req.header(TOKEN_HEADER)
    if token is not None and not ctx.tokens.valid(token, ctx.port["id"], ctx.now):
        return error_response(401)
    if not parts:
        return _text("\n".join(EC2_VERSIONS))
    if parts[0] in EC2_VERSIONS:
        return _ec2(ctx, parts[0], parts[1:])
    if parts[0] == "openstack":
        return _openstack(ctx, parts[1:])
    return error_response(404)
