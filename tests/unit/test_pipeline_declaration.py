"""controller/pipeline.py: every app's flows keep to the declared stages,
and the declaration itself is consistent."""
from __future__ import annotations

import pytest
from l2_fixtures import make_view, plugged_switch

from apps.arp import ArpApp
from apps.dhcp import DhcpApp
from apps.l2 import L2App
from apps.metadata import MetadataApp
from controller import pipeline
from controller.compiler import FlowCompiler, SwitchFlows
from controller.flow import apply, flow, goto, resubmit


def test_every_declared_target_and_miss_is_a_later_stage():
    for stage in pipeline.PIPELINE:
        for target in stage.next + ((stage.miss,) if stage.miss else ()):
            # A stage may resubmit to itself (routing's neighbour step), never back.
            assert target == stage.name or pipeline.table_id(target) > stage.number, \
                (stage.name, target)
        assert stage.miss is None or stage.miss in stage.next
        assert stage.doc and stage.miss_doc


def test_the_shipped_apps_keep_to_the_declaration():
    compiler = FlowCompiler([L2App(), ArpApp(), DhcpApp(), MetadataApp()])
    for dpid in (0xA1, 0xA2):
        view = make_view()
        memo = SwitchFlows()
        compiler.refresh(view, plugged_switch(view, dpid), memo)
        assert memo.desired
    assert compiler.violations == 0 and compiler.conflicts == 0 and compiler.errors == 0


@pytest.mark.parametrize("instructions, why", [
    ((goto("output"),), "may not continue to 'output'"),
    ((apply(resubmit("classify")),), "may not continue to 'classify'"),
])
def test_a_goto_or_resubmit_the_stage_does_not_allow_is_refused(instructions, why):
    problems = pipeline.check("l2", "l2_lookup", 100, instructions)
    assert any(why in p for p in problems), problems


def test_a_writer_outside_its_stage_or_band_is_refused():
    assert "may not write" in pipeline.check("arp", "classify", 100, ())[0]
    assert "outside its band" in pipeline.check("arp", "services", 300, ())[0]
    assert pipeline.check("arp", "services", 100, (goto("egress_firewall"),)) == []


class Rogue(L2App):
    """l2 writing where the declaration does not let it: counted, not silent."""

    def switch_flows(self, view, sw):
        yield from super().switch_flows(view, sw)
        yield flow(self.app_id, "routing", 5, {}, goto("l2_lookup"))


class Twin(ArpApp):
    """Wants a flow l2 also wants: a conflict, counted."""
    name = "arp"

    def switch_flows(self, view, sw):
        yield flow(self.app_id, "services", 10, {"eth_type": 0x0806, "arp_op": 1})


def test_violations_and_two_apps_wanting_one_flow_are_counted(caplog):
    compiler = FlowCompiler([Rogue(), Twin()])
    view = make_view()
    compiler.refresh(view, plugged_switch(view, 0xA1), SwitchFlows())
    assert compiler.violations >= 1 and compiler.conflicts == 1
    assert "may not write routing" in caplog.text and "both want flow" in caplog.text


def test_cookies_name_app_and_resource():
    cookie = pipeline.make_cookie(2, "ports", 77)
    assert pipeline.decode_cookie(cookie) == (2, "ports", 77)
    assert pipeline.decode_cookie(0x1234) is None
    with pytest.raises(ValueError):
        pipeline.make_cookie(300)
