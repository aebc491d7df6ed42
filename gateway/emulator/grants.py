"""OAuth 2.0 user grants: access tokens that expire, refresh tokens that rotate, and their clients.

The gateway keeps users' v2 grants alive by refreshing them, which only proves anything if the emulator
is as unforgiving as X: a refresh token works once, a new pair replaces it, and an expired access token
is as good as an unknown one. Like X, the access token a refresh replaced keeps working until its own
expiry; tests that want it dead at once call ``expire``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from yarl import URL

ACCESS_TOKEN_LIFETIME = 7200
DEFAULT_SCOPE = "dm.read dm.write tweet.read users.read offline.access"
OFFLINE_ACCESS = "offline.access"

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

_GRANT_KEYS = ("access_token", "user_id", "client_id")


@dataclass(slots=True)
class AccessGrant:
    """What an access token stands for. ``lineage`` is the first access token of its chain of refreshes.

    X meters user-context requests per user and app, so a refresh must not buy a fresh quota: the rate
    limiter counts against ``lineage``, which every refreshed token inherits.
    """

    user_id: str
    client_id: str
    scope: str
    expires_at: float | None
    lineage: str

    def is_live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh token may be exchanged for: a new pair for the same user, client and scope."""

    user_id: str
    client_id: str
    scope: str
    lineage: str


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """A successful refresh, in the body X's token endpoint answers with."""

    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int = ACCESS_TOKEN_LIFETIME

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "access_token": self.access_token,
            "scope": self.scope,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


class GrantBook:
    """Registered clients (secret or None for a public client, their names and redirect URIs) and every
    live token."""

    clients: dict[str, str | None]
    app_names: dict[str, str]
    redirect_uris: dict[str, list[str]]
    access: dict[str, AccessGrant]
    refresh: dict[str, RefreshGrant]
    refreshes: int

    def __init__(
        self,
        clients: dict[str, str | None],
        app_names: dict[str, str] | None = None,
        redirect_uris: dict[str, list[str]] | None = None,
    ) -> None:
        self.clients = clients
        self.app_names = app_names or {}
        self.redirect_uris = redirect_uris or {}
        self.access = {}
        self.refresh = {}
        self.refreshes = 0

    @classmethod
    def from_seed(cls, section: Any) -> GrantBook:
        """Grants from a seed's ``"oauth2"`` object; ``ValueError`` names what is malformed.

        Shape: ``{"clients": {CLIENT_ID: SECRET or null}, "grants": [{"access_token": A,
        "refresh_token": R or null, "user_id": ID, "client_id": CLIENT_ID, "expires_at": epoch seconds
        or null, "scope": optional, defaults to DEFAULT_SCOPE}], "app_names": {CLIENT_ID: NAME},
        "redirect_uris": {CLIENT_ID: [URI, ...]}}``. A null secret makes a public client, which names
        itself by ``client_id`` alone; null ``expires_at`` never expires. A client without redirect URIs
        cannot take part in the authorization-code flow (see ``redirect_uri_allowed``).
        """
        if not isinstance(section, dict):
            raise ValueError('seed "oauth2" must be an object')
        clients = section.get("clients", {})
        if not isinstance(clients, dict) or not all(isinstance(secret, str | None) for secret in clients.values()):
            raise ValueError('seed "oauth2.clients" must map client ids to a secret or null')
        grants = section.get("grants", [])
        if not isinstance(grants, list) or not all(isinstance(grant, dict) for grant in grants):
            raise ValueError('seed "oauth2.grants" must be a list of objects')
        app_names = section.get("app_names", {})
        if not isinstance(app_names, dict) or not all(isinstance(name, str) for name in app_names.values()):
            raise ValueError('seed "oauth2.app_names" must map client ids to names')
        redirect_uris = section.get("redirect_uris", {})
        if not isinstance(redirect_uris, dict) or not all(
            isinstance(uris, list) and all(isinstance(uri, str) for uri in uris) for uris in redirect_uris.values()
        ):
            raise ValueError('seed "oauth2.redirect_uris" must map client ids to lists of URIs')
        book = cls(dict(clients), dict(app_names), {client: list(uris) for client, uris in redirect_uris.items()})
        for grant in grants:
            book._add_seeded(grant)
        return book

    def _add_seeded(self, grant: dict[str, Any]) -> None:
        label = grant.get("access_token", "?")
        missing = [key for key in _GRANT_KEYS if not isinstance(grant.get(key), str)]
        if missing:
            raise ValueError(f"seed oauth2 grant {label!r} lacks {', '.join(missing)} (strings)")
        access_token, refresh_token = grant["access_token"], grant.get("refresh_token")
        expires_at, scope = grant.get("expires_at"), grant.get("scope", DEFAULT_SCOPE)
        if grant["client_id"] not in self.clients:
            raise ValueError(f"seed oauth2 grant {label!r} names unknown client {grant['client_id']!r}")
        if refresh_token is not None and not isinstance(refresh_token, str):
            raise ValueError(f"seed oauth2 grant {label!r}: refresh_token must be a string or null")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float | None):
            raise ValueError(f"seed oauth2 grant {label!r}: expires_at must be epoch seconds or null")
        if not isinstance(scope, str):
            raise ValueError(f"seed oauth2 grant {label!r}: scope must be a string")
        if access_token in self.access or refresh_token in self.refresh:
            raise ValueError(f"seed oauth2 grant {label!r} repeats a token")
        self.access[access_token] = AccessGrant(
            grant["user_id"], grant["client_id"], scope, expires_at, lineage=access_token
        )
        if refresh_token is not None:
            self.refresh[refresh_token] = RefreshGrant(
                grant["user_id"], grant["client_id"], scope, lineage=access_token
            )

    def live_access(self, token: str, now: float) -> AccessGrant | None:
        """The grant behind an access token that has not expired; None for unknown or expired ones."""
        grant = self.access.get(token)
        return grant if grant is not None and grant.is_live(now) else None

    def expire(self, token: str, now: float) -> None:
        """Make an access token expire at ``now``; ``KeyError`` if it is not an OAuth 2.0 access token."""
        if token not in self.access:
            raise KeyError(f"{token!r} is not an OAuth 2.0 access token (seed tokens never expire)")
        self.access[token].expires_at = now

    def authenticates(self, client_id: str, secret: str | None) -> bool:
        """Whether a client is registered and, if it has a secret, presented exactly that secret."""
        if client_id not in self.clients:
            return False
        expected = self.clients[client_id]
        if expected is None:
            return True
        return secret is not None and hmac.compare_digest(expected.encode(), secret.encode())

    def redirect_uri_allowed(self, client_id: str, redirect_uri: str) -> bool:
        """Whether ``redirect_uri`` is one the client registered, compared as a string, as X does.

        A registered loopback URI (``http://127.0.0.1/...``, ``localhost``, ``[::1]``) matches on any
        port, as RFC 8252 section 7.3 asks, since a local client's port is chosen when it starts.
        """
        registered = self.redirect_uris.get(client_id, [])
        if redirect_uri in registered:
            return True
        try:
            url = URL(redirect_uri)
        except ValueError:
            return False
        if url.scheme != "http" or url.host not in _LOOPBACK or not url.explicit_port or str(url) != redirect_uri:
            return False
        return str(url.with_port(None)) in registered

    def issue(self, user_id: str, client_id: str, scope: str, now: float) -> IssuedTokens:
        """A fresh grant for an approved authorization: an access token, and a refresh token when the
        scope holds ``offline.access``."""
        wants_refresh = OFFLINE_ACCESS in scope.split()
        issued = IssuedTokens(secrets.token_urlsafe(32), secrets.token_urlsafe(32) if wants_refresh else None, scope)
        self.access[issued.access_token] = AccessGrant(
            user_id, client_id, scope, now + issued.expires_in, lineage=issued.access_token
        )
        if issued.refresh_token is not None:
            self.refresh[issued.refresh_token] = RefreshGrant(user_id, client_id, scope, lineage=issued.access_token)
        return issued

    def rotate(self, refresh_token: str, client_id: str, now: float) -> IssuedTokens | None:
        """Trade a refresh token for a new pair, spending it; None if unknown, spent or another client's."""
        grant = self.refresh.get(refresh_token)
        if grant is None or grant.client_id != client_id:
            return None
        del self.refresh[refresh_token]
        access_token, refresh_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        issued = IssuedTokens(access_token, refresh_token, grant.scope)
        self.access[access_token] = AccessGrant(
            grant.user_id, grant.client_id, grant.scope, now + issued.expires_in, grant.lineage
        )
        self.refresh[refresh_token] = grant
        self.refreshes += 1
        return issued
