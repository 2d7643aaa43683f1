"""DHCPv4 options a vmflow DHCP server hands out, computed from store documents.

Pure functions: (port, subnet, network, DHCP port, instance, settings) ->
the (code, bytes) option list of an OFFER or ACK.

The metadata route (option 121) is 169.254.169.254/32 via the DHCP port's
address in the subnet, as Neutron's DHCP agent does for isolated networks:
- the DHCP port exists on every DHCP-enabled subnet and the ARP proxy always
  answers for its address, whereas the gateway may have no owner until a
  router is attached (no ARP answer, so no metadata);
- a "via" route is installed the same way by every client script (ISC
  dhclient's rfc3442 hook, busybox udhcpc scripts, cloud-init), while an
  on-link route (router 0.0.0.0) is not handled by all of them;
- the controller catches TCP to 169.254.169.254:80 by IP, whatever MAC it
  was sent to, so the next hop only has to resolve.
RFC 3442 clients ignore option 3 when option 121 is present, so 121 also
carries the default route via the gateway, when the subnet has one.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Optional

import netaddr

from topology.store.base import Document

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MSG_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_CLASSLESS_ROUTES = 121
OPT_END = 255

METADATA_CIDR = netaddr.IPNetwork("169.254.169.254/32")
DEFAULT_CIDR = netaddr.IPNetwork("0.0.0.0/0")

# When a reply is larger than the client accepts, these options are left
# out, first to last, until it fits (addressing, lease and routes stay).
DROP_ORDER = (OPT_DOMAIN, OPT_HOSTNAME, OPT_BROADCAST, OPT_MTU, OPT_DNS)


@dataclass(frozen=True)
class Settings:
    lease_time: int = 86400
    dns_domain: str = "openstacklocal"

    @classmethod
    def from_conf(cls, conf) -> "Settings":
        if conf is None:
            return cls()
        group = conf.dhcp
        return cls(lease_time=int(group.lease_time), dns_domain=str(group.dns_domain or ""))


def ip4(text: str) -> bytes:
    return socket.inet_aton(str(text))


def is_ipv4(text) -> bool:
    try:
        return netaddr.IPAddress(str(text)).version == 4
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False


def encode_classless_route(cidr: netaddr.IPNetwork, router: str) -> bytes:
    """One RFC 3442 route: width, significant destination octets, router."""
    width = cidr.prefixlen
    significant = (width + 7) // 8
    return bytes([width]) + cidr.network.packed[:significant] + ip4(router)


def classless_routes(subnet: Document, server_ip: str) -> list[tuple[netaddr.IPNetwork, str]]:
    """The routes option 121 carries, in order: host routes, metadata, default."""
    routes: list[tuple[netaddr.IPNetwork, str]] = []
    seen: set[netaddr.IPNetwork] = set()
    for hr in subnet.get("host_routes") or ():
        try:
            dest = netaddr.IPNetwork(str(hr.get("destination")))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            continue
        nexthop = hr.get("nexthop")
        if dest.version != 4 or not is_ipv4(nexthop) or dest.cidr in seen:
            continue
        seen.add(dest.cidr)
        routes.append((dest.cidr, str(nexthop)))
    if METADATA_CIDR not in seen:
        routes.append((METADATA_CIDR, server_ip))
    gateway = subnet.get("gateway_ip")
    if gateway and is_ipv4(gateway) and DEFAULT_CIDR not in seen:
        routes.append((DEFAULT_CIDR, str(gateway)))
    return routes


def hostname_for(port: Document, instance: Optional[Document], ip: str) -> str:
    """The instance's hostname, else the port's dns_name, else host-10-0-0-5 as Neutron names it."""
    for candidate in ((instance or {}).get("hostname"), port.get("dns_name")):
        if isinstance(candidate, str):
            label = candidate.split(".")[0].encode("ascii", "ignore").decode()[:63]
            if label:
                return label
    return "host-" + ip.replace(".", "-")


def lease_options(settings: Settings) -> list[tuple[int, bytes]]:
    lease = settings.lease_time
    return [(OPT_LEASE_TIME, struct.pack("!I", lease)),
            (OPT_T1, struct.pack("!I", lease // 2)),
            (OPT_T2, struct.pack("!I", lease * 7 // 8))]


def config_options(port: Document, subnet: Document, network: Optional[Document],
                   server_ip: str, instance: Optional[Document], ip: str,
                   settings: Settings) -> list[tuple[int, bytes]]:
    """Addressing, identity, link and route options for the port's address in subnet."""
    cidr = netaddr.IPNetwork(subnet["cidr"])
    opts: list[tuple[int, bytes]] = [
        (OPT_SUBNET_MASK, cidr.netmask.packed),
        (OPT_BROADCAST, cidr.broadcast.packed if cidr.broadcast is not None else ip4("255.255.255.255")),
    ]
    gateway = subnet.get("gateway_ip")
    if gateway and is_ipv4(gateway):
        opts.append((OPT_ROUTER, ip4(gateway)))
    dns = [d for d in subnet.get("dns_nameservers") or () if is_ipv4(d)]
    if dns:
        opts.append((OPT_DNS, b"".join(ip4(d) for d in dns[:63])))
    domain = (settings.dns_domain or "").strip(".")
    if domain:
        opts.append((OPT_DOMAIN, domain.encode("ascii", "ignore")[:255]))
    opts.append((OPT_HOSTNAME, hostname_for(port, instance, ip).encode("ascii", "ignore")))
    mtu = (network or {}).get("mtu")
    if isinstance(mtu, int) and 68 <= mtu <= 65535:
        opts.append((OPT_MTU, struct.pack("!H", mtu)))
    routes = b"".join(encode_classless_route(c, r) for c, r in classless_routes(subnet, server_ip))
    if routes:
        opts.append((OPT_CLASSLESS_ROUTES, routes))
    return opts


def split_long(code: int, value: bytes) -> Iterable[tuple[int, bytes]]:
    """An option longer than 255 bytes as consecutive instances (RFC 3396)."""
    if not value:
        yield code, b""
        return
    for i in range(0, len(value), 255):
        yield code, value[i:i + 255]


def pack_options(opts: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in opts:
        for c, chunk in split_long(code, value):
            out += bytes((c, len(chunk))) + chunk
    out.append(OPT_END)
    return bytes(out)


def fit_options(opts: list[tuple[int, bytes]], room: int) -> bytes:
    """Pack opts into at most room bytes, leaving out DROP_ORDER options if needed."""
    packed = pack_options(opts)
    for code in DROP_ORDER:
        if len(packed) <= room:
            break
        opts = [o for o in opts if o[0] != code]
        packed = pack_options(opts)
    return packed


def parse_options(data: bytes) -> Optional[dict[int, bytes]]:
    """Options after the magic cookie -> {code: value} (repeated codes concatenated, RFC 3396).

    None when the options run past the end of the data.
    """
    opts: dict[int, bytes] = {}
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == OPT_END:
            return opts
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n:
            return None
        length = data[i + 1]
        end = i + 2 + length
        if end > n:
            return None
        opts[code] = opts.get(code, b"") + data[i + 2:end]
        i = end
    return opts
