"""Checking and normalising API input, attribute by attribute.

A resource is described by a map of attribute name -> Attr. `parse_create`
and `parse_update` turn a request body into clean values or raise Invalid /
Unrecognized, naming the field, before anything is written. The converters
accept what Neutron accepts (booleans as "true"/"false", integers as digit
strings) and return one canonical form, so stored documents compare equal.
"""
from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import netaddr


class Invalid(Exception):
    """A value that cannot be accepted; `field` names the attribute."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"Invalid input for {field}. Reason: {reason}")
        self.field = field
        self.reason = reason


class Unrecognized(Exception):
    def __init__(self, names):
        names = sorted(names)
        super().__init__("Unrecognized attribute(s) '%s'" % ", ".join(names))
        self.names = names


class ReadOnly(Exception):
    def __init__(self, name: str):
        super().__init__(f"Cannot update read-only attribute {name}")
        self.field = name


REQUIRED = object()  # Attr.default: the attribute must be given on create


@dataclass(frozen=True)
class Attr:
    convert: Callable[[str, Any], Any]
    default: Any = None  # a value, REQUIRED, or a zero-argument callable
    post: bool = True    # may be given on create
    put: bool = True     # may be changed on update

    def default_value(self):
        return self.default() if callable(self.default) else self.default


def _known_attributes(attrs: dict[str, Attr], body: Any, resource: str) -> dict[str, Any]:
    """The body as an object, refused whole if it names an attribute Neutron
    would not recognise (as Neutron does, rather than ignoring it)."""
    body = _object(body, resource)
    unknown = set(body) - set(attrs)
    if unknown:
        raise Unrecognized(unknown)
    return body


def parse_create(attrs: dict[str, Attr], body: Any, resource: str) -> dict[str, Any]:
    """Clean values for every attribute, defaults filled in (except REQUIRED ones missing)."""
    body = _known_attributes(attrs, body, resource)
    out = {}
    for name, attr in attrs.items():
        if name in body:
            if not attr.post:
                raise Invalid(name, "attribute is read-only")
            out[name] = attr.convert(name, body[name])
        elif attr.default is REQUIRED:
            raise Invalid(name, "attribute is required")
        else:
            out[name] = attr.default_value()
    return out


def parse_update(attrs: dict[str, Attr], body: Any, resource: str) -> dict[str, Any]:
    """Clean values for the attributes given; read-only ones are refused."""
    body = _known_attributes(attrs, body, resource)
    out = {}
    for name, value in body.items():
        if not attrs[name].put:
            raise ReadOnly(name)
        out[name] = attrs[name].convert(name, value)
    return out


def _object(body: Any, resource: str) -> dict:
    if not isinstance(body, dict):
        raise Invalid(resource, f"'{body!r}' is not a dictionary")
    return body


# -- converters: (field, value) -> clean value, or Invalid -----------------

def string(max_len: int = 255, *, nullable: bool = False, empty_ok: bool = True):
    def convert(field, value):
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise Invalid(field, f"'{value!r}' is not a valid string")
        if len(value) > max_len:
            raise Invalid(field, f"'{value}' exceeds maximum length of {max_len}")
        if not empty_ok and not value:
            raise Invalid(field, "must not be empty")
        return value
    return convert


def boolean(field, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise Invalid(field, f"'{value!r}' cannot be converted to boolean")


def integer(low: int, high: int, *, nullable: bool = False):
    def convert(field, value):
        if value is None and nullable:
            return None
        if isinstance(value, bool):
            raise Invalid(field, f"'{value}' is not an integer")
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if not isinstance(value, int):
            raise Invalid(field, f"'{value!r}' is not an integer")
        if not low <= value <= high:
            raise Invalid(field, f"'{value}' is not in range {low} through {high}")
        return value
    return convert


def one_of(*choices, nullable: bool = False):
    def convert(field, value):
        if value is None and nullable:
            return None
        if value not in choices:
            raise Invalid(field, f"'{value}' is not in {list(choices)}")
        return value
    return convert


def uuid_str(field, value):
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise Invalid(field, f"'{value!r}' is not a valid UUID")


def nullable(convert):
    def wrapped(field, value):
        return None if value is None else convert(field, value)
    return wrapped


def list_of(convert, *, max_items: int = 1024):
    def wrapped(field, value):
        if not isinstance(value, list):
            raise Invalid(field, f"'{value!r}' is not a list")
        if len(value) > max_items:
            raise Invalid(field, f"more than {max_items} items")
        return [convert(field, v) for v in value]
    return wrapped


def unique_list_of(convert, **kw):
    inner = list_of(convert, **kw)

    def wrapped(field, value):
        items = inner(field, value)
        seen = set()
        for item in items:
            key = repr(item)
            if key in seen:
                raise Invalid(field, f"duplicate item '{item}'")
            seen.add(key)
        return items
    return wrapped


def str_map(key_max: int = 255, value_max: int = 255, max_items: int = 128):
    """A dict of string to string (Nova's metadata, hosts' physnet map)."""
    def convert(field, value):
        if not isinstance(value, dict):
            raise Invalid(field, f"'{value!r}' is not a dictionary")
        if len(value) > max_items:
            raise Invalid(field, f"more than {max_items} items")
        for k, v in value.items():
            if not isinstance(k, str) or not k or len(k) > key_max:
                raise Invalid(field, f"key '{k}' must be a string of 1 to {key_max} characters")
            if not isinstance(v, str) or len(v) > value_max:
                raise Invalid(field, f"value of '{k}' must be a string of at most {value_max} characters")
        return dict(value)
    return convert


def json_dict(field, value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(field, f"'{value!r}' is not a dictionary")
    return dict(value)


def ipv4_address(field, value):
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", value):
        try:
            return str(netaddr.IPAddress(value, 4, flags=netaddr.INET_PTON))
        except (netaddr.AddrFormatError, ValueError):
            pass
    raise Invalid(field, f"'{value}' is not a valid IPv4 address")


def ipv4_cidr(field, value):
    """A network in canonical form; host bits set is refused, as Neutron does."""
    if isinstance(value, str) and "/" in value:
        addr, _, plen = value.partition("/")
        if plen.isdigit() and int(plen) <= 32:
            ipv4_address(field, addr)
            net = netaddr.IPNetwork(value, version=4)
            if str(net.cidr) != f"{ipv4_address(field, addr)}/{int(plen)}":
                raise Invalid(field, f"'{value}' isn't a recommended CIDR; "
                                     f"'{net.cidr}' should be specified instead")
            return str(net.cidr)
    raise Invalid(field, f"'{value}' is not a valid IPv4 CIDR")


def ipv4_address_or_cidr(field, value):
    """An address or a network, as allowed_address_pairs take them."""
    if isinstance(value, str) and "/" in value:
        return ipv4_cidr(field, value)
    return ipv4_address(field, value)


_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")


def mac_address(field, value):
    if isinstance(value, str) and _MAC_RE.fullmatch(value):
        mac = value.lower().replace("-", ":")
        first = int(mac[:2], 16)
        if mac == "00:00:00:00:00:00" or first & 1:
            raise Invalid(field, f"'{value}' is not a valid unicast MAC address")
        return mac
    raise Invalid(field, f"'{value}' is not a valid MAC address")


def datapath_id(field, value):
    """A datapath id as an int or hex string; stored as 16 lowercase hex digits."""
    if isinstance(value, bool):
        raise Invalid(field, f"'{value}' is not a datapath id")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(":", "")
        if text.startswith("0x"):
            text = text[2:]
        if not text or not re.fullmatch(r"[0-9a-f]{1,16}", text):
            raise Invalid(field, f"'{value}' is not a hex datapath id")
        number = int(text, 16)
    else:
        raise Invalid(field, f"'{value!r}' is not a datapath id")
    if not 0 <= number < 1 << 64:
        raise Invalid(field, f"'{value}' does not fit in 64 bits")
    return f"{number:016x}"


def sha256_fingerprint(field, value):
    """A certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint
    -sha256` prints it (optionally with its "sha256 Fingerprint=" prefix) or
    as 64 hex digits; stored as 32 upper-case hex pairs joined by colons."""
    if not isinstance(value, str):
        raise Invalid(field, f"'{value!r}' is not a SHA-256 fingerprint")
    text = value.strip()
    head, sep, rest = text.partition("=")
    if sep and head.strip().lower().replace(" ", "") in ("sha256fingerprint", "sha256"):
        text = rest.strip()
    text = text.replace(":", "").replace(" ", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", text):
        raise Invalid(field, f"'{value}' is not a SHA-256 fingerprint (64 hex digits)")
    text = text.upper()
    return ":".join(text[i:i + 2] for i in range(0, 64, 2))


_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def interface_name(field, value):
    """A Linux interface name (at most 15 characters, IFNAMSIZ - 1)."""
    if isinstance(value, str) and _IFNAME_RE.fullmatch(value):
        return value
    raise Invalid(field, f"'{value}' is not a valid interface name")


def physnet_map(field, value):
    if not isinstance(value, dict):
        raise Invalid(field, f"'{value!r}' is not a dictionary")
    out = {}
    for physnet, ifname in value.items():
        string(64, empty_ok=False)(f"{field}.{physnet}", physnet)
        out[physnet] = interface_name(f"{field}.{physnet}", ifname)
    return out


_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def hostname(field, value):
    if isinstance(value, str) and 0 < len(value) <= 253 and all(
            _LABEL_RE.fullmatch(label) for label in value.split(".")):
        return value
    raise Invalid(field, f"'{value}' is not a valid hostname")


def base64_text(max_decoded: int):
    def convert(field, value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(field, f"'{value!r}' is not a base64 string")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(field, "not valid base64") from None
        if len(data) > max_decoded:
            raise Invalid(field, f"decoded size exceeds {max_decoded} bytes")
        return value
    return convert


def check(condition: bool, field: str, reason: str) -> None:
    if not condition:
        raise Invalid(field, reason)

