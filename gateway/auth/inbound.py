"""Inbound authentication: turn a legacy request's headers into a Principal.

Today two sources exist, tried in order:

1. ``Authorization: Bearer …`` from the client: an integrator already holding a v2 user token. It is
   forwarded upstream untouched, and v2 decides whether it is good.
2. The configured sidecar credential (``[upstream] bearer_token`` / ``DMGW_UPSTREAM_BEARER``): for a gateway
   that sits next to one legacy application acting as one user.

Anything else (no header, a Basic or OAuth header with no sidecar credential configured) is
``NotAuthenticated``. Verifying OAuth 1.0a signatures and Basic passwords will be further authenticators
with the same ``authenticate(headers) -> Principal`` shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import NotAuthenticated
from gateway.model import Principal


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None. The scheme is case-insensitive."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(ch.isspace() for ch in token):
        return None
    return token


class Authenticator:
    def __init__(self, sidecar_bearer: str | None) -> None:
        self._sidecar = sidecar_bearer

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = bearer_token(headers.get("Authorization"))
        if token is not None:
            return Principal(upstream_authorization=f"Bearer {token}", source="bearer")
        if self._sidecar:
            return Principal(upstream_authorization=f"Bearer {self._sidecar}", source="sidecar")
        raise NotAuthenticated("no bearer token and no sidecar credential configured")
