"""Walk a packet through one switch's desired flows, as Open vSwitch would.

Pure: flows in (controller/flow.py values, one switch's set), a packet in
(controller/packetfields.py), a Trace out: every table the packet passed,
the flow it matched there (and who wanted that flow, from the cookie), what
that flow did, and the verdict: the ports it left by, the controller, or
dropped, with the table where it was.

Semantics followed (OpenFlow 1.3 as OVS implements it, ovs-actions(7),
ovs-fields(7)):
- a table picks its highest-priority matching flow; a miss drops (OpenFlow
  1.3 has no implicit table-miss flow);
- conjunctive match: flows whose actions are only conjunction(id, k/n)
  never match on their own; when, at one priority above the best ordinary
  match, every clause 1..n of conjunction `id` has a matching flow, the
  table is searched again with conj_id=id (ignoring conjunction flows) and
  that flow is taken; if none matches, the search goes on as if the
  conjunction had not matched;
- instructions run in OpenFlow order: meter, apply-actions, write-metadata,
  goto (to a later table only);
- resubmit(,T) runs table T on the packet as it is now, then carries on
  with the rest of the actions; its changes to the packet stay;
- output to the port the packet came in on is skipped (output:in_port is
  how a flow sends a packet back);
- dec_ttl drops an IPv4 packet whose TTL is 0 or 1, and does nothing to a
  non-IP one;
- ct() takes the connection state as an input to the walk (the caller says
  what conntrack would answer: new, est, ..., one per ct(table=T) in the
  order the walk meets them, as ofproto/trace's --ct-next). With table=T
  the packet is recirculated to T with ct_state, ct_zone and ct_mark set, after the
  current pass ends; without a table the pass goes on with the state it
  had. commit, nat and exec are recorded; exec's ct_mark shows in the
  recirculated packet. ct_clear forgets the state;
- meters (the instruction, or controller(meter_id=N)) are recorded, never
  applied. A meter instruction stays on the packet for the rest of its pass,
  as OVS's datapath meter action does, so each output lists every meter
  passed before it (Output.meters), and a flow whose one instruction is a
  meter, reached by resubmit, returns to the resubmitter;
- a group runs each bucket on a copy of the packet when the caller gives the
  group's buckets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from controller import pipeline
from controller.flow import Flow
from controller.packetfields import (PREREQUISITES, WIDTHS, Packet, field_width,
                                     make_packet, match_text, match_value, parse_ct_state,
                                     to_int, to_text)

MAX_RESUBMIT_DEPTH = 64      # as OVS
MAX_STEPS = 4096             # a loop the depth limit would not catch (recirculation)


def table_number(name: str) -> Optional[int]:
    t = pipeline.TABLES.get(name)
    if t is not None:
        return t.number
    if name.startswith("table") and name[5:].isdigit():
        return int(name[5:])
    return None


def table_doc(name: str) -> str:
    t = pipeline.TABLES.get(name)
    return t.doc if t is not None else ""


@dataclass
class Step:
    """One table lookup on the packet's way."""
    table: str
    depth: int                        # 0 for a pass, +1 per resubmit
    flow: Optional[Flow]              # None: a table miss
    packet: str                       # the packet as the table saw it
    actions: list[str] = field(default_factory=list)   # what the flow did, in order
    conjunction: Optional[int] = None   # conj_id this flow was found with
    conj_flows: list[Flow] = field(default_factory=list)  # the clause flows that matched
    meter: Optional[int] = None
    recirculation: Optional[str] = None   # "ct(zone=5) as +trk+new": the pass this step starts

    @property
    def number(self) -> Optional[int]:
        return table_number(self.table)

    @property
    def doc(self) -> str:
        return table_doc(self.table)

    @property
    def priority(self) -> Optional[int]:
        return self.flow.priority if self.flow else None

    @property
    def match(self) -> str:
        return match_text(self.flow.match) if self.flow else ""

    @property
    def owner(self) -> Optional[tuple[int, Optional[str], int]]:
        """(app id, resource kind or None, resource key) from the cookie."""
        return pipeline.decode_cookie(self.flow.cookie) if self.flow else None


@dataclass(frozen=True)
class Output:
    port: Any                  # ofport (int), "controller", or another reserved port
    packet: dict               # the packet's fields as it left (packetfields.snapshot)
    table: str                 # where the output action ran
    flow: Flow
    meter: Optional[int] = None
    path: tuple[str, ...] = ()   # the tables this copy passed, from the first
    meters: tuple[int, ...] = ()   # meter instructions passed on the way, in order

    @property
    def vlans(self) -> list[int]:
        return list(self.packet.get("vlan", ()))


@dataclass(frozen=True)
class Drop:
    table: str
    reason: str
    flow: Optional[Flow] = None
    # Only the copy back to the sender, which OVS skips (a flood's own copy):
    # not what a person asking "where was it dropped" wants to hear first.
    to_sender_only: bool = False


@dataclass(frozen=True)
class CtCall:
    table: str
    zone: int
    commit: bool
    state: Optional[int]       # the ct_state the walk gave the recirculated packet
    recirculate_to: Optional[str]
    nat: Any
    exec: tuple


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)     # to switch ports
    controller: list[Output] = field(default_factory=list)  # packet-ins
    drops: list[Drop] = field(default_factory=list)         # passes that ended with nothing
    ct: list[CtCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)         # what OVS would refuse or we cannot model

    @property
    def dropped(self) -> bool:
        return not self.outputs and not self.controller

    @property
    def dropped_at(self) -> Optional[str]:
        """The table where a dropped packet was dropped (the first pass that
        ended with nothing); None when it went somewhere."""
        drop = self.first_drop
        if not self.dropped:
            return None
        return drop.table if drop else (self.steps[-1].table if self.steps else None)

    @property
    def first_drop(self) -> Optional[Drop]:
        for d in self.drops:
            if not d.to_sender_only:
                return d
        return self.drops[0] if self.drops else None

    @property
    def ports(self) -> list:
        """Ports the packet left by, in the order it did."""
        return [o.port for o in self.outputs]

    def output_to(self, port) -> Optional[Output]:
        for o in self.outputs:
            if o.port == port:
                return o
        return None

    @property
    def verdict(self) -> str:
        parts = []
        if self.outputs:
            parts.append("output to " + ", ".join(
                str(o.port) + (f" (vlan {'.'.join(map(str, o.vlans))})" if o.vlans else "")
                for o in self.outputs))
        if self.controller:
            parts.append("to the controller")
        if not parts:
            d = self.first_drop
            return f"dropped in {self.dropped_at}" + (f": {d.reason}" if d else "")
        return "; ".join(parts)


class _Flow:
    """A flow compiled for lookups."""
    __slots__ = ("flow", "tests", "conj")

    def __init__(self, f: Flow):
        self.flow = f
        self.tests = tuple((name,) + match_value(name, value) for name, value in f.match)
        self.conj = _conjunctions(f)

    def matches(self, pkt: Packet, conj_id: int = 0) -> bool:
        for name, value, mask in self.tests:
            have = conj_id if name == "conj_id" else pkt.get(name)
            if have is None or have & mask != value:
                return False
        return True


def _conjunctions(f: Flow) -> Optional[list[tuple[int, int, int]]]:
    """(id, clause, n_clauses) of a conjunction flow; None for an ordinary flow."""
    if len(f.instructions) != 1 or f.instructions[0][0] != "apply":
        return None
    actions = f.instructions[0][1:]
    if not actions or any(a[0] != "conjunction" for a in actions):
        return None
    return [(int(a[1]), int(a[2]), int(a[3])) for a in actions]


class _Stop(Exception):
    """The packet is gone (dec_ttl) or the walk cannot go on."""


class Walker:
    def __init__(self, flows: Iterable[Flow], *,
                 groups: Optional[Mapping[int, Sequence[Sequence[tuple]]]] = None):
        """flows: one switch's flows. groups: group id -> buckets, each a list
        of actions (type "all": every bucket gets a copy)."""
        self.tables: dict[str, list[_Flow]] = {}
        for f in flows:
            self.tables.setdefault(f.table, []).append(_Flow(f))
        for entries in self.tables.values():
            # Highest priority first; equal priorities keep a stable order
            # (OpenFlow leaves overlapping equal-priority flows undefined).
            entries.sort(key=lambda e: -e.flow.priority)
        self.groups = dict(groups or {})

    # -- lookup ---------------------------------------------------------------
    def lookup(self, table: str, pkt: Packet) -> tuple[Optional[_Flow], Optional[int], list[Flow]]:
        """(the flow the table picks or None, conj_id it was found with, the
        conjunction flows that made it)."""
        entries = self.tables.get(table, ())
        hard = next((e for e in entries if e.conj is None and e.matches(pkt)), None)
        floor = hard.flow.priority if hard else -1
        soft = [e for e in entries if e.conj is not None and e.flow.priority > floor
                and e.matches(pkt)]
        for prio in sorted({e.flow.priority for e in soft}, reverse=True):
            clauses: dict[int, set[int]] = {}
            wanted: dict[int, int] = {}
            members: dict[int, list[Flow]] = {}
            for e in soft:
                if e.flow.priority != prio:
                    continue
                for cid, k, n in e.conj:
                    clauses.setdefault(cid, set()).add(k)
                    wanted[cid] = n
                    members.setdefault(cid, []).append(e.flow)
            for cid in sorted(clauses):
                if clauses[cid] >= set(range(1, wanted[cid] + 1)):
                    found = next((e for e in entries
                                  if e.conj is None and e.matches(pkt, conj_id=cid)), None)
                    if found is not None:
                        return found, cid, members[cid]
        return hard, None, []

    # -- the walk --------------------------------------------------------------
    def walk(self, packet: Packet | Mapping[str, Any], *, table: Optional[str] = None,
             ct: Sequence[str | int] | str | int = ("new",), frame_len: int = 0) -> Trace:
        """Walk `packet` from `table` (the pipeline's first stage by default).
        ct: the state each ct() action answers, in order; the last one
        repeats (as ovn-trace's --ct). frame_len: the Ethernet frame's length,
        for check_pkt_larger (0: smaller than any limit)."""
        pkt = packet.copy() if isinstance(packet, Packet) else make_packet(packet)
        states = [ct] if isinstance(ct, (str, int)) else list(ct)
        run = _Run(self, [parse_ct_state(s) for s in states] or [parse_ct_state("new")])
        run.frame_len = frame_len
        run.passes.append((table or pipeline.PIPELINE[0].name, pkt, None, ()))
        while run.passes:
            start, p, why, path = run.passes.pop(0)
            run.path = list(path)
            run.pass_(start, p, why)
        return run.trace


class _Run:
    """One walk's mutable state."""

    def __init__(self, walker: Walker, ct_states: list[int]):
        self.w = walker
        self.trace = Trace()
        self.ct_states = ct_states
        self.ct_used = 0
        # Recirculations wait for the pass that made them to end, as in OVS.
        self.passes: list[tuple[str, Packet, Optional[str], tuple[str, ...]]] = []
        self.steps = 0
        self.skipped_ingress = 0
        self.path: list[str] = []    # tables on the way to the current step
        self.meters: list[int] = []  # meter instructions passed in this pass
        self.frame_len = 0

    def next_ct_state(self) -> int:
        state = self.ct_states[min(self.ct_used, len(self.ct_states) - 1)]
        self.ct_used += 1
        return state

    def error(self, text: str) -> None:
        self.trace.errors.append(text)

    def pass_(self, table: str, pkt: Packet, why: Optional[str]) -> None:
        produced_before = len(self.trace.outputs) + len(self.trace.controller)
        recirc_before = len(self.passes)
        self.meters = []
        try:
            last = self.pipeline(table, pkt, 0, why)
        except _Stop:
            return
        if (len(self.trace.outputs) + len(self.trace.controller) == produced_before
                and len(self.passes) == recirc_before and last is not None):
            self.trace.drops.append(last)

    def pipeline(self, table: str, pkt: Packet, depth: int,
                 why: Optional[str] = None) -> Optional[Drop]:
        """Run tables from `table` until a flow sends nowhere further. Returns
        how this path ended, as a Drop (the caller decides whether it was one)."""
        produced_before = len(self.trace.outputs) + len(self.trace.controller)
        skipped_before = self.skipped_ingress
        while True:
            self.steps += 1
            if self.steps > MAX_STEPS:
                self.error(f"more than {MAX_STEPS} lookups: a loop?")
                raise _Stop()
            self.path.append(table)
            found, conj_id, conj_flows = self.w.lookup(table, pkt)
            step = Step(table, depth, found.flow if found else None, pkt.text(),
                        conjunction=conj_id, conj_flows=conj_flows, recirculation=why)
            why = None
            self.trace.steps.append(step)
            if found is None:
                step.actions.append("no flow matched: drop")
                return Drop(table, "no flow matched (table miss)")
            nxt = self.instructions(step, found.flow, pkt, depth)
            if nxt is None:
                if not found.flow.instructions:
                    return Drop(table, "the flow drops (no actions)", found.flow)
                if depth and all(ins[0] == "meter" for ins in found.flow.instructions):
                    return None     # a metered stage: the resubmitter carries on
                if len(self.trace.outputs) + len(self.trace.controller) == produced_before:
                    if self.skipped_ingress > skipped_before:
                        return Drop(table, "its only way out is the port it came in by",
                                    found.flow, to_sender_only=True)
                    return Drop(table, "the flow sends it nowhere", found.flow)
                return None
            here, there = table_number(table), table_number(nxt)
            if here is not None and there is not None and there <= here:
                self.error(f"{table}: goto {nxt} does not go forward (OVS refuses the flow)")
                return Drop(table, f"invalid goto {nxt}", found.flow)
            table = nxt

    def instructions(self, step: Step, f: Flow, pkt: Packet, depth: int) -> Optional[str]:
        """Run a flow's instructions; the table it goes to next, if any."""
        goto = None
        for ins in f.instructions:
            kind = ins[0]
            if kind == "meter":
                step.meter = ins[1]
                self.meters.append(ins[1])
                step.actions.append(f"meter:{ins[1]}")
            elif kind == "apply":
                for action in ins[1:]:
                    self.action(step, f, pkt, depth, action)
            elif kind == "write_metadata":
                value, mask = int(ins[1]), int(ins[2])
                old = pkt.get("metadata") or 0
                pkt.fields["metadata"] = (old & ~mask) | (value & mask)
                step.actions.append(f"write_metadata:{value:#x}"
                                    + (f"/{mask:#x}" if mask != (1 << 64) - 1 else ""))
            elif kind == "goto":
                goto = ins[1]
                step.actions.append(f"goto_table:{goto}")
            else:
                self.error(f"{step.table}: instruction {kind!r} is not modelled")
                step.actions.append(f"(not modelled: {ins!r})")
        return goto

    def action(self, step: Step, f: Flow, pkt: Packet, depth: int, a: tuple) -> None:
        kind = a[0]
        say = step.actions.append
        if kind == "output":
            self.output(step, f, pkt, a[1])
        elif kind == "controller":
            # Nicira controller(meter_id=N): a packet-in through meter N.
            step.actions.append(f"controller(meter_id={a[1]})")
            self.trace.controller.append(Output("controller", pkt.snapshot(), step.table, f,
                                                a[1], tuple(self.path)))
        elif kind == "set_field":
            name, value = a[1], a[2]
            try:
                if isinstance(value, (tuple, list)):
                    # Some bits only (Nicira reg_load2): the rest stay.
                    v, m = match_value(name, value)
                    have = pkt.get(name)
                    if have is None:
                        raise ValueError(f"set_field {name} on a packet without that header")
                    pkt.set(name, (have & ~m) | v)
                    say(f"set_field:{_field_value_text(name, value[0])}"
                        f"/{_field_value_text(name, value[1])}->{name}")
                else:
                    pkt.set(name, to_int(name, value))
                    say(f"set_field:{_field_value_text(name, value)}->{name}")
            except ValueError as e:
                self.error(f"{step.table}: {e}")
        elif kind == "push_vlan":
            pkt.vlans.insert(0, pkt.vlans[0] if pkt.vlans else 0)
            say("push_vlan:0x8100")
        elif kind == "pop_vlan":
            if pkt.vlans:
                pkt.vlans.pop(0)
            else:
                self.error(f"{step.table}: pop_vlan on an untagged packet")
            say("pop_vlan")
        elif kind == "dec_ttl":
            say("dec_ttl")
            ttl = pkt.get("nw_ttl")
            if ttl is not None:
                if ttl <= 1:
                    self.trace.drops.append(Drop(step.table, f"TTL {ttl} expired (dec_ttl)", f))
                    say("TTL expired: drop")
                    raise _Stop()
                pkt.fields["nw_ttl"] = ttl - 1
        elif kind == "resubmit":
            say(f"resubmit(,{a[1]})")
            if depth + 1 > MAX_RESUBMIT_DEPTH:
                self.error(f"{step.table}: resubmit deeper than {MAX_RESUBMIT_DEPTH}")
                raise _Stop()
            back_to = len(self.path)
            end = self.pipeline(a[1], pkt, depth + 1)
            del self.path[back_to:]
            if end is not None:
                self.trace.drops.append(end)
        elif kind == "move":
            self.move(step, pkt, *a[1:])
        elif kind == "conjunction":
            self.error(f"{step.table}: a flow mixes conjunction with other actions "
                       "(OVS refuses it)")
        elif kind == "ct":
            self.ct(step, pkt, *a[1:])
        elif kind == "ct_clear":
            for name in ("ct_state", "ct_zone", "ct_mark", "ct_label"):
                pkt.fields.pop(name, None)
            say("ct_clear")
        elif kind == "group":
            self.group(step, f, pkt, depth, int(a[1]))
        elif kind == "check_pkt_larger":
            _, limit, reg, bit = a
            larger = int(self.frame_len > limit)
            pkt.set(reg, (pkt.get(reg) or 0) & ~(1 << bit) | (larger << bit))
            say(f"check_pkt_larger({limit})->{reg}[{bit}] = {larger}")
        else:
            self.error(f"{step.table}: action {kind!r} is not modelled")
            say(f"(not modelled: {a!r})")

    def output(self, step: Step, f: Flow, pkt: Packet, port) -> None:
        in_port = pkt.get("in_port")
        if port == "in_port":
            port = in_port
        elif port == "controller":
            step.actions.append("controller" + (f" (meter {step.meter})" if step.meter else ""))
            self.trace.controller.append(Output("controller", pkt.snapshot(), step.table, f,
                                                step.meter, tuple(self.path)))
            return
        elif isinstance(port, int) and port == in_port:
            # OVS never sends a packet back out of the port it came in by,
            # unless the action says output:in_port.
            step.actions.append(f"output:{port} (skipped: the ingress port)")
            self.skipped_ingress += 1
            return
        step.actions.append(f"output:{port}")
        self.trace.outputs.append(Output(port, pkt.snapshot(), step.table, f, step.meter,
                                         tuple(self.path), tuple(self.meters)))

    def move(self, step: Step, pkt: Packet, src: str, src_ofs: int, dst: str, dst_ofs: int,
             n_bits: int) -> None:
        step.actions.append(f"move:{src}[{src_ofs}..{src_ofs + n_bits - 1}]"
                            f"->{dst}[{dst_ofs}..{dst_ofs + n_bits - 1}]")
        value = pkt.get(src)
        have = pkt.get(dst)
        if value is None or have is None:
            self.error(f"{step.table}: move between {src} and {dst}: the packet lacks one")
            return
        if src_ofs + n_bits > field_width(src) or dst_ofs + n_bits > field_width(dst):
            self.error(f"{step.table}: move {src}->{dst}: bits out of range")
            return
        bits = (value >> src_ofs) & ((1 << n_bits) - 1)
        mask = ((1 << n_bits) - 1) << dst_ofs
        try:
            pkt.set(dst, (have & ~mask) | (bits << dst_ofs))
        except ValueError as e:
            self.error(f"{step.table}: {e}")

    def ct(self, step: Step, pkt: Packet, commit, zone, table, nat, exec_=()) -> None:
        if isinstance(zone, str):
            zone_value = (pkt.get(zone) or 0) & 0xFFFF
            zone_text = f"{zone}[0..15]={zone_value}"
        else:
            zone_value = int(zone or 0)
            zone_text = str(zone_value)
        # Only a recirculation shows the pipeline a state, so only it takes
        # one of the given states (as ofproto/trace's --ct-next does).
        state = self.next_ct_state() if table is not None else None
        parts = [f"zone={zone_text}"] + (["commit"] if commit else [])
        if table is not None:
            parts.append(f"table={table}")
        if nat:
            parts.append("nat" if nat[0] == "nat" else f"nat({nat[0]}={_nat_text(nat)})")
        for e in exec_ or ():
            parts.append(f"exec({e[1]}={e[2]})")
        step.actions.append(f"ct({','.join(parts)})"
                            + (f" -> {to_text('ct_state', state)}" if table is not None else ""))
        self.trace.ct.append(CtCall(step.table, zone_value, bool(commit), state, table, nat,
                                    tuple(exec_ or ())))
        if table is None:
            return
        again = pkt.copy()
        again.fields["ct_state"] = state
        again.fields["ct_zone"] = zone_value
        if commit:
            for e in exec_ or ():
                if e[0] == "set_field" and e[1] in ("ct_mark", "ct_label"):
                    v, m = match_value(e[1], e[2])
                    again.fields[e[1]] = (again.fields.get(e[1], 0) & ~m) | v
        self.passes.append((table, again,
                            f"recirculated by ct(zone={zone_value}) in {step.table} "
                            f"as {to_text('ct_state', state)}", tuple(self.path)))

    def group(self, step: Step, f: Flow, pkt: Packet, depth: int, group_id: int) -> None:
        step.actions.append(f"group:{group_id}")
        buckets = self.w.groups.get(group_id)
        if buckets is None:
            self.error(f"{step.table}: group {group_id} is not known to the walk")
            return
        for bucket in buckets:
            copy = pkt.copy()
            for a in bucket:
                self.action(step, f, copy, depth, a)


def _field_value_text(name: str, value) -> str:
    try:
        return to_text(name, to_int(name, value))
    except ValueError:
        return str(value)


def _nat_text(nat: tuple) -> str:
    _, ip_min, ip_max, port_min, port_max = (tuple(nat) + (0, 0, 0, 0))[:5]
    text = str(ip_min) + (f"-{ip_max}" if ip_max else "")
    if port_min:
        text += f":{port_min}" + (f"-{port_max}" if port_max else "")
    return text


def walk(flows: Iterable[Flow], packet, **kw) -> Trace:
    """Walker(flows).walk(packet, **kw), for one-off use."""
    return Walker(flows).walk(packet, **kw)


# -- checks OVS makes when a flow is added -------------------------------------
def flow_problems(flows: Iterable[Flow]) -> list[str]:
    """What OVS would refuse in these flows (or accept only in OpenFlow 1.0):
    a match on a field whose prerequisites the match does not pin (tcp_dst
    without ip_proto=6); a set_field or move the match does not allow;
    pop_vlan or a VLAN set_field without a tag; dec_ttl or ct without
    eth_type ip; ct(commit) of +inv; a goto that does not go forward; a
    conjunction mixed with other actions. Empty when all is well."""
    problems = []
    for f in flows:
        pinned = {name: value for name, value in f.match if not isinstance(value, (tuple, list))}
        here = table_number(f.table)

        def unmet(name: str) -> list[str]:
            out = []
            for need, allowed in PREREQUISITES.get(name, ()):
                have = pinned.get(need)
                if have is None or to_int(need, have) not in allowed:
                    out.append(need)
            if name == "vlan_pcp" and "vlan_vid" not in pinned:
                out.append("vlan_vid")
            return out

        where = f"{f.table} priority {f.priority} {match_text(f.match)}"
        for name, _ in f.match:
            if name not in WIDTHS and name != "in_port":
                problems.append(f"{where}: unknown match field {name}")
            missing = unmet(name)
            if missing:
                problems.append(f"{where}: matches {name} without {', '.join(missing)}")
        actions = [a for ins in f.instructions if ins[0] == "apply" for a in ins[1:]]
        kinds = {a[0] for a in actions}
        if "conjunction" in kinds and kinds != {"conjunction"}:
            problems.append(f"{where}: conjunction mixed with other actions")
        # OVS checks actions in order against the match as the earlier
        # actions leave it (a push_vlan makes a VLAN to set or pop).
        vid = dict(f.match).get("vlan_vid")
        tagged = vid is not None and bool(match_value("vlan_vid", vid)[0] & 0x1000)
        is_ip = pinned.get("eth_type") is not None and \
            to_int("eth_type", pinned["eth_type"]) in (0x0800, 0x86DD)
        ct_state = dict(f.match).get("ct_state")
        invalid = ct_state is not None and bool(match_value("ct_state", ct_state)[0] & 0x10)
        for a in actions:
            kind = a[0]
            if kind == "set_field":
                missing = unmet(a[1])
                if a[1] in ("vlan_vid", "vlan_pcp"):
                    missing = [] if tagged else ["a VLAN"]
                if missing:
                    problems.append(f"{where}: set_field {a[1]} without {', '.join(missing)}")
            elif kind == "move":
                for name in (a[1], a[3]):
                    missing = unmet(name)
                    if missing:
                        problems.append(f"{where}: move {name} without {', '.join(missing)}")
            elif kind == "push_vlan":
                tagged = True
            elif kind == "pop_vlan":
                if not tagged:
                    problems.append(f"{where}: pop_vlan without a VLAN match")
                tagged = False
            elif kind == "dec_ttl" and not is_ip:
                problems.append(f"{where}: dec_ttl without eth_type ip")
            elif kind == "ct":
                if not is_ip:
                    problems.append(f"{where}: ct without eth_type ip")
                if a[1] and invalid:
                    problems.append(f"{where}: ct(commit) of a +inv packet")
        for ins in f.instructions:
            if ins[0] == "goto":
                there = table_number(ins[1])
                if there is None:
                    problems.append(f"{where}: goto unknown table {ins[1]}")
                elif here is not None and there <= here:
                    problems.append(f"{where}: goto {ins[1]} does not go forward")
    return problems
