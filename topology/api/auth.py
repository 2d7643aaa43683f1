"""Who is calling: a request context from the auth strategy.

noauth: every caller is an admin (the API then listens on loopback only).
token: X-Auth-Token must be one of the tokens in api.token_file, a JSON object
{token: {"project_id": ..., "role": "admin" | "member"}}. A missing or unknown
token is a 401, as Keystone's middleware answers in front of Neutron.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Optional

from topology.api import policy
from topology.api.errors import Unauthorized

# Version discovery answers without credentials, as Neutron's does.
PUBLIC_PATHS = frozenset(("/", ""))


@dataclass(frozen=True)
class Context:
    project_id: Optional[str]
    is_admin: bool

    def can_see(self, doc: dict) -> bool:
        return policy.check(self, "admin_or_owner", doc)


def load_tokens(path: str) -> dict[str, Context]:
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"api.token_file {path!r}: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"api.token_file {path!r}: expected an object of token -> entry")
    tokens = {}
    for token, entry in raw.items():
        role = entry.get("role") if isinstance(entry, dict) else None
        project = entry.get("project_id") if isinstance(entry, dict) else None
        if role not in ("admin", "member") or not isinstance(project, str) or not project:
            raise ValueError(f"api.token_file {path!r}: token entries need a project_id "
                             "and a role of admin or member")
        tokens[token] = Context(project, role == "admin")
    return tokens


class AuthMiddleware:
    def __init__(self, strategy: str, default_project: str, tokens: Optional[dict[str, Context]]):
        self.strategy = strategy
        self.noauth = Context(default_project, True)
        self.tokens = tokens or {}

    def _lookup(self, token: str) -> Optional[Context]:
        # compare_digest over every entry: the time taken says nothing about
        # how much of a guess matched.
        found = None
        for known, ctx in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = ctx
        return found

    def process_request(self, req, resp):
        if self.strategy == "noauth":
            req.context.auth = self.noauth
            return
        if req.path.rstrip("/") in PUBLIC_PATHS:
            req.context.auth = None
            return
        token = req.get_header("X-Auth-Token")
        ctx = self._lookup(token) if token else None
        if ctx is None:
            raise Unauthorized("The request you have made requires authentication.")
        req.context.auth = ctx
