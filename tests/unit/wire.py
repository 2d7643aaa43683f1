"""A flow through os-ken's wire format and back, as the switch would report it."""
from types import SimpleNamespace

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import codec
from controller.flow import Flow

DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)


def wire_round_trip(f: Flow) -> Flow:
    """Encode as a flow-mod, serialise, parse back, decode as a flow-stats entry."""
    mod = codec.flow_mod(DP, codec.canonical(f), "add")
    mod.datapath = DP
    mod.serialize()
    buf = bytes(mod.buf)
    assert len(buf) == int.from_bytes(buf[2:4], "big")
    # Flow-mod layout: header(8) cookie..flags(40) then match, then instructions.
    match = parser.OFPMatch.parser(buf, ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE)
    offset = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE + match.length + (-match.length % 8)
    instructions = []
    while offset < len(buf):
        ins = parser.OFPInstruction.parser(buf, offset)
        instructions.append(ins)
        offset += ins.len
    assert offset == len(buf)
    stat = SimpleNamespace(table_id=mod.table_id, priority=mod.priority, match=match,
                           instructions=instructions, cookie=mod.cookie)
    return codec.from_stats(ofp, stat)
