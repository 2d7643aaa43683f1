"""Meters as desired values.

A meter is (id, spec). Packet-in meters are implied by the flows that use
them (their id is the port key, their spec the configured packet-in rate);
every other meter is wanted explicitly by an app, next to its flows, as a
Meter value in what its `<kind>_flows` returns. The compiler keeps both per
scope and the reconciler diffs the specs, so changing a policy's rate is a
meter-mod modify that touches no flow. Ids come from pipeline.METER_RANGES.
"""
from __future__ import annotations

from dataclasses import dataclass

from controller import pipeline

KBPS = "kbps"
PKTPS = "pktps"


@dataclass(frozen=True)
class MeterSpec:
    """One drop band: `rate` and `burst` in packets per second (pktps) or
    kilobits per second (kbps)."""
    rate: int
    burst: int
    unit: str = PKTPS


@dataclass(frozen=True)
class Meter:
    """A meter an app wants on the switch, whether or not a flow uses it yet."""
    meter_id: int
    spec: MeterSpec


EGRESS, INGRESS = 0, 1


def qos_meter_id(port_key: int, direction: int) -> int:
    """The QoS meter of a port's traffic in one direction (EGRESS: from the VM,
    INGRESS: toward it). Port keys stay below 2**16, so every id is inside
    the qos range and stable for the port's life."""
    low, high = pipeline.METER_RANGES["qos"]
    mid = low + port_key * 2 + direction
    if not low <= mid <= high:
        raise ValueError(f"port key {port_key} has no QoS meter id")
    return mid
