"""The rule model: Neutron's checks, port lists, action/priority, the compact form."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology import secgroup_rules as r
from topology.validation import Invalid


def invalid_field(given_fields: dict) -> str:
    with pytest.raises(Invalid) as e:
        r.normalise(given_fields)
    return e.value.field


# -- the examples ---------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    ("in:allow 0.0.0.0/0 tcp 22,80,3389",
     dict(direction="ingress", action="allow", remote_ip_prefix="0.0.0.0/0", protocol="tcp",
          ports="22,80,3389", port_range_min=None, port_range_max=None, ethertype="IPv4")),
    ("out:deny any",
     dict(direction="egress", action="deny", protocol=None, ports=None, remote_ip_prefix=None)),
    ("in:deny 10.0.0.0/8 udp 123",
     dict(direction="ingress", action="deny", remote_ip_prefix="10.0.0.0/8", protocol="udp",
          ports="123", port_range_min=123, port_range_max=123)),
    ("in:allow tcp 8000-8080",
     dict(protocol="tcp", ports="8000-8080", port_range_min=8000, port_range_max=8080)),
    ("in:allow tcp 22,8000-8080", dict(ports="22,8000-8080", port_range_min=None)),
    ("in:allow icmp 8/0", dict(protocol="icmp", port_range_min=8, port_range_max=0, ports=None)),
    ("in:allow icmp 3", dict(protocol="icmp", port_range_min=3, port_range_max=None)),
    ("out:allow ipv6 any", dict(ethertype="IPv6", remote_ip_prefix=None, protocol=None)),
])
def test_compact_examples_parse_and_render_back(text, expect):
    rule = r.normalise({"rule": text})
    for name, value in expect.items():
        assert rule[name] == value, name
    assert rule["rule"] == text
    assert rule["priority"] == 1


@pytest.mark.parametrize("text,shown", [
    ("IN:Allow 10.0.0.5 TCP 80,22,23,24", "in:allow 10.0.0.5/32 tcp 22-24,80"),
    ("in:allow   tcp  22", "in:allow tcp 22"),
    ("in:allow", "in:allow any"),
    ("in:allow 2001:db8::/32 6 443", "in:allow 2001:db8::/32 6 443"),
    ("in:allow ipv6 icmp 128", "in:allow ipv6 ipv6-icmp 128"),
])
def test_compact_form_is_shown_normalised(text, shown):
    assert r.normalise({"rule": text})["rule"] == shown


def test_remote_groups_in_compact_form():
    gid, agid = str(uuid.uuid4()), str(uuid.uuid4())
    rule = r.normalise({"rule": f"in:allow group:{gid} tcp 22"})
    assert rule["remote_group_id"] == gid and rule["rule"] == f"in:allow group:{gid} tcp 22"
    rule = r.normalise({"rule": f"out:deny ipv6 address-group:{agid} any"})
    assert rule["remote_address_group_id"] == agid and rule["ethertype"] == "IPv6"
    assert rule["rule"] == f"out:deny ipv6 address-group:{agid} any"


@pytest.mark.parametrize("text", [
    "in:maybe any", "sideways:allow any", "", "allow tcp 22", "in:allow tcp 80-22",
    "in:allow tcp 70000", "in:allow tcp 0", "in:allow tcp 22 extra", "in:allow icmp 22,23",
    "in:allow icmp 300", "in:allow any 22", "in:allow bogus", "in:allow group:nope any",
    "in:allow 10.0.0.0/33 tcp", "in:allow tcp 22,,80",
])
def test_bad_compact_forms_name_rule(text):
    assert invalid_field({"rule": text}) in ("rule", "port_range_min", "port_range_max")


def test_compact_form_and_fields_must_agree():
    ok = r.normalise({"rule": "in:allow tcp 22", "direction": "ingress", "protocol": "6",
                      "port_range_min": 22, "port_range_max": 22, "priority": 7})
    assert ok["priority"] == 7 and ok["protocol"] == "6" and ok["rule"] == "in:allow 6 22"
    merged = r.normalise({"rule": "in:deny tcp 22", "remote_ip_prefix": "10.1.0.0/16"})
    assert merged["rule"] == "in:deny 10.1.0.0/16 tcp 22"
    assert invalid_field({"rule": "in:allow tcp 22", "direction": "egress"}) == "direction"
    assert invalid_field({"rule": "in:allow tcp 22", "action": "deny"}) == "action"
    assert invalid_field({"rule": "in:allow tcp 22", "ports": "80"}) == "ports"
    assert invalid_field({"rule": "in:allow 10.0.0.0/8 any", "ethertype": "IPv6"}) == "ethertype"
    v6 = r.normalise({"rule": "in:allow fd00::/8 any"})
    assert v6["ethertype"] == "IPv6"


# -- Neutron's fields and checks ---------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (None, None), ("any", None), ("ANY", None), (0, None), ("0", None), ("tcp", "tcp"),
    ("TCP", "tcp"), (6, "6"), ("17", "17"), ("ipv6-icmp", "ipv6-icmp"), (255, "255"),
])
def test_protocol_forms(value, expected):
    assert r.protocol("protocol", value) == expected


@pytest.mark.parametrize("value", [256, -1, "bogus", True, 1.5, [], ""])
def test_protocol_refused(value):
    with pytest.raises(Invalid) as e:
        r.protocol("protocol", value)
    assert e.value.field == "protocol"


def test_neutron_port_range_rules():
    base = {"direction": "ingress", "protocol": "tcp"}
    assert r.normalise({**base, "port_range_min": 80, "port_range_max": 80})["ports"] == "80"
    assert invalid_field({**base, "port_range_min": 90, "port_range_max": 80}) == "port_range_min"
    assert invalid_field({**base, "port_range_min": 80}) == "port_range_min"
    assert invalid_field({**base, "port_range_min": 0, "port_range_max": 80}) == "port_range_min"
    assert invalid_field({**base, "port_range_min": 70000, "port_range_max": 80}) == "port_range_min"
    assert invalid_field({"direction": "ingress", "port_range_min": 1, "port_range_max": 2}) \
        == "protocol"
    assert invalid_field({"direction": "ingress", "protocol": "gre", "port_range_min": 1,
                          "port_range_max": 2}) == "protocol"


def test_neutron_icmp_type_and_code():
    base = {"direction": "ingress", "protocol": "icmp"}
    rule = r.normalise({**base, "port_range_min": 8, "port_range_max": 0})
    assert (rule["port_range_min"], rule["port_range_max"], rule["ports"]) == (8, 0, None)
    assert r.normalise({**base, "port_range_min": 0})["port_range_max"] is None
    assert invalid_field({**base, "port_range_min": 256}) == "port_range_min"
    assert invalid_field({**base, "port_range_min": 8, "port_range_max": 256}) == "port_range_max"
    assert invalid_field({**base, "port_range_max": 0}) == "port_range_min"
    assert invalid_field({**base, "ports": "22"}) == "ports"


def test_ipv6_icmp_names_become_ipv6_icmp_and_v6_protocols_need_ipv6():
    for proto in ("icmp", "icmpv6"):
        rule = r.normalise({"direction": "ingress", "ethertype": "ipv6", "protocol": proto})
        assert rule["protocol"] == "ipv6-icmp" and rule["ethertype"] == "IPv6"
    assert r.normalise({"direction": "ingress", "ethertype": "IPv6", "protocol": 1})["protocol"] == "58"
    assert invalid_field({"direction": "ingress", "protocol": "ipv6-icmp"}) == "protocol"
    assert invalid_field({"direction": "ingress", "protocol": 58}) == "protocol"


def test_remote_ip_prefix_kept_with_mask_and_normalized_cidr():
    rule = r.normalise({"direction": "ingress", "remote_ip_prefix": "10.0.0.34/24"})
    assert rule["remote_ip_prefix"] == "10.0.0.34/24" and rule["normalized_cidr"] == "10.0.0.0/24"
    rule = r.normalise({"direction": "ingress", "remote_ip_prefix": "10.0.0.1"})
    assert rule["remote_ip_prefix"] == "10.0.0.1/32" and rule["normalized_cidr"] == "10.0.0.1/32"
    assert r.normalise({"direction": "ingress"})["normalized_cidr"] is None
    assert invalid_field({"direction": "ingress", "remote_ip_prefix": "fd00::/8"}) == "ethertype"
    assert invalid_field({"direction": "ingress", "remote_ip_prefix": "nonsense"}) == "remote_ip_prefix"


def test_remotes_are_mutually_exclusive():
    gid, agid = str(uuid.uuid4()), str(uuid.uuid4())
    base = {"direction": "ingress"}
    assert invalid_field({**base, "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": gid}) \
        == "remote_group_id"
    assert invalid_field({**base, "remote_group_id": gid, "remote_address_group_id": agid}) \
        == "remote_address_group_id"
    assert invalid_field({**base, "remote_ip_prefix": "10.0.0.0/8",
                          "remote_address_group_id": agid}) == "remote_address_group_id"


@pytest.mark.parametrize("given_fields,field", [
    ({"action": "maybe"}, "action"), ({"priority": 0}, "priority"), ({"priority": 101}, "priority"),
    ({"priority": "x"}, "priority"), ({"priority": True}, "priority"),
    ({"protocol": "tcp", "ports": "80-22"}, "ports"), ({"protocol": "tcp", "ports": "70000"}, "ports"),
    ({"protocol": "tcp", "ports": "0"}, "ports"), ({"protocol": "tcp", "ports": 80}, "ports"),
    ({"protocol": "tcp", "ports": "22;80"}, "ports"), ({"ports": "22"}, "ports"),
    ({"protocol": "tcp", "ports": "22,80", "port_range_min": 22, "port_range_max": 22}, "ports"),
    ({"ethertype": "IPv5"}, "ethertype"), ({"direction": "inbound"}, "direction"),
])
def test_extensions_refuse_bad_values_naming_the_field(given_fields, field):
    assert invalid_field({"direction": "ingress", **given_fields}) == field


def test_direction_required():
    assert invalid_field({"protocol": "tcp"}) == "direction"


def test_defaults_and_case():
    rule = r.normalise({"direction": "egress", "action": "DENY", "priority": "10"})
    assert (rule["action"], rule["priority"], rule["ethertype"]) == ("deny", 10, "IPv4")
    assert rule["rule"] == "out:deny any"


def test_ports_single_range_fills_neutron_fields_and_agrees_with_them():
    rule = r.normalise({"direction": "ingress", "protocol": "udp", "ports": "53",
                        "port_range_min": 53, "port_range_max": 53})
    assert (rule["port_range_min"], rule["port_range_max"]) == (53, 53)
    assert r.normalise({"direction": "ingress", "protocol": "tcp", "ports": ""})["ports"] is None


def test_port_list_length_limit():
    many = ",".join(str(2 * i + 1) for i in range(r.MAX_PORT_ENTRIES))
    assert len(r.parse_ports("ports", many)) == r.MAX_PORT_ENTRIES
    with pytest.raises(Invalid):
        r.parse_ports("ports", many + ",65000")


def test_signature_follows_neutrons_duplicate_rule():
    def sig(**kw):
        return r.signature(r.normalise({"direction": "ingress", **kw}))
    assert sig(protocol="tcp", ports="22") == sig(protocol="6", port_range_min=22, port_range_max=22)
    assert sig(remote_ip_prefix="0.0.0.0/0") == sig()
    assert sig(ethertype="IPv6", remote_ip_prefix="::/0") == sig(ethertype="IPv6")
    assert sig(ethertype="IPv6", protocol="icmp") == sig(ethertype="IPv6", protocol="58")
    assert sig(action="deny") != sig()
    assert sig(priority=5) != sig()
    assert sig(protocol="tcp", ports="22,80") != sig(protocol="tcp", ports="22")


def test_rule_for_the_firewall():
    doc = r.normalise({"rule": "in:deny 10.0.0.34/8 tcp 22,8000-8080"})
    rule = r.Rule.from_doc({**doc, "security_group_id": "g", "_key": 9, "priority": 10})
    assert rule.protocol == 6 and rule.port_ranges == ((22, 22), (8000, 8080))
    assert rule.remote_prefix == "10.0.0.0/8" and rule.action == "deny" and rule.key == 9
    icmp = r.Rule.from_doc({**r.normalise({"rule": "in:allow ipv6 icmp 128/0"}),
                            "security_group_id": "g"})
    assert (icmp.protocol, icmp.icmp_type, icmp.icmp_code, icmp.port_ranges) == (58, 128, 0, None)
    anything = r.Rule.from_doc({**r.normalise({"rule": "out:allow any"}), "security_group_id": "g"})
    assert anything.protocol is None and anything.port_ranges is None


# -- properties ---------------------------------------------------------------------

port = st.integers(1, 65535)
port_range = st.tuples(port, port).map(sorted).map(tuple)


@given(st.lists(port_range, min_size=1, max_size=r.MAX_PORT_ENTRIES))
def test_port_list_normalisation(ranges):
    text = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges)
    parsed = r.parse_ports("ports", text)
    # sorted, disjoint and not adjacent: the minimal list of ranges
    assert all(a[1] + 1 < b[0] for a, b in zip(parsed, parsed[1:]))
    assert all(lo <= hi for lo, hi in parsed)
    # covers exactly the ports listed
    for lo, hi in ranges:
        assert any(plo <= lo and hi <= phi for plo, phi in parsed)
    for plo, phi in parsed:
        for probe in (plo, phi):
            assert any(lo <= probe <= hi for lo, hi in ranges)
    # gaps between the merged ranges hold no listed port
    for a, b in zip(parsed, parsed[1:]):
        assert not any(lo <= a[1] + 1 <= hi for lo, hi in ranges)
    # normalising the normal form changes nothing
    assert r.ports("ports", r.format_ports(parsed)) == r.format_ports(parsed)


remote = st.one_of(
    st.none(),
    st.builds(lambda a, p: f"10.{a}.0.0/{p}", st.integers(0, 255), st.integers(8, 32)),
    st.builds(lambda p: f"fd00::/{p}", st.integers(8, 128)),
    st.builds(lambda u: f"group:{u}", st.uuids()),
    st.builds(lambda u: f"address-group:{u}", st.uuids()),
)
proto_and_tail = st.one_of(
    st.just(("any", None)),
    st.tuples(st.sampled_from(["tcp", "udp", "sctp", "6", "17"]),
              st.one_of(st.none(), st.lists(port_range, min_size=1, max_size=5).map(
                  lambda rs: ",".join(f"{a}-{b}" for a, b in rs)))),
    st.tuples(st.just("icmp"), st.one_of(
        st.none(), st.integers(0, 255).map(str),
        st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: f"{t[0]}/{t[1]}"))),
    st.tuples(st.sampled_from(["gre", "esp", "112"]), st.none()),
)


@settings(max_examples=300)
@given(st.sampled_from(["in", "out"]), st.sampled_from(["allow", "deny"]),
       st.sampled_from([None, "ipv4", "ipv6"]), remote, proto_and_tail)
def test_compact_round_trip(direction, action, family, remote_token, proto_tail):
    proto, tail = proto_tail
    is_prefix = remote_token is not None and "group:" not in remote_token
    if is_prefix and family is not None:
        family = "ipv6" if ":" in remote_token else "ipv4"
    tokens = [f"{direction}:{action}", family, remote_token, proto, tail]
    text = " ".join(t for t in tokens if t is not None)
    rule = r.normalise({"rule": text})
    again = r.normalise({"rule": rule["rule"]})
    assert again == rule
    assert r.render(again) == rule["rule"]
    # the JSON form of the same rule gives the same rule
    fields = {k: rule[k] for k in r.FIELDS if k != "rule" and rule[k] is not None}
    assert r.normalise(fields) == rule


json_value = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000), st.text(max_size=30),
                       st.lists(st.integers(), max_size=2), st.floats(allow_nan=False))


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([f for f in r.FIELDS]), json_value, max_size=6))
def test_any_input_gives_a_rule_or_invalid(fields):
    try:
        rule = r.normalise(fields)
    except Invalid as e:
        assert e.field in r.FIELDS
        return
    assert r.normalise({"rule": rule["rule"], "ethertype": rule["ethertype"]})["rule"] == rule["rule"]


@settings(max_examples=300)
@given(st.text(alphabet="inoutalwdey:0123456789.,-/ tcpudicmpv6anygrou", max_size=40))
def test_any_compact_text_parses_or_is_invalid_naming_rule(text):
    try:
        rule = r.normalise({"rule": text})
    except Invalid as e:
        assert e.field in ("rule", "port_range_min", "port_range_max", "ethertype", "protocol")
        return
    assert r.normalise({"rule": rule["rule"]}) == rule
