"""Actions and instructions as a registry: one spec per kind.

A spec says everything vmflow knows about one kind (the tuple shapes are
documented in controller/flow.py):

    build      the builder apps call (re-exported by controller/flow.py)
    encode     the tuple -> one os-ken OpenFlow 1.3 object
    wire       the os-ken class names a flow-stats reply may hold for it
    decode     such an object -> the tuple; None when it is a shape vmflow never
               sends, so the flow reads back as "unknown" and the diff replaces it
    canonical  the tuple as OVS reports it back after normalising

Adding a kind is one class with @register_action (or @register_instruction);
codec.py dispatches through ACTIONS / INSTRUCTIONS and never names a kind.
"""
from __future__ import annotations

import abc
import ipaddress
from typing import Any, Callable, ClassVar, Iterable, Optional

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3_parser as _parser13

from controller import pipeline
from controller.fields import canonical_value, field_name

NAMED_PORTS = {"controller": 0xFFFFFFFD, "in_port": 0xFFFFFFF8, "local": 0xFFFFFFFE,
               "normal": 0xFFFFFFFA, "flood": 0xFFFFFFFB, "all": 0xFFFFFFFC}
PORT_NAMES = {v: k for k, v in NAMED_PORTS.items()}
OFPCML_NO_BUFFER = 0xFFFF

# Nicira ct / nat flags (OVS include/openvswitch/ofp-actions.h, nx_action_nat).
NX_CT_F_COMMIT = nicira_ext.NX_CT_F_COMMIT
NX_CT_RECIRC_NONE = nicira_ext.NX_CT_RECIRC_NONE
NX_NAT_F_SRC = 1 << 0
NX_NAT_F_DST = 1 << 1
NX_RESUBMIT_IN_PORT = 0xFFF8   # resubmit(,T): keep the packet's in_port
CT_ZONE_BITS = nicira_ext.ofs_nbits(0, 15)
# ct(exec(...)) may only set these (OVS rejects anything else inside ct).
CT_EXEC_FIELDS = frozenset({"ct_mark", "ct_label"})


# -- tables -----------------------------------------------------------------
def table_number(name: str) -> int:
    """A stage's number; "tableN" names a table outside the map (found on a switch)."""
    if name in pipeline.TABLES:
        return pipeline.table_id(name)
    if name.startswith("table") and name[5:].isdigit():
        return int(name[5:])
    raise KeyError(name)


def table_label(number: int) -> str:
    return pipeline.table_name(number) or f"table{number}"


# -- os-ken padding fixes -----------------------------------------------------
# os-ken's NXAction.serialize sets len rounded up to 8 but appends the body
# unpadded. Inside an apply-actions instruction the next action lands at the
# right offset anyway; inside ct() os-ken packs nested actions back to back,
# so a NAT with one address would shift the exec() after it. Padding the
# body here makes each object exactly as long as it says.
def _padded(body: bytearray) -> bytearray:
    body += bytes(-(10 + len(body)) % 8)   # 10: experimenter header + subtype
    return body


class _NAT(_parser13.NXActionNAT):
    def serialize_body(self):
        return _padded(super().serialize_body())


class _RegLoad2(_parser13.NXActionRegLoad2):
    # os-ken pads the OXM to 14 bytes with a negative count for anything
    # longer (a masked MAC, metadata or ct_label); pad it properly instead.
    def serialize_body(self):
        value = self.value if self.mask is None else (self.value, self.mask)
        n, value, mask = _parser13.ofproto.oxm_from_user(self.dst, value)
        data = bytearray()
        _parser13.ofproto.oxm_serialize(n, value, mask, data, 0)
        return _padded(data)


# -- the registry -------------------------------------------------------------
class ActionSpec(abc.ABC):
    kind: ClassVar[str]
    wire: ClassVar[tuple[str, ...]] = ()
    # A method when OVS reports the kind differently from how it may be
    # built; None when the built tuple is already that (kept cheap: the
    # compiler canonicalises every flow it computes).
    canonical: ClassVar[Optional[Callable[[Any, tuple], tuple]]] = None

    @staticmethod
    @abc.abstractmethod
    def build(*args) -> tuple: ...

    @abc.abstractmethod
    def encode(self, parser, ofp, action: tuple): ...

    @abc.abstractmethod
    def decode(self, ofp, obj) -> Optional[tuple]: ...


class InstructionSpec(abc.ABC):
    kind: ClassVar[str]
    order: ClassVar[int]          # OpenFlow execution order, which OVS reports in
    wire: ClassVar[tuple[str, ...]] = ()
    # A method returning the instruction as OVS reports it (None when OVS
    # drops it), or None when the built tuple is already that.
    canonical: ClassVar[Optional[Callable[[Any, tuple], Optional[tuple]]]] = None

    @staticmethod
    @abc.abstractmethod
    def build(*args) -> tuple: ...

    @abc.abstractmethod
    def encode(self, parser, ofp, ins: tuple): ...

    @abc.abstractmethod
    def decode(self, ofp, obj) -> Optional[tuple]: ...



ACTIONS: dict[str, ActionSpec] = {}
INSTRUCTIONS: dict[str, InstructionSpec] = {}
_ACTION_WIRE: dict[str, ActionSpec] = {}
_INSTRUCTION_WIRE: dict[str, InstructionSpec] = {}
_ACTION_CANON: dict[str, Callable[[tuple], tuple]] = {}
_INSTRUCTION_CANON: dict[str, Callable[[tuple], Optional[tuple]]] = {}


def _register(cls, by_kind: dict, by_wire: dict):
    if cls.kind in by_kind:
        raise ValueError(f"kind {cls.kind!r} registered twice")
    spec = cls()
    for w in spec.wire:
        if w in by_wire:
            raise ValueError(f"{w} decoded by both {by_wire[w].kind} and {spec.kind}")
        by_wire[w] = spec
    by_kind[spec.kind] = spec
    return cls


def register_action(cls):
    _register(cls, ACTIONS, _ACTION_WIRE)
    spec = ACTIONS[cls.kind]
    if cls.canonical is not None:
        _ACTION_CANON[cls.kind] = spec.canonical
    return cls


def register_instruction(cls):
    _register(cls, INSTRUCTIONS, _INSTRUCTION_WIRE)
    if cls.canonical is not None:
        _INSTRUCTION_CANON[cls.kind] = INSTRUCTIONS[cls.kind].canonical
    return cls


def unknown(obj) -> tuple:
    """Something vmflow never sends: kept visible, so the diff replaces the flow."""
    return ("unknown", type(obj).__name__, repr(obj))


def _spec(registry: dict, kind: str, what: str):
    try:
        return registry[kind]
    except KeyError:
        raise ValueError(f"unknown {what} kind {kind!r}") from None


def canonical_action(action: tuple) -> tuple:
    kind = action[0]
    fn = _ACTION_CANON.get(kind)
    if fn is not None:
        return fn(action)
    if kind not in ACTIONS and kind != "unknown":
        raise ValueError(f"unknown action kind {kind!r} in {action!r}")
    return action


def encode_action(parser, ofp, action: tuple):
    return _spec(ACTIONS, action[0], "action").encode(parser, ofp, action)


def decode_action(ofp, obj) -> tuple:
    spec = _ACTION_WIRE.get(type(obj).__name__)
    try:
        out = spec.decode(ofp, obj) if spec is not None else None
    except (ValueError, TypeError, KeyError, AttributeError):
        out = None   # whatever a switch reports, reading it must not fail
    return out if out is not None else unknown(obj)


def _instruction_order(ins: tuple) -> int:
    spec = INSTRUCTIONS.get(ins[0])
    return spec.order if spec is not None else 99   # "unknown" last, as decoded


def canonical_instructions(instructions: Iterable[tuple]) -> tuple:
    # Hot: the compiler canonicalises every flow it computes, and apps
    # mostly build instructions in order already, so sort only when not.
    out = []
    last = -1
    ordered = True
    for ins in instructions:
        spec = INSTRUCTIONS.get(ins[0])
        if spec is None:
            if ins[0] != "unknown":
                raise ValueError(f"unknown instruction kind {ins[0]!r} in {ins!r}")
            order = 99
        else:
            fn = _INSTRUCTION_CANON.get(ins[0])
            if fn is not None:
                ins = fn(ins)
                if ins is None:
                    continue
            order = spec.order
        if order < last:
            ordered = False
        last = order
        out.append(ins)
    if not ordered:
        out.sort(key=_instruction_order)
    return tuple(out)


def encode_instruction(parser, ofp, ins: tuple):
    return _spec(INSTRUCTIONS, ins[0], "instruction").encode(parser, ofp, ins)


def decode_instruction(ofp, obj) -> tuple:
    spec = _INSTRUCTION_WIRE.get(type(obj).__name__)
    try:
        out = spec.decode(ofp, obj) if spec is not None else None
    except (ValueError, TypeError, KeyError, AttributeError):
        out = None
    return out if out is not None else unknown(obj)


# -- actions ------------------------------------------------------------------
def _port_number(port) -> int:
    return NAMED_PORTS[port] if isinstance(port, str) else int(port)


@register_action
class Output(ActionSpec):
    """("output", port): port is an int or a name ("controller", "in_port", ...)."""
    kind = "output"
    wire = ("OFPActionOutput",)

    @staticmethod
    def build(port) -> tuple:
        if isinstance(port, str) and port not in NAMED_PORTS:
            raise ValueError(f"output: unknown port name {port!r}")
        return ("output", port)

    def encode(self, parser, ofp, a):
        max_len = OFPCML_NO_BUFFER if a[1] == "controller" else 0
        return parser.OFPActionOutput(_port_number(a[1]), max_len)

    def decode(self, ofp, obj):
        return ("output", PORT_NAMES.get(obj.port, obj.port))

    def canonical(self, a):
        port = a[1]
        if isinstance(port, int) and port in PORT_NAMES:
            return ("output", PORT_NAMES[port])
        return a


@register_action
class SetField(ActionSpec):
    """("set_field", field, value); value may be (value, mask) to set some bits.

    A whole field goes as OpenFlow's set-field; a masked one as Nicira's
    reg_load2, which OVS reports back as it came in. in_port goes under its
    Nicira header (OVS refuses a set-field of OXM in_port, as OpenFlow says;
    the NXM one is allowed), and comes back as "in_port" (fields.NXM_ALIASES).
    """
    kind = "set_field"
    wire = ("OFPActionSetField", "NXActionRegLoad2")

    @staticmethod
    def build(field: str, value) -> tuple:
        return ("set_field", field, value)

    def encode(self, parser, ofp, a):
        field, value = a[1], canonical_value(a[1], a[2])
        if isinstance(value, tuple):
            return _RegLoad2(dst=field, value=value[0], mask=value[1])
        if field == "in_port":
            return parser.OFPActionSetField(in_port_nxm=value)
        return parser.OFPActionSetField(**{field: value})

    def decode(self, ofp, obj):
        if type(obj).__name__ == "NXActionRegLoad2":
            field = field_name(obj.dst)
            value = obj.value if obj.mask is None else (obj.value, obj.mask)
        else:
            field, value = field_name(obj.key), obj.value
        return ("set_field", field, canonical_value(field, value))

    def canonical(self, a):
        return ("set_field", a[1], canonical_value(a[1], a[2]))


@register_action
class PushVlan(ActionSpec):
    """("push_vlan",): an 802.1Q tag (ethertype 0x8100)."""
    kind = "push_vlan"
    wire = ("OFPActionPushVlan",)

    @staticmethod
    def build() -> tuple:
        return ("push_vlan",)

    def encode(self, parser, ofp, a):
        return parser.OFPActionPushVlan(0x8100)

    def decode(self, ofp, obj):
        return ("push_vlan",) if obj.ethertype == 0x8100 else None


@register_action
class PopVlan(ActionSpec):
    kind = "pop_vlan"
    wire = ("OFPActionPopVlan",)

    @staticmethod
    def build() -> tuple:
        return ("pop_vlan",)

    def encode(self, parser, ofp, a):
        return parser.OFPActionPopVlan()

    def decode(self, ofp, obj):
        return ("pop_vlan",)


@register_action
class DecTtl(ActionSpec):
    """("dec_ttl",): OpenFlow's dec_nw_ttl, which OVS prints as dec_ttl."""
    kind = "dec_ttl"
    wire = ("OFPActionDecNwTtl", "NXActionDecTtl")

    @staticmethod
    def build() -> tuple:
        return ("dec_ttl",)

    def encode(self, parser, ofp, a):
        return parser.OFPActionDecNwTtl()

    def decode(self, ofp, obj):
        return ("dec_ttl",)


@register_action
class Resubmit(ActionSpec):
    """("resubmit", "table_name"): Nicira resubmit(,table), then carry on."""
    kind = "resubmit"
    wire = ("NXActionResubmitTable",)

    @staticmethod
    def build(table: str) -> tuple:
        pipeline.table_id(table)   # fail early on a misspelt stage name
        return ("resubmit", table)

    def encode(self, parser, ofp, a):
        return parser.NXActionResubmitTable(in_port=NX_RESUBMIT_IN_PORT,
                                            table_id=table_number(a[1]))

    def decode(self, ofp, obj):
        if obj.in_port != NX_RESUBMIT_IN_PORT:
            return None
        return ("resubmit", table_label(obj.table_id))


@register_action
class Move(ActionSpec):
    """("move", src_field, src_ofs, dst_field, dst_ofs, n_bits): Nicira reg_move."""
    kind = "move"
    wire = ("NXActionRegMove",)

    @staticmethod
    def build(src: str, src_ofs: int, dst: str, dst_ofs: int, n_bits: int) -> tuple:
        if n_bits < 1 or src_ofs < 0 or dst_ofs < 0:
            raise ValueError(f"move: bad bit range {src}[{src_ofs}+{n_bits}] -> {dst}[{dst_ofs}]")
        return ("move", src, src_ofs, dst, dst_ofs, n_bits)

    def encode(self, parser, ofp, a):
        _, src, src_ofs, dst, dst_ofs, n_bits = a
        return parser.NXActionRegMove(src_field=src, dst_field=dst, n_bits=n_bits,
                                      src_ofs=src_ofs, dst_ofs=dst_ofs)

    def decode(self, ofp, obj):
        return ("move", field_name(obj.src_field), obj.src_ofs, field_name(obj.dst_field),
                obj.dst_ofs, obj.n_bits)


@register_action
class Conjunction(ActionSpec):
    """("conjunction", conj_id, clause, n_clauses): clause counts from 1, as
    ovs-ofctl prints it; the wire counts from 0."""
    kind = "conjunction"
    wire = ("NXActionConjunction",)

    @staticmethod
    def build(conj_id: int, clause: int, n_clauses: int) -> tuple:
        if not 2 <= n_clauses <= 64 or not 1 <= clause <= n_clauses:
            raise ValueError(f"conjunction({conj_id},{clause}/{n_clauses}): OVS needs "
                             "2 <= n_clauses <= 64 and 1 <= clause <= n_clauses")
        if not 0 <= conj_id <= 0xFFFFFFFF:
            raise ValueError(f"conjunction id {conj_id} out of 32 bits")
        return ("conjunction", conj_id, clause, n_clauses)

    def encode(self, parser, ofp, a):
        return parser.NXActionConjunction(clause=a[2] - 1, n_clauses=a[3], id_=a[1])

    def decode(self, ofp, obj):
        return ("conjunction", obj.id, obj.clause + 1, obj.n_clauses)


def _ip_text(ip) -> Any:
    """Dotted text, or 0 for "not given"."""
    if not ip:
        return 0
    text = str(ipaddress.IPv4Address(ip))
    return 0 if text == "0.0.0.0" else text


def nat(kind: Optional[str] = None, ip_min=None, ip_max=None, port_min: int = 0,
        port_max: int = 0) -> tuple:
    """The nat argument of ct(): nat() is plain NAT (the reverse of the
    connection's translation); nat("src"|"dst", ip_min[, ip_max, port_min, port_max])
    translates to that range."""
    if kind is None:
        if ip_min or ip_max or port_min or port_max:
            raise ValueError("nat: a range needs kind 'src' or 'dst'")
        return ("nat",)
    if kind not in ("src", "dst"):
        raise ValueError(f"nat kind {kind!r}: 'src' or 'dst'")
    if not ip_min:
        raise ValueError(f"nat({kind}): needs an address")
    if not (0 <= port_min <= 0xFFFF and 0 <= port_max <= 0xFFFF) or \
            (port_max and port_max < port_min):
        raise ValueError(f"nat({kind}): bad port range {port_min}-{port_max}")
    return (kind, _ip_text(ip_min), _ip_text(ip_max), port_min, port_max)


def _canonical_nat(n):
    if n is None or n == ("nat",):
        return n
    return (n[0], _ip_text(n[1]), _ip_text(n[2]), int(n[3]), int(n[4]))


def _encode_nat(parser, n):
    if n == ("nat",):
        return _NAT(flags=0)
    kind, ip_min, ip_max, port_min, port_max = _canonical_nat(n)
    return _NAT(flags=NX_NAT_F_SRC if kind == "src" else NX_NAT_F_DST,
                range_ipv4_min=ip_min or "", range_ipv4_max=ip_max or "",
                range_proto_min=port_min or None, range_proto_max=port_max or None)


def _decode_nat(obj) -> Optional[tuple]:
    if obj.range_ipv6_min or obj.range_ipv6_max:
        return None
    ranged = obj.range_ipv4_min or obj.range_ipv4_max or obj.range_proto_min \
        or obj.range_proto_max
    if obj.flags == 0 and not ranged:
        return ("nat",)
    kind = {NX_NAT_F_SRC: "src", NX_NAT_F_DST: "dst"}.get(obj.flags)
    if kind is None or not obj.range_ipv4_min:
        return None
    return (kind, _ip_text(obj.range_ipv4_min), _ip_text(obj.range_ipv4_max),
            obj.range_proto_min or 0, obj.range_proto_max or 0)


@register_action
class CT(ActionSpec):
    """("ct", commit, zone, table, nat, exec): Nicira ct, see controller/flow.py."""
    kind = "ct"
    wire = ("NXActionCT",)

    @staticmethod
    def build(commit: bool = False, zone: int | str = 0, table: Optional[str] = None,
              nat: Optional[tuple] = None, exec: Iterable[tuple] = ()) -> tuple:
        exec_ = tuple(exec)
        if isinstance(zone, int) and not 0 <= zone <= 0xFFFF:
            raise ValueError(f"ct zone {zone} out of 16 bits")
        if table is not None:
            pipeline.table_id(table)
        for a in exec_:
            if a[0] != "set_field" or a[1] not in CT_EXEC_FIELDS:
                raise ValueError(f"ct exec may only set ct_mark or ct_label, not {a!r}")
        if exec_ and not commit:
            raise ValueError("ct exec needs commit")
        if nat is not None and nat != ("nat",) and not commit:
            raise ValueError("ct nat with a range needs commit")
        return ("ct", bool(commit), zone, table, nat, exec_)

    def encode(self, parser, ofp, a):
        _, commit, zone, table, nat_, exec_ = a
        nested = [] if nat_ is None else [_encode_nat(parser, nat_)]
        nested += [encode_action(parser, ofp, x) for x in exec_]
        if isinstance(zone, str):
            zone_src, zone_val = zone, CT_ZONE_BITS
        else:
            zone_src, zone_val = "", zone
        return parser.NXActionCT(
            flags=NX_CT_F_COMMIT if commit else 0, zone_src=zone_src, zone_ofs_nbits=zone_val,
            recirc_table=NX_CT_RECIRC_NONE if table is None else table_number(table),
            alg=0, actions=nested)

    def decode(self, ofp, obj):
        if obj.flags & ~NX_CT_F_COMMIT or obj.alg:
            return None   # force, or an ALG: nothing vmflow sends
        if obj.zone_src:
            src = field_name(obj.zone_src)
            start, nbits = obj.zone_ofs_nbits >> 6, (obj.zone_ofs_nbits & 0x3F) + 1
            zone = src if (start, nbits) == (0, 16) else f"{src}[{start}..{start + nbits - 1}]"
        else:
            zone = obj.zone_ofs_nbits
        table = None if obj.recirc_table == NX_CT_RECIRC_NONE else table_label(obj.recirc_table)
        nat_, exec_ = None, []
        for i, x in enumerate(obj.actions):
            if type(x).__name__ == "NXActionNAT" and i == 0:
                nat_ = _decode_nat(x)
                if nat_ is None:
                    return None
            else:
                d = decode_action(ofp, x)
                if d[0] != "set_field":
                    return None
                exec_.append(d)
        return ("ct", bool(obj.flags & NX_CT_F_COMMIT), zone, table, nat_, tuple(exec_))

    def canonical(self, a):
        _, commit, zone, table, nat_, exec_ = a
        return ("ct", bool(commit), zone, table, _canonical_nat(nat_),
                tuple(canonical_action(x) for x in exec_))


@register_action
class CTClear(ActionSpec):
    kind = "ct_clear"
    wire = ("NXActionCTClear",)

    @staticmethod
    def build() -> tuple:
        return ("ct_clear",)

    def encode(self, parser, ofp, a):
        return parser.NXActionCTClear()

    def decode(self, ofp, obj):
        return ("ct_clear",)


@register_action
class Group(ActionSpec):
    """("group", group_id). The group itself must exist on the switch: the
    reconciler does not manage groups."""
    kind = "group"
    wire = ("OFPActionGroup",)

    @staticmethod
    def build(group_id: int) -> tuple:
        return ("group", group_id)

    def encode(self, parser, ofp, a):
        return parser.OFPActionGroup(a[1])

    def decode(self, ofp, obj):
        return ("group", obj.group_id)


# -- instructions -------------------------------------------------------------
@register_instruction
class Meter(InstructionSpec):
    kind = "meter"
    order = 0
    wire = ("OFPInstructionMeter",)

    @staticmethod
    def build(meter_id: int) -> tuple:
        return ("meter", meter_id)

    def encode(self, parser, ofp, ins):
        return parser.OFPInstructionMeter(ins[1], ofp.OFPIT_METER)

    def decode(self, ofp, obj):
        return ("meter", obj.meter_id)


@register_instruction
class Apply(InstructionSpec):
    """("apply", action, ...). OVS never reports an empty apply-actions."""
    kind = "apply"
    order = 1
    wire = ("OFPInstructionActions",)

    @staticmethod
    def build(*actions: tuple) -> tuple:
        return ("apply",) + tuple(actions)

    def encode(self, parser, ofp, ins):
        return parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [encode_action(parser, ofp, a) for a in ins[1:]])

    def decode(self, ofp, obj):
        if obj.type != ofp.OFPIT_APPLY_ACTIONS:
            return None   # write-actions or clear-actions: vmflow sends neither
        return ("apply",) + tuple(decode_action(ofp, a) for a in obj.actions)

    def canonical(self, ins):
        if len(ins) == 1:
            return None   # OVS never reports an empty apply-actions
        out = ["apply"]
        for a in ins[1:]:
            fn = _ACTION_CANON.get(a[0])
            if fn is not None:
                a = fn(a)
            elif a[0] not in ACTIONS and a[0] != "unknown":
                raise ValueError(f"unknown action kind {a[0]!r} in {a!r}")
            out.append(a)
        return tuple(out)


@register_instruction
class WriteMetadata(InstructionSpec):
    kind = "write_metadata"
    order = 4
    wire = ("OFPInstructionWriteMetadata",)

    @staticmethod
    def build(value: int, mask: int = 0xFFFFFFFFFFFFFFFF) -> tuple:
        return ("write_metadata", value, mask)

    def encode(self, parser, ofp, ins):
        return parser.OFPInstructionWriteMetadata(ins[1], ins[2])

    def decode(self, ofp, obj):
        return ("write_metadata", obj.metadata, obj.metadata_mask)

    def canonical(self, ins):
        value, mask = int(ins[1]), int(ins[2])
        return ("write_metadata", value & mask, mask)


@register_instruction
class Goto(InstructionSpec):
    kind = "goto"
    order = 5
    wire = ("OFPInstructionGotoTable",)

    @staticmethod
    def build(table: str) -> tuple:
        pipeline.table_id(table)
        return ("goto", table)

    def encode(self, parser, ofp, ins):
        return parser.OFPInstructionGotoTable(table_number(ins[1]))

    def decode(self, ofp, obj):
        return ("goto", table_label(obj.table_id))


# Builders, re-exported by controller/flow.py.
output = Output.build
set_field = SetField.build
push_vlan = PushVlan.build
pop_vlan = PopVlan.build
dec_ttl = DecTtl.build
resubmit = Resubmit.build
move = Move.build
conjunction = Conjunction.build
ct = CT.build
ct_clear = CTClear.build
group = Group.build
meter = Meter.build
apply = Apply.build
write_metadata = WriteMetadata.build
goto = Goto.build
