"""QoS: per-port bandwidth and packet-rate limits with meters, and DSCP marking.

Implements the qos paragraphs of controller/pipeline.py's classify,
pre_output, egress_meter and ingress_meter stages. A port's policy is its
own `qos_policy_id`, else its network's (a port's policy beats its
network's); the network's does not apply to the ports Neutron's own
services own (device_owner "network:...").

A policy's rules live in its document (`rules`, as Neutron shows them):
- bandwidth_limit: max_kbps, max_burst_kbps, direction -> a kbps meter;
- packet_rate_limit: max_kpps, max_burst_kpps, direction -> a pktps meter;
- dscp_marking: dscp_mark -> set_field ip_dscp on the VM's egress IPv4.

Egress is from the VM, metered at classification; ingress is toward it,
metered in pre_output. Both pass their meter by a resubmit into a metered
stage (egress_meter, ingress_meter), so that a flow-preserving OVS restart,
which restores no meters, still brings every other flow back. A port has
one meter per direction, as with Neutron's OVS agent: when a policy has both
a bandwidth and a packet-rate rule for one direction, the bandwidth rule is
the one enforced.

Meter ids derive from the port key (controller/meters.py qos_meter_id), and
the meters are wanted as values next to the flows: changing a policy's rate
changes only the meters' specs, so the reconciler sends meter-mods and no
flow-mod.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

from controller import scopes
from controller.app import App, SwitchView
from controller.flow import Flow, apply, flow, goto, meter, resubmit, set_field, write_metadata
from controller.locality import local_ofport
from controller.meters import EGRESS, INGRESS, KBPS, PKTPS, Meter, MeterSpec, qos_meter_id
from controller.pipeline import REG_IN_PORT_KEY, REG_OUT_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

ETH_IP = 0x0800
PRIO_CLASSIFY = 110
PRIO_CLASSIFY_DSCP = 111
PRIO_INGRESS = 200
PRIO_METER = 100
# Neutron's OVS agent: a burst of 0 means 80 % of the rate.
DEFAULT_BURST = 0.8
DIRECTIONS = {"egress": EGRESS, "ingress": INGRESS}


def policy_of(view: TopologyView, port: Document) -> Optional[Document]:
    """The QoS policy that applies to a port: its own, else its network's."""
    policies = view.docs.get("qos_policies", {})
    pid = port.get("qos_policy_id")
    if not pid and not str(port.get("device_owner") or "").startswith("network:"):
        pid = (view.networks.get(port["network_id"]) or {}).get("qos_policy_id")
    return policies.get(pid) if pid else None


def _burst(burst, rate: int) -> int:
    return int(burst) if burst else max(1, int(rate * DEFAULT_BURST))


def meter_specs(policy: Document) -> dict[int, MeterSpec]:
    """Direction (EGRESS/INGRESS) -> the meter spec the policy asks for."""
    bandwidth: dict[int, MeterSpec] = {}
    packets: dict[int, MeterSpec] = {}
    for rule in policy.get("rules") or ():
        direction = DIRECTIONS.get(rule.get("direction", "egress"))
        if direction is None:
            continue
        if rule.get("type") == "bandwidth_limit":
            rate = int(rule["max_kbps"])
            bandwidth[direction] = MeterSpec(rate, _burst(rule.get("max_burst_kbps"), rate), KBPS)
        elif rule.get("type") == "packet_rate_limit":
            rate = int(rule["max_kpps"]) * 1000
            burst = int(rule.get("max_burst_kpps") or 0) * 1000
            packets[direction] = MeterSpec(rate, _burst(burst, rate), PKTPS)
    return {**packets, **bandwidth}


def dscp_mark(policy: Document) -> Optional[int]:
    for rule in policy.get("rules") or ():
        if rule.get("type") == "dscp_marking":
            return int(rule["dscp_mark"])
    return None


class QosApp(App):
    name = "qos"

    def __init__(self, conf=None):
        self.conf = conf

    def port_flows(self, view: TopologyView, sw: SwitchView,
                   port: Document) -> Iterable[Union[Flow, Meter]]:
        ofport = local_ofport(view, sw, port)
        if ofport is None:
            return
        policy = policy_of(view, port)
        if policy is None:
            return
        a = self.app_id
        pkey, nkey = port["_key"], view.networks[port["network_id"]]["_key"]
        owner = ("ports", pkey)
        specs = meter_specs(policy)
        mark = dscp_mark(policy)
        # The meters are passed by resubmit into tables of their own
        # (pipeline egress_meter, ingress_meter), never by a meter instruction
        # here: see those stages' paragraphs, on OVS restarts.
        egress = ()
        if EGRESS in specs:
            mid = qos_meter_id(pkey, EGRESS)
            yield Meter(mid, specs[EGRESS])
            yield flow(a, "egress_meter", PRIO_METER, {REG_IN_PORT_KEY: pkey}, meter(mid),
                       owner=owner)
            egress = (resubmit("egress_meter"),)
            # Classification as l2's priority-100 flow does it, through the meter.
            yield flow(a, "classify", PRIO_CLASSIFY, {"in_port": ofport},
                       apply(set_field(REG_IN_PORT_KEY, pkey), *egress), write_metadata(nkey),
                       goto("port_security"), owner=owner)
        if mark is not None:
            yield flow(a, "classify", PRIO_CLASSIFY_DSCP, {"in_port": ofport, "eth_type": ETH_IP},
                       apply(set_field(REG_IN_PORT_KEY, pkey), set_field("ip_dscp", mark),
                             *egress),
                       write_metadata(nkey), goto("port_security"), owner=owner)
        if INGRESS in specs:
            mid = qos_meter_id(pkey, INGRESS)
            yield Meter(mid, specs[INGRESS])
            yield flow(a, "ingress_meter", PRIO_METER, {REG_OUT_PORT_KEY: pkey}, meter(mid),
                       owner=owner)
            yield flow(a, "pre_output", PRIO_INGRESS, {REG_OUT_PORT_KEY: pkey},
                       apply(resubmit("ingress_meter")), goto("output"), owner=owner)


@scopes.KINDS["port"].watch("qos_policies")
def _ports_of_policy(view: TopologyView, old, new):
    # A policy applies to the ports naming it and to its networks' ports.
    ids = {d["id"] for d in (old, new) if d}
    nets = {n["id"] for n in view.networks.values() if n.get("qos_policy_id") in ids}
    return [p["id"] for p in view.ports.values()
            if p.get("qos_policy_id") in ids or p["network_id"] in nets]
