"""The falcon application: routes, auth and error shapes, wired to a store."""
from __future__ import annotations

import falcon
from oslo_config import cfg

from topology.api import errors, policy, versions
from topology.api import metrics as api_metrics
from topology.api.availability_zones import AvailabilityZones
from topology.api.auth import AuthMiddleware, load_tokens
from topology.api.collection import Resource
from topology.api.kinds.address_groups import AddressGroupActions, AddressGroups
from topology.api.kinds.base import Settings
from topology.api.kinds.hosts import Hosts
from topology.api.kinds.floatingips import FloatingIps, PortForwardings
from topology.api.kinds.instances import Instances
from topology.api.kinds.networks import Networks
from topology.api.kinds.ports import Ports
from topology.api.kinds.qos import RULE_TYPES, QosPolicies, QosRules, RuleTypes
from topology.api.kinds.routers import RouterInterfaces, Routers
from topology.api.kinds.security_groups import SecurityGroupRules, SecurityGroups
from topology.api.kinds.subnets import Subnets
from topology.api.quotas import Quotas, defaults_from_conf
from topology.api.tags import TAGGABLE, Tags
from topology.store.base import Store

def parse_vlan_ranges(entries: list[str]) -> dict[str, list[tuple[int, int]]]:
    """physnet:low:high entries, as Neutron's network_vlan_ranges."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for entry in entries:
        parts = entry.strip().split(":")
        if len(parts) != 3 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
            raise ValueError(f"api.network_vlan_ranges: {entry!r} is not physnet:low:high")
        low, high = int(parts[1]), int(parts[2])
        if not 1 <= low <= high <= 4094:
            raise ValueError(f"api.network_vlan_ranges: {entry!r} is not within 1-4094")
        ranges.setdefault(parts[0], []).append((low, high))
    return ranges


def settings_from_conf(conf: cfg.ConfigOpts) -> Settings:
    api = conf.api
    return Settings(base_mac=api.base_mac, dvr_base_mac=api.dvr_base_mac,
                    external_base_mac=api.external_base_mac,
                    default_mtu=api.default_mtu, default_project=api.default_project,
                    vlan_ranges=parse_vlan_ranges(api.network_vlan_ranges))


def create_app(conf: cfg.ConfigOpts, store: Store) -> falcon.App:
    tokens = load_tokens(conf.api.token_file) if conf.api.auth_strategy == "token" else None
    middleware = [AuthMiddleware(conf.api.auth_strategy, conf.api.default_project, tokens)]
    if api_metrics.enabled():
        middleware.insert(0, api_metrics.MetricsMiddleware())
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    errors.install(app)

    policy.validate()
    settings = settings_from_conf(conf)
    quota_defaults = defaults_from_conf(conf)
    networks = Networks(settings)
    ports = Ports(settings)
    kinds = [networks, Subnets(settings, ports, networks), ports, SecurityGroups(settings),
             SecurityGroupRules(settings), AddressGroups(settings), Hosts(settings),
             Instances(settings), QosPolicies(settings), Routers(settings, ports),
             FloatingIps(settings)]

    app.add_route("/", versions.Root())
    collections = []
    for kind in kinds:
        path = "qos/policies" if isinstance(kind, QosPolicies) else kind.collection.replace("_", "-")
        resource = Resource(kind, store, kind.shown,
                            quota_defaults)
        app.add_route(f"/v2.0/{path}", resource)
        app.add_route(f"/v2.0/{path}/{{id}}", resource, suffix="item")
        if kind.collection in TAGGABLE:
            tags = Tags(kind, store)
            app.add_route(f"/v2.0/{path}/{{id}}/tags", tags)
            app.add_route(f"/v2.0/{path}/{{id}}/tags/{{name}}", tags, suffix="one")
        collections.append((path, kind.member))
        if isinstance(kind, AddressGroups):
            actions = AddressGroupActions(kind, store)
            app.add_route(f"/v2.0/{path}/{{id}}/add_addresses", actions, suffix="add")
            app.add_route(f"/v2.0/{path}/{{id}}/remove_addresses", actions, suffix="remove")
        if isinstance(kind, QosPolicies):
            for rule_type, (rules_path, _attrs) in RULE_TYPES.items():
                rules = QosRules(kind, store, rule_type)
                app.add_route(f"/v2.0/{path}/{{id}}/{rules_path}", rules)
                app.add_route(f"/v2.0/{path}/{{id}}/{rules_path}/{{rule_id}}", rules,
                              suffix="item")
        if isinstance(kind, FloatingIps):
            forwardings = PortForwardings(kind, store)
            app.add_route(f"/v2.0/{path}/{{id}}/port_forwardings", forwardings)
            app.add_route(f"/v2.0/{path}/{{id}}/port_forwardings/{{pf_id}}", forwardings,
                          suffix="item")
        if isinstance(kind, Routers):
            actions = RouterInterfaces(kind, ports, store)
            app.add_route(f"/v2.0/{path}/{{id}}/add_router_interface", actions, suffix="add")
            app.add_route(f"/v2.0/{path}/{{id}}/remove_router_interface", actions,
                          suffix="remove")
    quotas = Quotas(store, quota_defaults)
    app.add_route("/v2.0/quotas", quotas)
    app.add_route("/v2.0/quotas/{project_id}", quotas, suffix="item")
    app.add_route("/v2.0/quotas/{project_id}/default", quotas, suffix="default")
    app.add_route("/v2.0/quotas/{project_id}/details", quotas, suffix="details")
    collections.append(("quotas", "quota"))
    rule_types = RuleTypes()
    app.add_route("/v2.0/qos/rule-types", rule_types)
    app.add_route("/v2.0/qos/rule-types/{rule_type}", rule_types, suffix="item")
    collections.append(("qos/rule-types", "rule_type"))
    app.add_route("/v2.0/availability_zones", AvailabilityZones(store))
    collections.append(("availability_zones", "availability_zone"))
    app.add_route("/v2.0", versions.V2(collections))
    extensions = versions.Extensions()
    app.add_route("/v2.0/extensions", extensions)
    app.add_route("/v2.0/extensions/{alias}", extensions, suffix="item")
    return app
