"""Authorization codes of X's OAuth 2.0 flow, from the user's approval until their exchange or expiry.

A code remembers what was approved (client, redirect URI, scope, user) and the PKCE challenge its
exchange must answer. It is taken out of the book by the first exchange that names it, right or wrong,
so a code works at most once, and it expires after ``AUTHORIZATION_CODE_LIFETIME`` as X's do.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

AUTHORIZATION_CODE_LIFETIME = 30.0
# Codes kept at most; the oldest go first, so a flood of approvals cannot grow memory.
MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """What a user approved, waiting for the client to exchange it at the token endpoint."""

    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    user_id: str
    expires: float


class AuthorizationCodeBook:
    """The codes not yet exchanged, oldest first."""

    def __init__(self) -> None:
        self.pending: dict[str, AuthorizationCode] = {}

    def issue(self, approved: AuthorizationCode) -> str:
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        code = secrets.token_urlsafe(32)
        self.pending[code] = approved
        return code

    def take(self, code: str, now: float) -> AuthorizationCode | None:
        """The code's approval, spending the code; None if it is unknown, spent or expired."""
        approved = self.pending.pop(code, None)
        return approved if approved is not None and now < approved.expires else None
