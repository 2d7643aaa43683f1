"""The metered controller action (controller/nxext.py) survives encoding to
OpenFlow bytes and decoding back unchanged, in the wire format OVS uses."""
from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import actions, codec, nxext


def round_trip(action: tuple) -> tuple:
    (encoded,) = codec.encode_actions(parser, ofp, [action])
    buf = bytearray()
    encoded.serialize(buf, 0)
    assert len(buf) % 8 == 0
    decoded = parser.OFPAction.parser(bytes(buf), 0)
    return actions.decode_action(ofp, decoded)


def test_metered_controller_action_round_trips_in_ovs_wire_format():
    assert round_trip(("controller", 7)) == ("controller", 7)
    (encoded,) = codec.encode_actions(parser, ofp, [("controller", 7)])
    buf = bytearray()
    encoded.serialize(buf, 0)
    # experimenter header, NXAST_CONTROLLER2 (37), 6 zero bytes, then
    # NXAC2PT_METER_ID (5), length 8, the meter id: as OVS encodes it.
    assert struct.unpack("!HHIH6x", bytes(buf[:16])) == (0xFFFF, 24, 0x2320, 37)
    assert bytes(buf[16:24]) == struct.pack("!HHI", 5, 8, 7)


def test_controller2_with_other_properties_reads_as_different():
    """Someone else's controller() (a pause, another max_len) must not pass
    for ours: it decodes as unknown, so the diff replaces it."""
    for props in ({nxext.NXAC2PT_METER_ID: struct.pack("!I", 7), nxext.NXAC2PT_PAUSE: b""},
                  {nxext.NXAC2PT_METER_ID: struct.pack("!I", 7),
                   nxext.NXAC2PT_MAX_LEN: struct.pack("!H", 128)},
                  {nxext.NXAC2PT_MAX_LEN: struct.pack("!H", 0xFFFF)}):
        act = nxext.NXActionControllerMeter(props=props)
        buf = bytearray()
        act.serialize(buf, 0)
        decoded = parser.OFPAction.parser(bytes(buf), 0)
        assert decoded.props == props
        assert actions.decode_action(ofp, decoded)[0] == "unknown"
    # Defaults spelt out are still ours.
    same = nxext.NXActionControllerMeter(props={nxext.NXAC2PT_METER_ID: struct.pack("!I", 3),
                                                nxext.NXAC2PT_MAX_LEN: struct.pack("!H", 0xFFFF)})
    assert actions.decode_action(ofp, same) == ("controller", 3)


def test_nw_ttl_goes_on_the_wire_after_its_prerequisite_eth_type():
    """OVS refuses an NXM field before its prerequisite (OFPBMC_BAD_PREREQ);
    os-ken alone would put nw_ttl (NXM) before eth_type (OXM)."""
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from controller.codec import encode_match
    m = encode_match(parser, (("reg6", 5), ("eth_type", 0x800), ("nw_ttl", 1),
                              ("eth_dst", "fa:16:3e:00:00:01")))
    buf = bytearray()
    m.serialize(buf, 0)
    names = [k for k, _ in parser.OFPMatch.parser(bytes(buf), 0).items()]
    assert names.index("eth_type") < names.index("nw_ttl")
    assert dict(parser.OFPMatch.parser(bytes(buf), 0).items()) == \
        {"reg6": 5, "eth_type": 0x800, "nw_ttl": 1, "eth_dst": "fa:16:3e:00:00:01"}
