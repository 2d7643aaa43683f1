"""Flow values <-> OpenFlow 1.3 messages, and one canonical form for both.

The reconciler compares what apps want with what a switch reports, so the
two must be spelt identically. Open vSwitch normalises what it is given:
it drops a mask that is all ones, clears value bits outside a mask, reports
instructions in execution order, and never reports an empty apply-actions.
`canonical()` applies the same rules to a desired flow, and `from_stats()`
turns a flow-stats entry into the same shape, so equal means equal.
"""
from __future__ import annotations

import functools
import ipaddress
from typing import Any, Iterable

from controller import pipeline
from controller.flow import Flow

# Bit widths of maskable fields, to recognise an all-ones mask.
_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha"}
_IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
_INT_WIDTH = {"metadata": 64, "vlan_vid": 13, "tunnel_id": 64, "ct_mark": 32,
              "ct_state": 32, "ct_label": 128, "pkt_mark": 32,
              **{f"reg{i}": 32 for i in range(16)}}

# Instructions are reported in OpenFlow execution order.
_INSTR_ORDER = {"meter": 0, "apply": 1, "clear": 2, "write_actions": 3,
                "write_metadata": 4, "goto": 5}

_NAMED_PORTS = {"controller": 0xFFFFFFFD, "in_port": 0xFFFFFFF8, "local": 0xFFFFFFFE,
                "normal": 0xFFFFFFFA, "flood": 0xFFFFFFFB, "all": 0xFFFFFFFC}
_PORT_NAMES = {v: k for k, v in _NAMED_PORTS.items()}

OFPCML_NO_BUFFER = 0xFFFF
NX_IN_PORT = 0xFFF8
ALL_ONES64 = 0xFFFFFFFFFFFFFFFF


# -- values ---------------------------------------------------------------
def _mac_int(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)


def _mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def canonical_value(field: str, value: Any) -> Any:
    """One spelling per value: lower-case MACs, dotted IPv4, masks only when partial."""
    if type(value) is int:
        return value   # the common case, and already canonical
    if isinstance(value, list):
        value = tuple(value)
    return _canonical_cached(field, value)


@functools.lru_cache(maxsize=1 << 16)
def _canonical_cached(field: str, value: Any) -> Any:
    # Computed flows repeat the same MACs, addresses and masks over many
    # switches; parsing each once keeps a 10,000-port recompute fast.
    if field in _IPV4_FIELDS and isinstance(value, str) and "/" in value:
        net = ipaddress.IPv4Network(value, strict=False)
        value = (str(net.network_address), str(net.netmask))
    if field in _MAC_FIELDS:
        if isinstance(value, tuple):
            v, m = _mac_int(value[0]), _mac_int(value[1])
            if m == (1 << 48) - 1:
                return _mac_text(v)
            return (_mac_text(v & m), _mac_text(m))
        return _mac_text(_mac_int(value))
    if field in _IPV4_FIELDS:
        if isinstance(value, tuple):
            v, m = int(ipaddress.IPv4Address(value[0])), int(ipaddress.IPv4Address(value[1]))
            if m == 0xFFFFFFFF:
                return str(ipaddress.IPv4Address(v))
            return (str(ipaddress.IPv4Address(v & m)), str(ipaddress.IPv4Address(m)))
        return str(ipaddress.IPv4Address(value))
    if isinstance(value, tuple):
        v, m = int(value[0]), int(value[1])
        width = _INT_WIDTH.get(field, 64)
        if m == (1 << width) - 1 or (field == "metadata" and m == ALL_ONES64):
            return v
        return (v & m, m)
    return value


def canonical_match(match: Iterable[tuple[str, Any]]) -> tuple:
    return tuple(sorted((k, canonical_value(k, v)) for k, v in match))


def _canonical_action(action: tuple) -> tuple:
    kind = action[0]
    if kind == "output":
        port = action[1]
        if isinstance(port, int) and port in _PORT_NAMES:
            port = _PORT_NAMES[port]
        return ("output", port)
    if kind == "set_field":
        return ("set_field", action[1], canonical_value(action[1], action[2]))
    return tuple(action)


def canonical_instructions(instructions: Iterable[tuple]) -> tuple:
    out = []
    for ins in instructions:
        kind = ins[0]
        if kind == "apply":
            if len(ins) == 1:
                continue  # an empty apply-actions is not reported back by OVS
            out.append(("apply",) + tuple(_canonical_action(a) for a in ins[1:]))
        elif kind == "write_metadata":
            value, mask = int(ins[1]), int(ins[2])
            out.append(("write_metadata", value & mask, mask))
        else:
            out.append(tuple(ins))
    out.sort(key=lambda i: _INSTR_ORDER[i[0]])
    return tuple(out)


def canonical(f: Flow) -> Flow:
    return Flow(f.table, f.priority, canonical_match(f.match),
                canonical_instructions(f.instructions), f.cookie)


# -- to OpenFlow ----------------------------------------------------------
def _port_number(port) -> int:
    return _NAMED_PORTS[port] if isinstance(port, str) else int(port)


def encode_actions(parser, ofp, actions: Iterable[tuple]) -> list:
    out = []
    for a in actions:
        kind = a[0]
        if kind == "output":
            max_len = OFPCML_NO_BUFFER if a[1] == "controller" else 0
            out.append(parser.OFPActionOutput(_port_number(a[1]), max_len))
        elif kind == "set_field":
            value = a[2]
            out.append(parser.OFPActionSetField(**{a[1]: value}))
        elif kind == "push_vlan":
            out.append(parser.OFPActionPushVlan(0x8100))
        elif kind == "pop_vlan":
            out.append(parser.OFPActionPopVlan())
        elif kind == "resubmit":
            # Nicira's in_port is 16 bits: OpenFlow 1.0's OFPP_IN_PORT.
            out.append(parser.NXActionResubmitTable(in_port=NX_IN_PORT,
                                                    table_id=pipeline.table_id(a[1])))
        else:
            raise ValueError(f"unknown action {a!r}")
    return out


def encode_instructions(parser, ofp, instructions: Iterable[tuple]) -> list:
    out = []
    for ins in instructions:
        kind = ins[0]
        if kind == "meter":
            out.append(parser.OFPInstructionMeter(ins[1], ofp.OFPIT_METER))
        elif kind == "apply":
            out.append(parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, encode_actions(parser, ofp, ins[1:])))
        elif kind == "write_metadata":
            out.append(parser.OFPInstructionWriteMetadata(ins[1], ins[2]))
        elif kind == "goto":
            out.append(parser.OFPInstructionGotoTable(pipeline.table_id(ins[1])))
        else:
            raise ValueError(f"unknown instruction {ins!r}")
    return out


def encode_match(parser, match: Iterable[tuple[str, Any]]):
    return parser.OFPMatch(**{k: v for k, v in match})


def table_number(name: str) -> int:
    """A stage's number; "tableN" names a table outside the map (found on a switch)."""
    if name in pipeline.TABLES:
        return pipeline.table_id(name)
    if name.startswith("table") and name[5:].isdigit():
        return int(name[5:])
    raise KeyError(name)


def flow_mod(datapath, f: Flow, op: str):
    """An OFPFlowMod for op in add | modify | delete (the strict forms)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    match = encode_match(parser, f.match)
    table = table_number(f.table)
    if op == "add":
        return parser.OFPFlowMod(datapath, cookie=f.cookie, table_id=table,
                                 command=ofp.OFPFC_ADD, priority=f.priority, match=match,
                                 instructions=encode_instructions(parser, ofp, f.instructions))
    if op == "modify":
        # Cookie filtered on the one we own, so a foreign flow is never rewritten.
        return parser.OFPFlowMod(datapath, cookie=f.cookie, cookie_mask=ALL_ONES64,
                                 table_id=table, command=ofp.OFPFC_MODIFY_STRICT,
                                 priority=f.priority, match=match,
                                 instructions=encode_instructions(parser, ofp, f.instructions))
    if op == "delete":
        return parser.OFPFlowMod(datapath, cookie=f.cookie, cookie_mask=ALL_ONES64,
                                 table_id=table, command=ofp.OFPFC_DELETE_STRICT,
                                 priority=f.priority, match=match,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    raise ValueError(f"unknown flow op {op!r}")


def flow_stats_request(datapath):
    """Flow-stats for every table, narrowed to vmflow's cookie space."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowStatsRequest(datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      pipeline.COOKIE_SPACE, pipeline.COOKIE_SPACE_MASK,
                                      parser.OFPMatch())


# -- from OpenFlow --------------------------------------------------------
def _decode_action(ofp, a) -> tuple:
    name = type(a).__name__
    if name == "OFPActionOutput":
        return ("output", _PORT_NAMES.get(a.port, a.port))
    if name == "OFPActionSetField":
        return ("set_field", a.key, canonical_value(a.key, a.value))
    if name == "OFPActionPushVlan":
        return ("push_vlan",)
    if name == "OFPActionPopVlan":
        return ("pop_vlan",)
    if name == "NXActionResubmitTable" and a.in_port == NX_IN_PORT:
        return ("resubmit", pipeline.table_name(a.table_id) or f"table{a.table_id}")
    # Something we never send: keep it visible so the diff replaces the flow.
    return ("unknown", name, repr(a))


def decode_instructions(ofp, instructions) -> tuple:
    out = []
    for ins in instructions:
        name = type(ins).__name__
        if name == "OFPInstructionMeter":
            out.append(("meter", ins.meter_id))
        elif name == "OFPInstructionActions" and ins.type == ofp.OFPIT_APPLY_ACTIONS:
            out.append(("apply",) + tuple(_decode_action(ofp, a) for a in ins.actions))
        elif name == "OFPInstructionWriteMetadata":
            out.append(("write_metadata", ins.metadata, ins.metadata_mask))
        elif name == "OFPInstructionGotoTable":
            out.append(("goto", pipeline.table_name(ins.table_id) or str(ins.table_id)))
        else:
            out.append(("unknown", name, repr(ins)))
    return canonical_instructions_known(out)


def canonical_instructions_known(out: list) -> tuple:
    known = [i for i in out if i[0] in _INSTR_ORDER]
    other = [i for i in out if i[0] not in _INSTR_ORDER]
    return canonical_instructions(known) + tuple(other)


def from_stats(ofp, stat) -> Flow:
    """A flow-stats entry as a canonical Flow value."""
    table = pipeline.table_name(stat.table_id) or f"table{stat.table_id}"
    return Flow(table, stat.priority, canonical_match(stat.match.items()),
                decode_instructions(ofp, stat.instructions), stat.cookie)
