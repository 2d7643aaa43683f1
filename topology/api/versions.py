"""Keystone-style version discovery, so clients find /v2.0 by themselves."""
from __future__ import annotations

import falcon

from topology.api.http import respond

EXTENSIONS = [
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("security-group", "security-group", "The security groups extension."),
    ("port-security", "Port Security", "Provides port security"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("address-group", "Address group", "Support address group"),
    ("security-groups-remote-address-group", "Remote address group id field for security group rules", "Add new field of remote address group id in security group rules"),
    ("security-groups-normalized-cidr", "normalized_cidr field for security group rules", "Add new field with normalized remote_ip_prefix cidr in SG rule"),
    ("security-groups-rules-belongs-to-default-sg", "Security group rule belongs to the project's default security group", "Flag to determine if the security group rule belongs to the project's default security group"),
    ("vmflow-security-group-rules", "vmflow security group rules", "Rules with action allow|deny, priority 1-100, port lists (ports) and OneCloud's compact form (rule)."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: network, subnet, port, security_group, floatingip", "Enables to set tag on resources with standard attribute."),
    ("tag-creation", "Tag support for resources during creation", "Enables to set tags on resources during creation."),
    ("revision-if-match", "If-Match constraints based on revision_number", "Extension indicating that If-Match based on revision_number is supported."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter parameters."),
    ("ip-substring-filtering", "IP address substring filtering", "Provides IP address substring filtering when listing ports"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project"),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group is stateful or not"),
    ("qos", "Quality of Service", "The Quality of Service extension."),
    ("qos-bw-limit-direction", "Direction for QoS bandwidth limit rule", "Allow to configure QoS bandwidth limit rule with specific direction: ingress or egress"),
    ("qos-pps", "QoS packet rate limit rule", "Adds support for packet rate limit rules"),
    ("qos-rule-type-details", "Details of QoS rule types", "Expose details about QoS rule types supported by loaded backend drivers"),
    ("qos-default", "QoS default policy", "Expose the QoS default policy per project"),
    ("router", "Neutron L3 Router", "Router abstraction for layer 3 forwarding between layer 2 Neutron networks and access to external networks."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource"),
    ("floating-ip-port-forwarding", "Floating IP Port Forwarding", "Expose port forwarding of floating IP"),
    ("floating-ip-port-forwarding-port-ranges", "Floating IP Port Forwarding support port ranges", "Allow port ranges for floating IP port forwardings"),
    ("floating-ip-port-forwarding-description", "Floating IP Port Forwarding Description", "Add description field to port forwarding of floating IP"),
    ("expose-port-forwarding-in-fip", "Expose port forwardings in floating IP", "Expose the port forwarding of floating IP in floating IP resources"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("dvr", "Distributed Virtual Router", "Enables configuration of Distributed Virtual Routers."),
    ("vmflow-hosts", "vmflow hosts", "Compute hosts: datapath id, uplinks per physical network, DVR MAC."),
    ("vmflow-instances", "vmflow instances", "Instance metadata served to VMs at 169.254.169.254."),
]


def _extension(alias, name, description):
    return {"alias": alias, "name": name, "description": description,
            "updated": "2026-11-22T00:00:00-00:00", "links": []}


class Root:
    def on_get(self, req, resp):
        respond(resp, falcon.HTTP_200, {"versions": [{
            "id": "v2.0", "status": "CURRENT",
            "links": [{"href": f"{req.prefix}/v2.0/", "rel": "self"}]}]})


class V2:
    def __init__(self, collections: list[tuple[str, str]]):
        self.collections = collections  # (url path, member name)

    def on_get(self, req, resp):
        respond(resp, falcon.HTTP_200, {"resources": [
            {"name": member, "collection": path,
             "links": [{"href": f"{req.prefix}/v2.0/{path}", "rel": "self"}]}
            for path, member in self.collections]})


class Extensions:
    def on_get(self, req, resp):
        respond(resp, falcon.HTTP_200, {"extensions": [_extension(*e) for e in EXTENSIONS]})

    def on_get_item(self, req, resp, alias):
        for e in EXTENSIONS:
            if e[0] == alias:
                respond(resp, falcon.HTTP_200, {"extension": _extension(*e)})
                return
        raise falcon.HTTPNotFound(description=f"Extension with alias {alias} does not exist")
