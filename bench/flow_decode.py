"""The cost of reading a switch's flows back: os-ken parsing a flow-stats
reply and vmflow turning each entry into a Flow (controller/codec.py), per
flow, the work behind an audit, a drift re-read and a restart's first sync.

    .venv/bin/python bench/flow_decode.py [--flows 2000]

Prints microseconds per flow and what that makes for 20,000 flows (a host
with 1,000 ports and a 10-rule security group, bench/vs_ovn.py).
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from os_ken.ofproto import ofproto_v1_3 as ofp  # noqa: E402
from os_ken.ofproto import ofproto_v1_3_parser as parser  # noqa: E402

from controller import codec  # noqa: E402
from controller.flow import apply, flow, output  # noqa: E402


class _Datapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def set_xid(self, msg):
        msg.xid = 1


def wire_entries(flows) -> bytes:
    """The flow-stats entries OVS would send for these flows."""
    dp = _Datapath()
    buf = bytearray()
    for f in flows:
        fm = codec.flow_mod(dp, f, "add")
        entry = bytearray(struct.pack("!HBxIIHHHH4xQQQ", 0, fm.table_id, 1, 0, fm.priority,
                                      0, 0, 0, fm.cookie, 0, 0))
        fm.match.serialize(entry, len(entry))
        for inst in fm.instructions:
            inst.serialize(entry, len(entry))
        struct.pack_into("!H", entry, 0, len(entry))
        buf += entry
    return bytes(buf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=2000)
    n = ap.parse_args().flows
    flows = [flow(1, "l2_lookup", 100, {"metadata": i % 50 + 1,
                                        "eth_dst": f"fa:16:3e:00:{i // 256 % 256:02x}:{i % 256:02x}"},
                  apply(output(i % 60 + 1))) for i in range(n)]
    data = wire_entries(flows)
    t0 = time.perf_counter()
    entries, off = [], 0
    while off < len(data):
        entry = parser.OFPFlowStats.parser(data, off)
        entries.append(entry)
        off += entry.length
    t1 = time.perf_counter()
    decoded = [codec.from_stats(ofp, e) for e in entries]
    t2 = time.perf_counter()
    assert [f.key for f in decoded] == [f.key for f in flows]
    print(f"{n} flows: os-ken parse {1e6 * (t1 - t0) / n:.0f} us/flow, "
          f"codec.from_stats {1e6 * (t2 - t1) / n:.0f} us/flow; "
          f"20,000 flows: {20000 * (t2 - t0) / n:.2f} s")


if __name__ == "__main__":
    main()
