"""The security group rule model: parse, check, normalise and render a rule.

Pure functions over plain values, shared by the API (which stores what
`normalise` returns) and the controller's firewall (which reads stored rules
back through `Rule.from_doc`). Nothing here touches the store.

A rule is Neutron's security group rule plus vmflow's extensions:

- Neutron's fields: direction, ethertype, protocol (a name, a number 0-255, or
  None/"any"/0 for every protocol), port_range_min/port_range_max (the port
  range for tcp, udp, sctp, dccp and udplite; the ICMP type and code for icmp
  and ipv6-icmp), remote_ip_prefix (kept as given, with the mask added;
  normalized_cidr is its network), remote_group_id and
  remote_address_group_id (at most one of the three remotes).
- `ports`: a port list, "22,80,3389", "8000-8080" or "22,8000-8080", an
  alternative to port_range_min/max. It is shown back normalised: sorted, with
  overlapping and adjacent entries merged. At most MAX_PORT_ENTRIES entries,
  each within 1-65535. When the list is one range, port_range_min/max show that
  range too; when it is several, they are None and only `ports` tells.
- `action`: "allow" (the default) or "deny".
- `priority`: 1-100, the smaller evaluated first, deny winning a tie; default 1.
- `rule`: OneCloud's compact text form, accepted on create and rendered back
  from the fields on every rule:

      DIR:ACTION [FAMILY] [REMOTE] [PROTOCOL [PORTS | TYPE[/CODE]]]

  DIR is in|out, ACTION allow|deny. FAMILY is ipv4|ipv6 (else the prefix's
  family, else ethertype, else IPv4). REMOTE is a CIDR or address,
  group:<security group id> or address-group:<address group id>. PROTOCOL is
  any protocol the JSON form takes (any for all). PORTS is a port list, for
  the port protocols; TYPE[/CODE] an ICMP type and code. Examples:
  "in:allow 0.0.0.0/0 tcp 22,80,3389", "out:deny any",
  "in:deny 10.0.0.0/8 udp 123", "in:allow icmp 8/0",
  "in:allow ipv6 group:<id> any".

  Tokens are separated by blanks, so a port list has none inside it. As in
  Neutron, the remote is the source of an `in` rule and the destination of an
  `out` rule. A field given both in `rule` and on its own must agree with it.
"""
from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from topology.validation import Invalid, check

# Neutron's names (neutron_lib IP_PROTOCOL_MAP); icmpv6 is its legacy alias.
PROTOCOLS: dict[str, int] = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58,
    "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113,
    "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
PORT_PROTOCOLS = frozenset((6, 17, 33, 132, 136))      # tcp udp dccp sctp udplite
ICMP_PROTOCOLS = frozenset((1, 58))
# Protocols that exist only over IPv6: refused with ethertype IPv4, as Neutron does.
IPV6_ONLY = frozenset((41, 43, 44, 58, 59, 60))

MAX_PORT_ENTRIES = 64      # entries in one `ports` list, so a rule's flows stay bounded
MAX_PORTS_TEXT = 1024
MAX_COMPACT_TEXT = MAX_PORTS_TEXT + 256
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 1, 100, 1
ACTIONS = ("allow", "deny")
DIRECTIONS = {"in": "ingress", "out": "egress"}

# The fields a rule is made of (besides ids, project and description).
FIELDS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "ports",
          "remote_ip_prefix", "remote_group_id", "remote_address_group_id", "action",
          "priority", "rule")


# -- field converters: (field, raw value) -> canonical value, or Invalid -------

def protocol(field: str, value: Any) -> Optional[str]:
    """Neutron's protocol: a lower-case name, a number as a string, or None (any)."""
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise Invalid(field, f"'{value}' is not a protocol")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if not 0 <= number <= 255:
            raise Invalid(field, f"protocol {value} is not in range 0 through 255")
        return None if number == 0 else str(number)
    if isinstance(value, str):
        name = value.strip().lower()
        if name == "any":
            return None
        if name in PROTOCOLS:
            return name
    raise Invalid(field, f"protocol '{value}' is not supported: use one of "
                         f"{', '.join(sorted(PROTOCOLS))}, any, or a number 0-255")


def protocol_number(proto: Optional[str], ethertype: str = "IPv4") -> Optional[int]:
    """The IP protocol number a rule matches (None: every protocol).

    With IPv6, icmp means ICMPv6, as Neutron's agents read it.
    """
    if proto is None:
        return None
    number = PROTOCOLS[proto] if proto in PROTOCOLS else int(proto)
    if ethertype == "IPv6" and number == 1:
        return 58
    return number


def ethertype(field: str, value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("ipv4", "ipv6"):
        return "IPv4" if value.lower() == "ipv4" else "IPv6"
    raise Invalid(field, f"'{value}' is not in ['IPv4', 'IPv6']")


def direction(field: str, value: Any) -> str:
    if value in ("ingress", "egress"):
        return value
    raise Invalid(field, f"'{value}' is not in ['ingress', 'egress']")


def remote_ip_prefix(field: str, value: Any) -> Optional[str]:
    """An address or CIDR, kept as given but with its mask ("10.0.0.1" -> "10.0.0.1/32")."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_interface(value.strip()))
        except ValueError:
            pass
    raise Invalid(field, f"'{value}' is not a valid IP prefix")


def normalized_cidr(prefix: Optional[str]) -> Optional[str]:
    return None if prefix is None else str(ipaddress.ip_interface(prefix).network)


def prefix_version(prefix: str) -> int:
    return ipaddress.ip_interface(prefix).version


def optional_uuid(field: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise Invalid(field, f"'{value}' is not a valid UUID")


def action(field: str, value: Any) -> str:
    if isinstance(value, str) and value.lower() in ACTIONS:
        return value.lower()
    raise Invalid(field, f"'{value}' is not in {list(ACTIONS)}")


def priority(field: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field, f"'{value!r}' is not an integer")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise Invalid(field, f"'{value}' is not in range {PRIORITY_MIN} through {PRIORITY_MAX}")
    return value


def port_bound(field: str, value: Any) -> Optional[int]:
    """port_range_min/max as Neutron takes them: an integer 0-65535 or None."""
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field, f"'{value!r}' is not an integer")
    if not 0 <= value <= 65535:
        raise Invalid(field, f"'{value}' is not in range 0 through 65535")
    return value


# -- port lists -----------------------------------------------------------------

_PORT_ENTRY = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


def parse_ports(field: str, text: str) -> list[tuple[int, int]]:
    """ "22,8000-8080" -> [(22, 22), (8000, 8080)]: sorted, overlaps and neighbours merged."""
    if not isinstance(text, str):
        raise Invalid(field, f"'{text!r}' is not a string of ports and ranges")
    if len(text) > MAX_PORTS_TEXT:
        raise Invalid(field, f"longer than {MAX_PORTS_TEXT} characters")
    entries = [e.strip() for e in text.split(",")]
    if len(entries) > MAX_PORT_ENTRIES:
        raise Invalid(field, f"more than {MAX_PORT_ENTRIES} ports and ranges")
    ranges = []
    for entry in entries:
        m = _PORT_ENTRY.fullmatch(entry)
        if m is None:
            raise Invalid(field, f"'{entry}' is not a port (1-65535) or a range such as 8000-8080")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        for port in (low, high):
            check(1 <= port <= 65535, field, f"port {port} in '{entry}' is not in range 1 through 65535")
        check(low <= high, field, f"range '{entry}' runs backwards: write {high}-{low}")
        ranges.append((low, high))
    return merge_ranges(ranges)


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def format_ports(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def ports(field: str, value: Any) -> Optional[str]:
    """The `ports` attribute, normalised; None or "" means every port."""
    if value is None or value == "":
        return None
    return format_ports(parse_ports(field, value))


# -- the compact form -------------------------------------------------------------

_HEAD = re.compile(r"(in|out):(allow|deny)", re.IGNORECASE)
_ICMP_TOKEN = re.compile(r"(\d{1,3})(?:/(\d{1,3}))?")


def parse_compact(field: str, text: Any) -> dict[str, Any]:
    """The fields a compact rule states (only those: absent parts are not given)."""
    if not isinstance(text, str):
        raise Invalid(field, f"'{text!r}' is not a string")
    tokens = text.split()
    if not tokens or not _HEAD.fullmatch(tokens[0]):
        raise Invalid(field, f"'{text}' must start with in:allow, in:deny, out:allow or out:deny")
    head = tokens[0].lower().split(":")
    out: dict[str, Any] = {"direction": DIRECTIONS[head[0]], "action": head[1]}
    rest = tokens[1:]
    if rest and rest[0].lower() in ("ipv4", "ipv6"):
        out["ethertype"] = ethertype(field, rest.pop(0))
    if rest and _is_remote(rest[0]):
        _remote_token(field, rest.pop(0), out)
    if rest:
        out["protocol"] = protocol(field, rest.pop(0))
    if rest:
        number = protocol_number(out["protocol"])
        token = rest.pop(0)
        if number in PORT_PROTOCOLS:
            out["ports"] = ports(field, token)
        elif number in ICMP_PROTOCOLS:
            m = _ICMP_TOKEN.fullmatch(token)
            if m is None:
                raise Invalid(field, f"'{token}' is not an ICMP type or type/code such as 8/0")
            out["port_range_min"] = int(m.group(1))
            out["port_range_max"] = int(m.group(2)) if m.group(2) is not None else None
        else:
            raise Invalid(field, f"'{token}': ports are only for tcp, udp, sctp, dccp and "
                                 "udplite, a type/code only for icmp")
    if rest:
        raise Invalid(field, f"'{' '.join(rest)}' is left over in '{text}'")
    return out


def _is_remote(token: str) -> bool:
    # No protocol name has a dot, colon or slash: a token with one is meant as
    # a remote, and a malformed one is refused as a prefix, not as a protocol.
    return any(c in token for c in ".:/")


def _remote_token(field: str, token: str, out: dict) -> None:
    kind, sep, ident = token.partition(":")
    if sep and kind.lower() == "group":
        out["remote_group_id"] = optional_uuid(field, ident)
    elif sep and kind.lower() == "address-group":
        out["remote_address_group_id"] = optional_uuid(field, ident)
    else:
        out["remote_ip_prefix"] = remote_ip_prefix(field, token)
        out["ethertype_from_prefix"] = "IPv4" if prefix_version(out["remote_ip_prefix"]) == 4 else "IPv6"


def render(rule: dict[str, Any]) -> str:
    """The compact form of normalised rule fields; parse_compact reads it back the same."""
    parts = [f"{'in' if rule['direction'] == 'ingress' else 'out'}:{rule.get('action') or 'allow'}"]
    if rule.get("remote_ip_prefix"):
        parts.append(rule["remote_ip_prefix"])
    else:
        if rule.get("ethertype") == "IPv6":
            parts.append("ipv6")
        if rule.get("remote_group_id"):
            parts.append(f"group:{rule['remote_group_id']}")
        elif rule.get("remote_address_group_id"):
            parts.append(f"address-group:{rule['remote_address_group_id']}")
    proto = rule.get("protocol")
    parts.append(proto or "any")
    number = protocol_number(proto)
    if number in PORT_PROTOCOLS and rule.get("ports"):
        parts.append(rule["ports"])
    elif number in ICMP_PROTOCOLS and rule.get("port_range_min") is not None:
        code = rule.get("port_range_max")
        parts.append(f"{rule['port_range_min']}" + ("" if code is None else f"/{code}"))
    return " ".join(parts)


# -- the whole rule -----------------------------------------------------------------

_CONVERTERS = {
    "direction": direction, "ethertype": ethertype, "protocol": protocol,
    "port_range_min": port_bound, "port_range_max": port_bound, "ports": ports,
    "remote_ip_prefix": remote_ip_prefix, "remote_group_id": optional_uuid,
    "remote_address_group_id": optional_uuid, "action": action, "priority": priority,
}


def normalise(given: dict[str, Any]) -> dict[str, Any]:
    """Every rule field, checked and in canonical form, from the fields a client gave.

    `given` holds only what the client sent (raw or already converted values
    both work). Raises Invalid naming the field at fault.
    """
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name == "rule":
            continue
        if name not in _CONVERTERS:
            raise Invalid(name, "is not a rule field")
        values[name] = _CONVERTERS[name](name, value)
    text = given.get("rule")
    if text is not None:
        _merge_compact(values, parse_compact("rule", text), text)
    if "direction" not in values:
        raise Invalid("direction", "attribute is required")
    values.setdefault("ethertype", "IPv4")
    values.setdefault("action", "allow")
    values.setdefault("priority", PRIORITY_DEFAULT)
    for name in ("protocol", "port_range_min", "port_range_max", "ports", "remote_ip_prefix",
                 "remote_group_id", "remote_address_group_id"):
        values.setdefault(name, None)
    _check_protocol(values)
    _check_ports(values)
    _check_remote(values)
    values["normalized_cidr"] = normalized_cidr(values["remote_ip_prefix"])
    values["rule"] = render(values)
    return values


def _merge_compact(values: dict, stated: dict, text: str) -> None:
    family = stated.pop("ethertype_from_prefix", None)
    if family and "ethertype" not in stated:
        if values.get("ethertype", family) != family:
            raise Invalid("ethertype", f"{values['ethertype']} conflicts with the prefix "
                                       f"{stated['remote_ip_prefix']} in rule '{text}'")
        stated["ethertype"] = family
    for name, value in stated.items():
        mine = values.get(name)
        if mine is None:
            values[name] = value
        elif (protocol_number(mine) != protocol_number(value) if name == "protocol"
              else mine != value):
            raise Invalid(name, f"'{mine}' conflicts with rule '{text}'")


def _check_protocol(val: dict) -> None:
    number = protocol_number(val["protocol"])
    if val["ethertype"] == "IPv4" and number in IPV6_ONLY:
        raise Invalid("protocol", f"protocol {val['protocol']} needs ethertype IPv6, not IPv4")
    if val["ethertype"] == "IPv6" and val["protocol"] in ("icmp", "icmpv6"):
        # Neutron stores IPv6's legacy ICMP names as ipv6-icmp (and 1 as 58)
        val["protocol"] = "ipv6-icmp"
    elif val["ethertype"] == "IPv6" and val["protocol"] == "1":
        val["protocol"] = "58"


def _check_ports(val: dict) -> None:
    low, high, listed = val["port_range_min"], val["port_range_max"], val["ports"]
    number = protocol_number(val["protocol"], val["ethertype"])
    if listed is not None:
        if number not in PORT_PROTOCOLS:
            raise Invalid("ports", "ports are only for tcp, udp, sctp, dccp and udplite "
                                   f"(protocol is {val['protocol'] or 'any'})")
        ranges = parse_ports("ports", listed)
        single = ranges[0] if len(ranges) == 1 else (None, None)
        if (low, high) not in ((None, None), single):
            raise Invalid("ports", f"'{listed}' conflicts with port_range_min {low} and "
                                   f"port_range_max {high}: give one or the other")
        val["port_range_min"], val["port_range_max"] = single
        return
    if low is None and high is None:
        return
    if val["protocol"] is None:
        raise Invalid("protocol", "must also be given if a port range is given")
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise Invalid("port_range_min" if low == 0 else "port_range_max",
                          "invalid value for port 0")
        if low is None or high is None or low > high:
            raise Invalid("port_range_min", "for TCP/UDP protocols, port_range_min must be "
                                            "<= port_range_max (and both given)")
        val["ports"] = format_ports([(low, high)])
    elif number in ICMP_PROTOCOLS:
        check(low is None or low <= 255, "port_range_min",
              f"invalid value for ICMP type {low}: it must be 0 to 255")
        check(high is None or high <= 255, "port_range_max",
              f"invalid value for ICMP code {high}: it must be 0 to 255")
        check(not (low is None and high is not None), "port_range_min",
              f"ICMP code (port_range_max) {high} is given but ICMP type (port_range_min) is missing")
    else:
        raise Invalid("protocol", f"invalid protocol {val['protocol']} for a port range: "
                                  "ports are only for TCP, UDP, SCTP, DCCP and UDPLITE")


def _check_remote(val: dict) -> None:
    prefix, group, addr_group = (val["remote_ip_prefix"], val["remote_group_id"],
                                 val["remote_address_group_id"])
    if prefix and group:
        raise Invalid("remote_group_id", "only remote_ip_prefix or remote_group_id may be provided")
    if group and addr_group:
        raise Invalid("remote_address_group_id",
                       "only remote_group_id or remote_address_group_id may be provided")
    if prefix and addr_group:
        raise Invalid("remote_address_group_id",
                       "only remote_ip_prefix or remote_address_group_id may be provided")
    if prefix and prefix_version(prefix) != int(val["ethertype"][-1]):
        raise Invalid("ethertype", f"conflicting value ethertype {val['ethertype']} for "
                                    f"CIDR {prefix}")


def signature(rule: dict[str, Any]) -> str:
    """What makes two rules of a group the same rule (Neutron's duplicate test, plus
    vmflow's action, priority and port list): names and numbers of a protocol
    compare equal, and so do no prefix, 0.0.0.0/0 and ::/0."""
    prefix = rule.get("remote_ip_prefix")
    if prefix in ("0.0.0.0/0", "::/0"):
        prefix = None
    parts = [rule["direction"], rule["ethertype"],
             protocol_number(rule.get("protocol"), rule["ethertype"]),
             rule.get("port_range_min"), rule.get("port_range_max"), rule.get("ports"),
             prefix, rule.get("remote_group_id"), rule.get("remote_address_group_id"),
             rule.get("action") or "allow", rule.get("priority") or PRIORITY_DEFAULT]
    return "|".join("+" if p is None else str(p) for p in parts)


# -- what the firewall reads -------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A stored rule as the data plane needs it."""
    key: int
    group_id: str
    direction: str               # "ingress" | "egress"
    ethertype: str               # "IPv4" | "IPv6"
    protocol: Optional[int]      # IP protocol number; None = every protocol
    port_ranges: Optional[tuple[tuple[int, int], ...]]   # None = every port
    icmp_type: Optional[int]
    icmp_code: Optional[int]
    remote_prefix: Optional[str]  # normalised network
    remote_group_id: Optional[str]
    remote_address_group_id: Optional[str]
    action: str                  # "allow" | "deny"
    priority: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Rule":
        number = protocol_number(doc.get("protocol"), doc["ethertype"])
        ranges = icmp_type = icmp_code = None
        if number in PORT_PROTOCOLS and doc.get("ports"):
            ranges = tuple(parse_ports("ports", doc["ports"]))
        elif number in ICMP_PROTOCOLS:
            icmp_type, icmp_code = doc.get("port_range_min"), doc.get("port_range_max")
        return cls(key=doc.get("_key", 0), group_id=doc["security_group_id"],
                   direction=doc["direction"], ethertype=doc["ethertype"], protocol=number,
                   port_ranges=ranges, icmp_type=icmp_type, icmp_code=icmp_code,
                   remote_prefix=normalized_cidr(doc.get("remote_ip_prefix")),
                   remote_group_id=doc.get("remote_group_id"),
                   remote_address_group_id=doc.get("remote_address_group_id"),
                   action=doc.get("action") or "allow",
                   priority=doc.get("priority") or PRIORITY_DEFAULT)
