"""IMDSv2 session tokens, stateless.

A token is "<expiry>.<mac>" where mac = HMAC-SHA256(secret, port id | expiry),
so checking one needs no table (state stays bounded whatever a VM asks for)
and a token is good only for the VM port it was issued to. The secret is
the one in [metadata] token_secret, or else one kept in the store
(topology.store.base.ensure_secret), so every controller checks every
token the same way: tokens survive a restart and a failover. Expiry is
wall-clock time for the same reason.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Optional

MIN_TTL = 1
MAX_TTL = 21600                 # six hours, as EC2
MAX_TOKEN_LEN = 128


class TokenIssuer:
    def __init__(self, secret: Optional[bytes] = None):
        self.secret = secret if secret is not None else os.urandom(32)

    def _mac(self, port_id: str, expiry: int) -> str:
        digest = hmac.new(self.secret, f"{port_id}|{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, port_id: str, ttl: int, now: float) -> str:
        expiry = int(now) + ttl
        return f"{expiry}.{self._mac(port_id, expiry)}"

    def valid(self, token: str, port_id: str, now: float) -> bool:
        if len(token) > MAX_TOKEN_LEN:
            return False
        expiry_text, dot, mac = token.partition(".")
        if not dot or not expiry_text.isdigit() or len(expiry_text) > 12:
            return False
        expiry = int(expiry_text)
        if expiry <= now:
            return False
        return hmac.compare_digest(mac, self._mac(port_id, expiry))


def parse_ttl(value: Optional[str]) -> Optional[int]:
    """The TTL header's value in seconds, or None when missing or out of range."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 6:
        return None
    ttl = int(value)
    return ttl if MIN_TTL <= ttl <= MAX_TTL else None
