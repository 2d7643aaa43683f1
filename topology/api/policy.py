"""Who may do what: vmflow's whole access policy, as one declared table.

The rules follow Neutron's policy defaults (neutron/conf/policies) in name
and meaning, so an operator who knows Neutron can read them:

    "<action>_<member>"          may the caller act on this resource at all
    "<action>_<member>:<attr>"   may the caller set (create/update) or see (get)
                                 this attribute; an attribute without a rule is
                                 free for whoever may act on the resource
    "access_<collection>"        may the caller use the collection at all

A rule is an expression of checks joined by "and", "or", "not" and brackets:

    @                        always
    !                        never
    rule:NAME                another rule of this table
    role:admin               the caller is an admin
    project_id:%(KEY)s       the caller's project is the target's KEY
    field:KEY=VALUE          the target's KEY is VALUE (booleans as True/False)
    field:KEY=~REGEX         the target's KEY matches REGEX from its start

The target is the resource as stored (or as requested, on create); a port's
or subnet's target also answers "network:<attr>" from its network, so
"network_owner" means the owner of the network the resource is on.

Not found and forbidden are different answers, as in Neutron: what a caller
may not see (get_*) is a 404, what they can see but not do is a 403.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Iterable, Mapping, Optional

from topology.api.errors import Forbidden

ADMIN = "rule:admin_only"
OWNER = "rule:admin_or_owner"
NETWORK_OWNER = "rule:admin_or_network_owner"

RULES: dict[str, str] = {
    # -- building blocks -----------------------------------------------------
    "context_is_admin": "role:admin",
    "admin_only": "rule:context_is_admin",
    "owner": "project_id:%(project_id)s",
    "admin_or_owner": "rule:context_is_admin or rule:owner",
    "network_owner": "project_id:%(network:project_id)s",
    "admin_or_network_owner": "rule:context_is_admin or rule:network_owner",
    "shared": "field:network:shared=True",
    "external": "field:network:router:external=True",
    "network_device": "field:device_owner=~^network:",
    "default": OWNER,
    # naming another project as a new resource's owner
    "act_for_project": OWNER,

    # -- networks --------------------------------------------------------------
    "create_network": OWNER,
    "get_network": "rule:admin_or_owner or rule:shared or rule:external",
    "update_network": OWNER,
    "delete_network": OWNER,
    "create_network:shared": ADMIN,
    "update_network:shared": ADMIN,
    "create_network:router:external": ADMIN,
    "update_network:router:external": ADMIN,
    "create_network:provider:network_type": ADMIN,
    "create_network:provider:physical_network": ADMIN,
    "create_network:provider:segmentation_id": ADMIN,
    "update_network:provider:segmentation_id": ADMIN,
    "get_network:provider:network_type": ADMIN,
    "get_network:provider:physical_network": ADMIN,
    "get_network:provider:segmentation_id": ADMIN,

    # -- subnets: only the network's owner adds or changes them ------------------
    "create_subnet": NETWORK_OWNER,
    "get_subnet": "rule:admin_or_owner or rule:shared or rule:external",
    "update_subnet": NETWORK_OWNER,
    "delete_subnet": NETWORK_OWNER,

    # -- ports: a member's port on someone else's shared network gets an address
    # from it and nothing that would let it impersonate or bypass filtering.
    "create_port": "rule:admin_or_network_owner or rule:shared",
    "create_port:device_owner": "not rule:network_device or rule:admin_or_network_owner",
    "create_port:mac_address": NETWORK_OWNER,
    "create_port:fixed_ips:ip_address": NETWORK_OWNER,
    "create_port:fixed_ips:subnet_id": "rule:admin_or_network_owner or rule:shared",
    "create_port:port_security_enabled": NETWORK_OWNER,
    "create_port:allowed_address_pairs": NETWORK_OWNER,
    "create_port:binding:host_id": ADMIN,
    "create_port:binding:profile": ADMIN,
    "get_port": OWNER,
    "get_port:binding:host_id": ADMIN,
    "get_port:binding:profile": ADMIN,
    "get_port:binding:vif_type": ADMIN,
    "get_port:binding:vif_details": ADMIN,
    "update_port": OWNER,
    "update_port:device_owner": "not rule:network_device or rule:admin_or_network_owner",
    "update_port:fixed_ips:ip_address": NETWORK_OWNER,
    "update_port:fixed_ips:subnet_id": "rule:admin_or_network_owner or rule:shared",
    "update_port:port_security_enabled": NETWORK_OWNER,
    "update_port:allowed_address_pairs": NETWORK_OWNER,
    "update_port:binding:host_id": ADMIN,
    "update_port:binding:profile": ADMIN,
    "delete_port": OWNER,

    # -- security groups and rules ---------------------------------------------
    "create_security_group": OWNER,
    "get_security_group": OWNER,
    "update_security_group": OWNER,
    "delete_security_group": OWNER,
    # a project's default group goes only with the project, which an admin decides
    "delete_default_security_group": ADMIN,
    "create_security_group_rule": OWNER,
    "get_security_group_rule": OWNER,
    "update_security_group_rule": OWNER,
    "delete_security_group_rule": OWNER,

    # -- address groups (remote sets for security group rules) -----------------
    "create_address_group": OWNER,
    "get_address_group": OWNER,
    "update_address_group": OWNER,
    "delete_address_group": OWNER,

    # -- QoS policies: an admin writes them (and their rules), as in Neutron;
    # a project sees its own and the shared ones, and may name those on its
    # ports and networks.
    "create_policy": ADMIN,
    "get_policy": "rule:admin_or_owner or field:shared=True",
    "update_policy": ADMIN,
    "delete_policy": ADMIN,

    # -- routers: distributed and not HA is all there is, so neither is settable
    "create_router": OWNER,
    "get_router": OWNER,
    "update_router": OWNER,
    "delete_router": OWNER,
    # the gateway's network is a member's choice; SNAT and the gateway's
    # addresses are the operator's (Neutron's defaults)
    "create_router:external_gateway_info:enable_snat": ADMIN,
    "create_router:external_gateway_info:external_fixed_ips": ADMIN,
    "update_router:external_gateway_info:enable_snat": ADMIN,
    "update_router:external_gateway_info:external_fixed_ips": ADMIN,

    # -- floating IPs: a member takes them from any external network (all are
    # visible, rule:external); which address it gets is the operator's say.
    "create_floatingip": OWNER,
    "create_floatingip:floating_ip_address": ADMIN,
    "get_floatingip": OWNER,
    "update_floatingip": OWNER,
    "delete_floatingip": OWNER,

    # -- hosts (vmflow's own): the operator's inventory ------------------------
    "access_hosts": ADMIN,

    # -- instances (vmflow's own): what the metadata service serves. Only the
    # compute service (an admin) creates them, so no project can take an
    # instance id that another project's VM will carry as its device_id.
    "create_instance": ADMIN,
    "get_instance": OWNER,
    "update_instance": OWNER,
    "delete_instance": OWNER,

    # -- availability zones: every authenticated caller may list them ---------
    "get_availability_zone": "role:member",

    # -- quotas: a project reads its own, an admin sets them ---------------------
    "get_quota": OWNER,
    "update_quota": ADMIN,
    "delete_quota": ADMIN,
}


# -- the rule language ----------------------------------------------------------

# a check may hold "%(key)s", whose brackets are not grouping
_TOKEN = re.compile(r"\s*([^\s()%]*%\([^)]*\)s|\(|\)|[^\s()]+)")


def _tokens(text: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(text)]


Check = Callable[[Any, Mapping], bool]


def _leaf(token: str) -> Check:
    if token == "@":
        return lambda ctx, target: True
    if token == "!":
        return lambda ctx, target: False
    kind, _, arg = token.partition(":")
    if kind == "rule":
        if arg not in RULES:
            raise ValueError(f"policy: unknown rule {arg!r}")
        return lambda ctx, target: _compiled(arg)(ctx, target)
    if kind == "role":
        if arg == "admin":
            return lambda ctx, target: bool(ctx.is_admin)
        return lambda ctx, target: True  # every authenticated caller is a member
    if kind == "project_id":
        m = re.fullmatch(r"%\((.+)\)s", arg)
        if not m:
            raise ValueError(f"policy: {token!r} must name a target key as %(key)s")
        key = m.group(1)
        return lambda ctx, target: ctx.project_id is not None and target.get(key) == ctx.project_id
    if kind == "field":
        key, op, value = re.fullmatch(r"(.+?)(=~|=)(.*)", arg).groups()
        if op == "=~":
            pattern = re.compile(value)
            return lambda ctx, target: bool(pattern.match(_text(target.get(key))))
        return lambda ctx, target: _text(target.get(key)) == value
    raise ValueError(f"policy: cannot read check {token!r}")


def _text(value) -> str:
    return "" if value is None else str(value)


def _parse(tokens: list[str], pos: int = 0) -> tuple[Check, int]:
    """expr := term ("or" term)*; term := factor ("and" factor)*;
    factor := "not" factor | "(" expr ")" | check"""
    def factor(i):
        if i >= len(tokens):
            raise ValueError("policy: a rule ends where a check should be")
        if tokens[i] == "not":
            inner, i = factor(i + 1)
            return (lambda ctx, t: not inner(ctx, t)), i
        if tokens[i] == "(":
            inner, i = expr(i + 1)
            if i >= len(tokens) or tokens[i] != ")":
                raise ValueError("policy: unbalanced brackets")
            return inner, i + 1
        return _leaf(tokens[i]), i + 1

    def term(i):
        parts = []
        part, i = factor(i)
        parts.append(part)
        while i < len(tokens) and tokens[i] == "and":
            part, i = factor(i + 1)
            parts.append(part)
        return (parts[0] if len(parts) == 1 else
                (lambda ctx, t: all(p(ctx, t) for p in parts))), i

    def expr(i):
        parts = []
        part, i = term(i)
        parts.append(part)
        while i < len(tokens) and tokens[i] == "or":
            part, i = term(i + 1)
            parts.append(part)
        return (parts[0] if len(parts) == 1 else
                (lambda ctx, t: any(p(ctx, t) for p in parts))), i

    return expr(pos)


@functools.lru_cache(maxsize=None)
def _compiled(name: str) -> Check:
    tokens = _tokens(RULES[name])
    check, end = _parse(tokens)
    if end != len(tokens):
        raise ValueError(f"policy: rule {name!r} has trailing text {tokens[end:]}")
    return check


def validate() -> None:
    """Compile every rule: a typo in the table fails at start, not on a request."""
    for name in RULES:
        _compiled(name)


# -- asking the table ---------------------------------------------------------------

class Target(dict):
    """A resource as policy sees it; "network:<attr>" keys come from its network,
    read only when a rule asks for them."""

    def __init__(self, doc: Mapping, network: Optional[Callable[[], Optional[Mapping]]] = None):
        super().__init__(doc)
        self._network = network
        self._loaded = False

    def __missing__(self, key):
        if not key.startswith("network:") or self._network is None:
            raise KeyError(key)
        if not self._loaded:
            self._loaded = True
            net = self._network() or {}
            for k, value in net.items():
                self.setdefault(f"network:{k}", value)
        if key in self:
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


def check(ctx, action: str, target: Optional[Mapping] = None) -> bool:
    name = action if action in RULES else "default"
    return _compiled(name)(ctx, target if target is not None else {})


def enforce(ctx, action: str, target: Optional[Mapping] = None) -> None:
    if not check(ctx, action, target):
        raise Forbidden(f"rule:{action} is disallowed by policy")


def has_rule(action: str) -> bool:
    return action in RULES


def given_names(values: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The attribute names a request sets, with "attr:key" for keys inside the
    objects of a list attribute (fixed_ips:ip_address), as Neutron's rules name them."""
    out = []
    for name in names:
        out.append(name)
        value = values.get(name)
        if isinstance(value, list):
            keys = {k for item in value if isinstance(item, dict) for k in item}
            out += [f"{name}:{k}" for k in sorted(keys)]
    return out


def enforce_attributes(ctx, action: str, member: str, target: Mapping,
                       names: Iterable[str]) -> None:
    for name in given_names(target, names):
        rule = f"{action}_{member}:{name}"
        if rule in RULES and not _compiled(rule)(ctx, target):
            raise Forbidden(f"({'rule:' + rule}) is disallowed by policy")


@functools.lru_cache(maxsize=None)
def _get_rules(member: str) -> tuple[tuple[str, str], ...]:
    prefix = f"get_{member}:"
    return tuple((name[len(prefix):], name) for name in RULES if name.startswith(prefix))


def hidden_attributes(ctx, member: str, target: Mapping) -> set[str]:
    """Attributes of this resource the caller may not see."""
    return {attr for attr, rule in _get_rules(member) if not _compiled(rule)(ctx, target)}


validate()
