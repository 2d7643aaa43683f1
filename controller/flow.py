"""Flows as plain values.

Apps return Flow values; only the reconciler turns them into OpenFlow
messages. A flow's identity on a switch is (table, priority, match), as in
OpenFlow itself; its content is (instructions, cookie). Two flows with the
same identity and content are the same flow, whichever run computed them.

Match fields use os-ken's OXM names (in_port, eth_dst, vlan_vid, ipv4_src,
reg6, metadata, ...). A masked field's value is a (value, mask) tuple.

Instructions are a tuple of small tuples, in the order OpenFlow applies them:

    ("meter", meter_id)                      instruction: meter
    ("apply", action, action, ...)           instruction: apply-actions
    ("write_metadata", value, mask)          instruction: write-metadata
    ("goto", "table_name")                   instruction: goto-table

and actions inside "apply" are:

    ("output", port)            port is an int, "controller" or "in_port"
    ("controller", meter_id)    Nicira controller(meter_id=N): a packet-in through
                                meter N (to_controller says why not the meter
                                instruction; spec in controller/nxext.py)
    ("set_field", field, value)  any field; value may be (value, mask) to set
                                 some bits (sent as Nicira reg_load2)
    ("push_vlan",)              ethertype 0x8100
    ("pop_vlan",)
    ("dec_ttl",)
    ("resubmit", "table_name")              Nicira resubmit(,table)
    ("move", src_field, src_ofs, dst_field, dst_ofs, n_bits)   Nicira reg_move
    ("conjunction", conj_id, clause, n_clauses)  clause 1-based, as ovs-ofctl shows
    ("ct", commit, zone, table, nat, exec)  Nicira ct:
        commit  bool
        zone    int (immediate) or a field name ("reg5"): the zone from its low 16 bits
        table   "table_name" to recirculate to, or None
        nat     None; ("nat",) plain (reverse) NAT; or
                ("src" | "dst", ip_min, ip_max, port_min, port_max), ips as
                dotted text, ip_max and the ports 0 when not given
        exec    tuple of ("set_field", "ct_mark" | "ct_label", value) run on commit
    ("ct_clear",)
    ("group", group_id)

An empty instruction tuple drops the packet. Each kind's build, encode,
decode and canonical form is its spec in controller/actions.py; match
values and the ct_state bits (ct_state("+trk+est")) in controller/fields.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from controller import nxext, pipeline  # nxext registers the "controller" kind
# Instruction and action builders, so apps read like flow tables. Each is the
# build step of its kind's spec in controller/actions.py.
from controller.actions import (apply, conjunction, ct, ct_clear, dec_ttl, goto,  # noqa: F401
                                group, meter, move, nat, output, pop_vlan, push_vlan,
                                resubmit, set_field, write_metadata)
from controller.fields import (CT_DNAT, CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL,  # noqa: F401
                               CT_SNAT, CT_TRK, ct_state)

Match = tuple[tuple[str, Any], ...]
Instructions = tuple[tuple, ...]


def make_match(fields: Mapping[str, Any]) -> Match:
    return tuple(sorted(fields.items()))


@dataclass(frozen=True, slots=True)
class Flow:
    table: str
    priority: int
    match: Match
    instructions: Instructions
    cookie: int

    @property
    def key(self) -> tuple[str, int, Match]:
        return (self.table, self.priority, self.match)


def app_cookie(app_id: int, kind: str | None = None, key: int = 0) -> int:
    return pipeline.make_cookie(app_id, kind, key)


def flow(app_id: int, table: str, priority: int, match: Mapping[str, Any],
         *instructions: tuple, owner: tuple[str, int] | None = None) -> Flow:
    """A flow app_id wants; owner (store kind, `_key`) names the resource it is for."""
    if table not in pipeline.STAGES:
        raise KeyError(table)  # fail early on a misspelt stage name
    if owner is None:
        cookie = _APP_COOKIES.get(app_id) or _app_cookie(app_id)
    else:
        cookie = pipeline.make_cookie(app_id, *owner)
    return Flow(table, priority, tuple(sorted(match.items())), instructions, cookie)


_APP_COOKIES: dict[int, int] = {}


def _app_cookie(app_id: int) -> int:
    cookie = _APP_COOKIES[app_id] = pipeline.make_cookie(app_id)
    return cookie


def to_controller(port_key: int) -> tuple[tuple]:
    """Send to the controller through the port's meter.

    Every controller-bound flow of a VM port is rate-limited by the meter
    whose id is the port's key, so one VM cannot flood the controller. The
    reconciler installs a meter for every meter id a desired flow uses,
    before the flow, so apps need not manage meters. Spread it into a flow:
    flow(app_id, "services", 100, match, *to_controller(port["_key"])).

    The meter is named by the Nicira controller(meter_id=N) action, not by
    the OpenFlow meter instruction. Open vSwitch's flow-preserving restart
    (`ovs-ctl restart`, which runs ovs-save) restores flows but not meters,
    and refuses a flow whose meter instruction names a missing meter
    (OFPMMFC_INVALID_METER); ovs-ofctl then stops and the bridge comes back
    with no flows at all. A controller action naming a missing meter is
    accepted and sends unmetered until the meter exists and the flow is
    written again; OVS binds the meter when a flow is written, so the
    reconciler re-writes every flow whose meter it (re)creates
    (controller/reconciler.py rebind_meters). (OVS then flushes the
    restored flows anyway when it re-adds an active controller connection:
    bench/RESULTS.md, issue 16.)
    """
    return (apply(nxext.controller(port_key)),)


def meters_of(f: Flow) -> list[int]:
    """The meter ids a flow uses: meter instructions and metered controller actions."""
    out = []
    for ins in f.instructions:
        if ins[0] == "meter":
            out.append(ins[1])
        elif ins[0] == "apply":
            out.extend(a[1] for a in ins[1:] if a[0] == "controller")
    return out
