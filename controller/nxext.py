"""Nicira controller2 actions with a meter, for os-ken's OpenFlow 1.3 parser.

Open vSwitch's `controller(meter_id=N)` is NXAST_CONTROLLER2 with an
NXAC2PT_METER_ID property (OVS >= 2.14). os-ken 4.x knows the action but
not that property: it can neither send it, nor parse a flow-stats reply
holding it (an unknown property makes its parser raise). This module's
class sends it and replaces os-ken's parser for the subtype, keeping every
property it does not know, so a foreign use of controller2 still decodes
and reads as different from ours.

Wire format (OVS include/openflow/nicira-ext.h, lib/ofp-prop.c): after
the experimenter header and the 2-byte subtype, 6 zero bytes, then
properties: type (2), length (2, without padding), value, padded to 8.
"""
from __future__ import annotations

import struct

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.actions import ActionSpec, register_action

NXAC2PT_MAX_LEN = 0
NXAC2PT_CONTROLLER_ID = 1
NXAC2PT_REASON = 2
NXAC2PT_USERDATA = 3
NXAC2PT_PAUSE = 4
NXAC2PT_METER_ID = 5
OFPR_ACTION = 1
_HEADER = 10   # experimenter action header (8) + subtype (2)
NO_BUFFER = 0xFFFF


class NXActionControllerMeter(parser.NXAction):
    """controller(meter_id=N); `props` holds every property of a parsed action."""
    _subtype = nicira_ext.NXAST_CONTROLLER2

    def __init__(self, meter_id=None, props=None, type_=None, len_=None,
                 experimenter=None, subtype=None):
        super().__init__()
        self.props = dict(props or {})
        if meter_id is not None:
            self.props[NXAC2PT_METER_ID] = struct.pack("!I", meter_id)

    @property
    def meter_id(self):
        value = self.props.get(NXAC2PT_METER_ID)
        return struct.unpack("!I", value)[0] if value is not None and len(value) == 4 else None

    def is_plain_metered(self) -> bool:
        """Nothing but a meter (and properties equal to their defaults):
        what to_controller() asks for."""
        for ptype, value in self.props.items():
            if ptype == NXAC2PT_METER_ID and len(value) == 4:
                continue
            if ptype == NXAC2PT_MAX_LEN and value[:2] == struct.pack("!H", NO_BUFFER):
                continue
            if ptype == NXAC2PT_CONTROLLER_ID and value[:2] == b"\0\0":
                continue
            if ptype == NXAC2PT_REASON and value[:1] == bytes([OFPR_ACTION]):
                continue
            return False
        return self.meter_id is not None

    @classmethod
    def parser(cls, buf):
        props: dict[int, bytes] = {}
        offset = 6
        while offset + 4 <= len(buf):
            ptype, length = struct.unpack_from("!HH", buf, offset)
            if length < 4:
                break
            props[ptype] = bytes(buf[offset + 4:offset + length])
            offset += (length + 7) // 8 * 8
        return cls(props=props)

    def serialize_body(self):
        body = bytearray(6)   # the action's 10-byte header + these = 16
        for ptype in sorted(self.props):
            value = self.props[ptype]
            body += struct.pack("!HH", ptype, 4 + len(value)) + value
            body += bytes(-(_HEADER + len(body)) % 8)
        return body


# os-ken's parser for the subtype would raise on the meter property.
parser.NXAction._subtypes[nicira_ext.NXAST_CONTROLLER2] = NXActionControllerMeter


@register_action
class ControllerMeter(ActionSpec):
    """("controller", meter_id): a packet-in through meter meter_id."""
    kind = "controller"
    wire = ("NXActionControllerMeter",)

    @staticmethod
    def build(meter_id: int) -> tuple:
        if not 0 < int(meter_id) <= 0xFFFF0000:   # OFPM_MAX
            raise ValueError(f"controller: bad meter id {meter_id!r}")
        return ("controller", int(meter_id))

    def encode(self, parser_, ofp, a):
        return NXActionControllerMeter(meter_id=a[1])

    def decode(self, ofp, obj):
        # Someone else's controller() (a pause, a max_len, no meter) is not ours.
        return ("controller", obj.meter_id) if obj.is_plain_metered() else None


controller = ControllerMeter.build


# -- check_pkt_larger ----------------------------------------------------------
# OVS's check_pkt_larger(N)->DST[ofs] (NXAST_CHECK_PKT_LARGER, OVS >= 2.12):
# one bit of DST becomes 1 when the packet (its Ethernet frame) is longer
# than N bytes, else 0. os-ken 4.x does not know it. Wire format (OVS
# lib/ofp-actions.c, nx_action_check_pkt_larger): the 10-byte experimenter
# header with subtype 49, pkt_len (2), offset (2), the destination's NXM/OXM
# header (4), zero-padded to 24 bytes.
NXAST_CHECK_PKT_LARGER = 49


class NXActionCheckPktLarger(parser.NXAction):
    _subtype = NXAST_CHECK_PKT_LARGER

    def __init__(self, pkt_len=0, dst=None, ofs=0, type_=None, len_=None,
                 experimenter=None, subtype=None):
        super().__init__()
        self.pkt_len, self.dst, self.ofs = pkt_len, dst, ofs

    @classmethod
    def parser(cls, buf):
        from os_ken.ofproto import ofproto_v1_3 as ofp
        pkt_len, ofs = struct.unpack_from("!HH", buf, 0)
        n, _ = ofp.oxm_parse_header(buf, 4)
        return cls(pkt_len, ofp.oxm_to_user_header(n), ofs)

    def serialize_body(self):
        from os_ken.ofproto import ofproto_v1_3 as ofp
        body = bytearray(struct.pack("!HH", self.pkt_len, self.ofs))
        header = bytearray(4)
        ofp.oxm_serialize_header(ofp.oxm_from_user_header(self.dst), header, 0)
        body += header
        body += bytes(24 - _HEADER - len(body))
        return body


parser.NXAction._subtypes[NXAST_CHECK_PKT_LARGER] = NXActionCheckPktLarger


@register_action
class CheckPktLarger(ActionSpec):
    """("check_pkt_larger", pkt_len, field, bit): bit `bit` of register
    `field` becomes 1 if the frame is longer than pkt_len bytes, else 0."""
    kind = "check_pkt_larger"
    wire = ("NXActionCheckPktLarger",)

    @staticmethod
    def build(pkt_len: int, field: str, bit: int = 0) -> tuple:
        if not 0 < int(pkt_len) <= 0xFFFF or not field.startswith("reg") or not 0 <= bit < 32:
            raise ValueError(f"check_pkt_larger({pkt_len})->{field}[{bit}]: bad argument")
        return ("check_pkt_larger", int(pkt_len), field, int(bit))

    def encode(self, parser_, ofp, a):
        return NXActionCheckPktLarger(a[1], a[2], a[3])

    def decode(self, ofp, obj):
        from controller.fields import field_name
        return ("check_pkt_larger", obj.pkt_len, field_name(obj.dst), obj.ofs)


check_pkt_larger = CheckPktLarger.build
