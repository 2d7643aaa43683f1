"""The pure parts of bench/vs_ovn.py: parsing ping and /proc output, flow
counts, percentiles and the side-by-side table. The benchmark itself (real
OVS, OVN daemons) is not part of the suite."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import vs_ovn  # noqa: E402

PING_D = """PING 10.64.0.10 (10.64.0.10) 56(84) bytes of data.
[1764270000.100000] 64 bytes from 10.64.0.10: icmp_seq=7 ttl=64 time=0.31 ms
[1764270000.110000] 64 bytes from 10.64.0.10: icmp_seq=8 ttl=64 time=0.29 ms
[1764270000.620000] 64 bytes from 10.64.0.10: icmp_seq=59 ttl=64 time=0.30 ms

--- 10.64.0.10 ping statistics ---
59 packets transmitted, 3 received, 94.9152% packet loss, time 590ms
"""


def test_first_reply_time_is_the_first_timestamped_reply():
    assert vs_ovn.first_reply_time(PING_D) == pytest.approx(1764270000.1)


def test_first_reply_time_none_without_a_reply():
    out = "PING 10.64.0.10 (10.64.0.10) 56(84) bytes of data.\n\n" \
          "--- 10.64.0.10 ping statistics ---\n10 packets transmitted, 0 received\n"
    assert vs_ovn.first_reply_time(out) is None


def test_longest_gap_between_replies():
    times = vs_ovn.reply_times(PING_D)
    assert times == pytest.approx([1764270000.1, 1764270000.11, 1764270000.62])
    assert vs_ovn.longest_gap(times) == pytest.approx(0.51)
    assert vs_ovn.longest_gap(times[:1]) is None


def test_cpu_seconds_reads_utime_and_stime_after_the_command_name():
    # the command name may hold spaces and parentheses: fields count from the last ')'
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "150", "0", "0"]
    line = "1234 (ovn (odd) name) " + " ".join(fields)
    assert vs_ovn.cpu_seconds(line, ticks=100) == pytest.approx(4.0)


def test_count_flows_skips_headers():
    dump = ("OFPST_FLOW reply (OF1.3) (xid=0x2):\n"
            " cookie=0x0, duration=1s, table=0, n_packets=0, priority=0 actions=drop\n"
            " cookie=0x1, table=8, priority=100,ip actions=ct(table=9)\n")
    assert vs_ovn.count_flows(dump) == 2


def test_summary_of_latencies():
    values = [float(v) for v in range(1, 101)]
    s = vs_ovn.summary(values)
    assert s["p50"] == 50.0 and s["max"] == 100.0 and 99.0 <= s["p99"] <= 100.0
    assert vs_ovn.summary([]) == {"p50": None, "p99": None, "max": None}


def test_ratio_and_number_formats():
    assert vs_ovn.ratio(10.0, 4.0) == 2.5
    assert vs_ovn.ratio(1.0, 0) is None and vs_ovn.ratio(None, 1.0) is None
    assert vs_ovn.fmt(None) == "-"
    assert vs_ovn.fmt(12532) == "12,532"
    assert vs_ovn.fmt(0.0294) == "0.029"
    assert vs_ovn.fmt(179.30030) == "179.3"


def test_format_table_has_one_row_per_measure_with_the_ratio():
    rows = [("flows / port", 20.0, 40.0), ("pings lost", 0, 97), ("missing", None, 3.0)]
    text = vs_ovn.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["row", "vmflow", "OVN", "ratio"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split()[-3:] == ["20.0", "40.0", "0.500"]
    assert lines[3].split()[-3:] == ["0", "97", "0.000"]
    assert lines[4].split()[-3:] == ["-", "3.0", "-"]


def test_format_table_markdown():
    text = vs_ovn.format_table([("flows / port", 20.0, 40.0)], markdown=True)
    assert text.splitlines() == ["| row | vmflow | OVN | ratio |", "|---|---:|---:|---:|",
                                 "| flows / port | 20.0 | 40.0 | 0.500 |"]


def test_table_rows_cover_every_measure_of_both_sides():
    keys = ["cpu_ctl", "cpu_all", "failures", "fpp_sg10", "fpp_remote", "fpp_none",
            "restart_lost", "restart_gap", "restart_steady", "restart_changes", "dhcp_rate",
            "dhcp_p50", "dhcp_p99", "dhcp_failed", "iperf", "iperf_normal"]
    vm = {k: 1.0 for k in keys} | {"install": vs_ovn.summary([1.0]), "ping": vs_ovn.summary([2.0])}
    ovn = {k: 2.0 for k in keys} | {"install": vs_ovn.summary([4.0]), "ping": vs_ovn.summary([4.0])}
    rows = vs_ovn.table_rows(vm, ovn)
    labels = [r[0] for r in rows]
    assert len(labels) == len(set(labels))
    by = {r[0]: r for r in rows}
    assert by["API -> flows installed p50 (ms)"][1:] == (1.0, 4.0)
    assert by["API -> first ping max (ms)"][1:] == (2.0, 4.0)
    assert by["iperf3 with firewall / NORMAL"][1:] == (1.0, 1.0)
    assert len(rows) == 6 + len(keys) + 1  # latencies, one row per measure, the NORMAL ratio
