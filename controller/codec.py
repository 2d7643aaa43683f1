"""Flow values <-> OpenFlow 1.3 messages, and one canonical form for both.

The reconciler compares what apps want with what a switch reports, so the
two must be spelt identically. Open vSwitch normalises what it is given:
it drops a mask that is all ones, clears value bits outside a mask, reports
instructions in execution order, and never reports an empty apply-actions.
`canonical()` applies the same rules to a desired flow, and `from_stats()`
turns a flow-stats entry into the same shape, so equal means equal.

What each action or instruction kind means on the wire lives in its spec
(controller/actions.py); values of match fields in controller/fields.py.
"""
from __future__ import annotations

from typing import Any, Iterable

from controller import actions, pipeline
from controller.actions import table_number  # noqa: F401  (part of codec's interface)
from controller.fields import ALL_ONES64, canonical_match, canonical_value  # noqa: F401
from controller.flow import Flow

canonical_instructions = actions.canonical_instructions


def canonical(f: Flow) -> Flow:
    return Flow(f.table, f.priority, canonical_match(f.match),
                canonical_instructions(f.instructions), f.cookie)


# -- to OpenFlow ----------------------------------------------------------
def encode_actions(parser, ofp, acts: Iterable[tuple]) -> list:
    return [actions.encode_action(parser, ofp, a) for a in acts]


def encode_instructions(parser, ofp, instructions: Iterable[tuple]) -> list:
    return [actions.encode_instruction(parser, ofp, ins) for ins in instructions]


# Nicira (NXM) fields whose prerequisite is an OXM field. os-ken orders a
# match's fields by header value, which puts every NXM field before every
# OXM one; OVS wants a field's prerequisite before it (nw_ttl after
# eth_type) and refuses the flow otherwise (OFPBMC_BAD_PREREQ).
_NXM_AFTER_PREREQUISITES = frozenset({"nw_ttl"})


def encode_match(parser, match: Iterable[tuple[str, Any]]):
    m = parser.OFPMatch(**{k: v for k, v in match})
    fields = m.items()
    if not any(k in _NXM_AFTER_PREREQUISITES for k, _ in fields):
        return m
    ordered = [f for f in fields if f[0] not in _NXM_AFTER_PREREQUISITES] + \
        [f for f in fields if f[0] in _NXM_AFTER_PREREQUISITES]
    return parser.OFPMatch(_ordered_fields=ordered)


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
def decode_instructions(ofp, instructions) -> tuple:
    return canonical_instructions(actions.decode_instruction(ofp, ins) for ins in instructions)


def from_stats(ofp, stat) -> Flow:
    """A flow-stats entry as a canonical Flow value."""
    return Flow(actions.table_label(stat.table_id), stat.priority,
                canonical_match(stat.match.items()),
                decode_instructions(ofp, stat.instructions), stat.cookie)
