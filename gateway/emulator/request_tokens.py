"""Request tokens of X's OAuth 1.0a sign-in, from their issue until they are exchanged or expire."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

REQUEST_TOKEN_LIFETIME = 900.0
# Pending request tokens kept at most; the oldest go first, so a flood of requests cannot grow memory.
MAX_PENDING = 10_000


@dataclass(slots=True)
class PendingLogin:
    """A request token between its issue and its exchange for an access token."""

    secret: str = field(repr=False)
    consumer: str
    callback: str
    expires: float
    user_id: str | None = None
    verifier: str | None = field(default=None, repr=False)


class RequestTokenBook:
    """The request tokens still pending, oldest first."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingLogin] = {}

    def issue(self, consumer: str, callback: str, now: float) -> tuple[str, PendingLogin]:
        self._forget_expired(now)
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        token = secrets.token_urlsafe(24)
        login = PendingLogin(secrets.token_urlsafe(32), consumer, callback, now + REQUEST_TOKEN_LIFETIME)
        self.pending[token] = login
        return token, login

    def live(self, token: str, now: float) -> PendingLogin | None:
        login = self.pending.get(token)
        return login if login is not None and now < login.expires else None

    def spend(self, token: str) -> None:
        self.pending.pop(token, None)

    def _forget_expired(self, now: float) -> None:
        for token in [token for token, login in self.pending.items() if now >= login.expires]:
            del self.pending[token]
