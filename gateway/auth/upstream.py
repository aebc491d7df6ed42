"""Credentials presented to X API v2 on a caller's behalf (each an ``UpstreamCredential``, the protocol in
``gateway.model``).

Each credential makes the ``Authorization`` header for one upstream request, and may renew itself once
after v2 refused it:

- ``BearerCredential``: a fixed v2 token (a client's own, or the sidecar's).
- ``OAuth1Credential``: the consumer and token the legacy client itself used, re-signed for the v2 method
  and URL (v2's DM endpoints accept OAuth 1.0a user context) with authlib's RFC 5849 primitives.
- ``OAuth2Credential``: a stored, refreshable v2 user grant, renewed through ``GrantRefresher``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import deque
from dataclasses import replace

import aiohttp
from authlib.common.urls import url_decode
from authlib.oauth1.rfc5849.signature import hmac_sha1_signature, normalize_base_string_uri, normalize_parameters
from authlib.oauth1.rfc5849.util import escape

from gateway.auth.credentials import CredentialStore, OAuth2Grant
from gateway.errors import InvalidToken, UpstreamUnavailable

log = logging.getLogger("gateway.auth")

#: Refresh this many seconds before a grant's expiry rather than meet a 401.
EXPIRY_MARGIN = 60.0


class BearerCredential:
    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerCredential(***)"

    async def authorization(self, method: str, url: str) -> str:
        return f"Bearer {self._token}"

    async def renew(self, rejected: str) -> bool:
        return False


class OAuth1Credential:
    """Signs each request as the consumer and token (HMAC-SHA1, in the ``Authorization`` header, the body
    not signed: v2 takes JSON bodies). What never changes for the credential, its escaped key and token,
    is written once; a request costs its base string, one HMAC and one line of header."""

    __slots__ = ("_consumer_secret", "_fixed", "_header", "_token_secret", "consumer_key", "token")

    def __init__(self, consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> None:
        self.consumer_key = consumer_key
        self.token = token
        self._consumer_secret = consumer_secret
        self._token_secret = token_secret
        self._fixed = [
            ("oauth_consumer_key", consumer_key),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_token", token),
            ("oauth_version", "1.0"),
        ]
        self._header = ", ".join(f'{k}="{escape(v)}"' for k, v in self._fixed)

    def __repr__(self) -> str:
        return f"OAuth1Credential({self.consumer_key!r}, token={self.token!r}, secrets=***)"

    async def authorization(self, method: str, url: str) -> str:
        return self.sign(method, url, secrets.token_hex(16), str(int(time.time())))

    def sign(self, method: str, url: str, nonce: str, timestamp: str) -> str:
        """The header for ``method url`` with this nonce and timestamp (a nonce of letters and digits)."""
        uri, _, query = url.partition("?")
        oauth = [*self._fixed, ("oauth_nonce", nonce), ("oauth_timestamp", timestamp)]
        params = url_decode(query) + oauth
        signature = hmac_sha1_signature(base_string(method, uri, params), self._consumer_secret, self._token_secret)
        return (
            f'OAuth {self._header}, oauth_nonce="{nonce}", oauth_timestamp="{timestamp}", '
            f'oauth_signature="{escape(signature)}"'
        )

    async def renew(self, rejected: str) -> bool:
        return False


def base_string(method: str, uri: str, params: list[tuple[str, str]]) -> str:
    """The signature base string (RFC 5849 section 3.4.1) of a request to ``uri`` (without its query) that
    carries ``params``, each decoded exactly once; ``oauth_signature`` among them is left out."""
    pairs = normalize_parameters([(k, v) for k, v in params if k != "oauth_signature"])
    return "&".join((escape(method.upper()), escape(normalize_base_string_uri(uri)), escape(pairs)))


class GrantRefresher:
    """Keeps users' v2 OAuth 2.0 grants fresh: at most one refresh per user at a time, however many requests
    wait on it, and every new grant persisted before it is used."""

    def __init__(
        self,
        store: CredentialStore,
        session: aiohttp.ClientSession,
        token_url: str,
        client_id: str | None,
        client_secret: str | None = None,
    ) -> None:
        self._store = store
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._grants: dict[str, OAuth2Grant] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Access tokens this process refreshed away from, per user: a store read that raced a refresh
        # may still return one of them, and it must not undo the refresh.
        self._superseded: dict[str, deque[str]] = {}

    def remember(self, username: str, grant: OAuth2Grant) -> OAuth2Grant:
        """Adopt the grant the store holds for ``username`` (an operator may have replaced it), unless it is
        one this process has already refreshed away from."""
        if grant.access_token not in self._superseded.get(username, ()):
            self._grants[username] = grant
        return self._grants.setdefault(username, grant)

    async def current(self, username: str) -> OAuth2Grant:
        grant = self._grants[username]
        if grant.expires_at is not None and grant.refresh_token and grant.expires_at - EXPIRY_MARGIN <= time.time():
            grant = await self.refresh(username, grant.access_token)
        return grant

    async def refresh(self, username: str, stale_access_token: str) -> OAuth2Grant:
        lock = self._locks.setdefault(username, asyncio.Lock())
        async with lock:
            grant = self._grants[username]
            if grant.access_token != stale_access_token:
                return grant  # another request refreshed it while this one waited
            if not grant.refresh_token or not self._client_id:
                raise InvalidToken(f"grant of {username} expired and cannot be refreshed")
            new = replace(await self._request_refresh(grant.refresh_token), user_id=grant.user_id)
            await self._store.put_grant(username, new)
            self._superseded.setdefault(username, deque(maxlen=16)).append(grant.access_token)
            self._grants[username] = new
            log.info("refreshed the v2 grant of %s", username)
            return new

    async def _request_refresh(self, refresh_token: str) -> OAuth2Grant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self._client_id or ""}
        headers = {}
        if self._client_secret:  # a confidential client authenticates itself with HTTP Basic
            pair = f"{self._client_id}:{self._client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            async with self._session.post(self._token_url, data=form, headers=headers) as resp:
                body = await resp.json(content_type=None) if resp.status < 500 else None
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UpstreamUnavailable(f"token refresh failed: {type(exc).__name__}") from exc
        if status >= 500 or not isinstance(body, dict):
            raise UpstreamUnavailable(f"token endpoint answered {status}")
        if status != 200 or not body.get("access_token"):
            raise InvalidToken(f"token endpoint refused the refresh ({status} {body.get('error', '')})")
        expires_in = body.get("expires_in")
        return OAuth2Grant(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token") or refresh_token,
            expires_at=time.time() + float(expires_in) if isinstance(expires_in, int | float) else None,
        )


class OAuth2Credential:
    __slots__ = ("_refresher", "username")

    def __init__(self, username: str, refresher: GrantRefresher) -> None:
        self.username = username
        self._refresher = refresher

    def __repr__(self) -> str:
        return f"OAuth2Credential({self.username!r})"

    async def authorization(self, method: str, url: str) -> str:
        grant = await self._refresher.current(self.username)
        return f"Bearer {grant.access_token}"

    async def renew(self, rejected: str) -> bool:
        stale = rejected.removeprefix("Bearer ")
        await self._refresher.refresh(self.username, stale)
        return True
