"""Converters and body parsing: canonical values out, Invalid naming the field otherwise."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology import validation as v


@pytest.mark.parametrize("value,expected", [
    (True, True), (False, False), ("true", True), ("False", False), (1, True), ("0", False)])
def test_boolean_accepts_neutron_forms(value, expected):
    assert v.boolean("f", value) is expected


@pytest.mark.parametrize("value", ["yes", 2, None, [], 1.0])
def test_boolean_rejects(value):
    with pytest.raises(v.Invalid) as e:
        v.boolean("admin_state_up", value)
    assert e.value.field == "admin_state_up"


def test_integer_range_and_types():
    conv = v.integer(1, 4094)
    assert conv("f", 1) == 1 and conv("f", "4094") == 4094
    for bad in (0, 4095, True, "12a", 3.5, None):
        with pytest.raises(v.Invalid):
            conv("provider:segmentation_id", bad)
    assert v.integer(1, 2, nullable=True)("f", None) is None


@pytest.mark.parametrize("value,expected", [
    ("10.0.0.0/24", "10.0.0.0/24"), ("0.0.0.0/0", "0.0.0.0/0"), ("10.1.2.3/32", "10.1.2.3/32")])
def test_cidr_ok(value, expected):
    assert v.ipv4_cidr("cidr", value) == expected


@pytest.mark.parametrize("value", ["10.0.0.1/24", "10.0.0.0/33", "10.0.0/24", "fd00::/64",
                                   "10.0.0.0", "010.0.0.0/8", 5, "10.0.0.0/-1"])
def test_cidr_bad(value):
    with pytest.raises(v.Invalid) as e:
        v.ipv4_cidr("cidr", value)
    assert "cidr" in str(e.value)


@pytest.mark.parametrize("value", ["10.0.0.256", "1.2.3", "::1", "1.2.3.4 ", "01.2.3.4x", None])
def test_ip_bad(value):
    with pytest.raises(v.Invalid):
        v.ipv4_address("ip_address", value)


@pytest.mark.parametrize("value,expected", [
    ("FA:16:3E:00:00:01", "fa:16:3e:00:00:01"), ("fa-16-3e-00-00-01", "fa:16:3e:00:00:01")])
def test_mac_normalised(value, expected):
    assert v.mac_address("mac_address", value) == expected


@pytest.mark.parametrize("value", ["00:00:00:00:00:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff",
                                   "fa:16:3e:00:00", "fa:16:3e:00:00:0g", 12])
def test_mac_bad(value):
    with pytest.raises(v.Invalid):
        v.mac_address("mac_address", value)


@pytest.mark.parametrize("value,expected", [
    (1, "0000000000000001"), ("0000000000000001", "0000000000000001"), ("0x1A", "000000000000001a"),
    ("00:00:00:00:00:00:00:ff", "00000000000000ff"), ((1 << 64) - 1, "ffffffffffffffff")])
def test_datapath_id(value, expected):
    assert v.datapath_id("datapath_id", value) == expected


@pytest.mark.parametrize("value", [-1, 1 << 64, "xyz", "", True, "1" * 17, 1.5])
def test_datapath_id_bad(value):
    with pytest.raises(v.Invalid):
        v.datapath_id("datapath_id", value)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_datapath_id_int_and_hex_agree(n):
    assert v.datapath_id("d", n) == v.datapath_id("d", hex(n)) == v.datapath_id("d", f"{n:x}")


def test_base64_and_limits():
    conv = v.base64_text(4)
    assert conv("user_data", "aGk=") == "aGk="
    for bad in ("aGk", "!!!!", 7):
        with pytest.raises(v.Invalid):
            conv("user_data", bad)
    with pytest.raises(v.Invalid):
        conv("user_data", "aGVsbG8=")  # five bytes decoded


def test_hostname_and_interface_names():
    assert v.hostname("h", "vm-1.example") == "vm-1.example"
    for bad in ("-vm", "vm_1", "", "a" * 64, "a..b"):
        with pytest.raises(v.Invalid):
            v.hostname("hostname", bad)
    assert v.interface_name("i", "tap0123456789a") == "tap0123456789a"
    for bad in ("a" * 16, "eth 0", "", "a/b"):
        with pytest.raises(v.Invalid):
            v.interface_name("interface_name", bad)


ATTRS = {
    "name": v.Attr(v.string(10), ""),
    "size": v.Attr(v.integer(1, 9), v.REQUIRED),
    "tags": v.Attr(v.list_of(v.string(5)), list),
    "status": v.Attr(v.string(10), "UP", post=False, put=False),
}


def test_parse_create_defaults_and_required():
    out = v.parse_create(ATTRS, {"size": "3"}, "thing")
    assert out == {"name": "", "size": 3, "tags": [], "status": "UP"}
    a, b = v.parse_create(ATTRS, {"size": 1}, "thing"), v.parse_create(ATTRS, {"size": 1}, "thing")
    assert a["tags"] is not b["tags"]  # defaults are fresh per request
    with pytest.raises(v.Invalid) as e:
        v.parse_create(ATTRS, {}, "thing")
    assert e.value.field == "size"


def test_parse_rejects_unknown_read_only_and_non_objects():
    with pytest.raises(v.Unrecognized) as e:
        v.parse_create(ATTRS, {"size": 1, "colour": "red", "flavour": 1}, "thing")
    assert e.value.names == ["colour", "flavour"] and "colour" in str(e.value)
    with pytest.raises(v.Invalid) as e:
        v.parse_create(ATTRS, {"size": 1, "status": "DOWN"}, "thing")
    assert e.value.field == "status"
    with pytest.raises(v.ReadOnly) as e:
        v.parse_update(ATTRS, {"status": "DOWN"}, "thing")
    assert "status" in str(e.value)
    with pytest.raises(v.Invalid) as e:
        v.parse_update(ATTRS, ["size"], "thing")
    assert e.value.field == "thing"
    assert v.parse_update(ATTRS, {"name": "x"}, "thing") == {"name": "x"}


def test_unique_list_and_maps():
    with pytest.raises(v.Invalid):
        v.unique_list_of(v.ipv4_address)("dns_nameservers", ["1.1.1.1", "1.1.1.1"])
    conv = v.str_map(3, 3, 2)
    assert conv("meta", {"a": "b"}) == {"a": "b"}
    for bad in ({"a": 1}, {"long": "x"}, {"a": "long"}, {"a": "1", "b": "2", "c": "3"}, []):
        with pytest.raises(v.Invalid):
            conv("meta", bad)


def test_sha256_fingerprint_forms():
    from topology.validation import Invalid, sha256_fingerprint
    want = ":".join(["D4"] * 32)
    assert sha256_fingerprint("f", "d4" * 32) == want
    assert sha256_fingerprint("f", want.lower()) == want
    assert sha256_fingerprint("f", "sha256 Fingerprint=" + want) == want
    for bad in ("d4" * 31, "zz" * 32, 5, None, "sha1 Fingerprint=" + want):
        with pytest.raises(Invalid, match="f"):
            sha256_fingerprint("f", bad)
