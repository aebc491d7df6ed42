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
import hmac
import logging
import re
import secrets
import time
from collections import deque
from dataclasses import replace
from functools import lru_cache

import aiohttp
from authlib.common.urls import url_decode
from authlib.oauth1.rfc5849.signature import normalize_base_string_uri
from authlib.oauth1.rfc5849.util import escape as _escape

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
    is written once, and a query is escaped once (``_query_pairs``); a request costs its base string, one
    HMAC and one line of header."""

    __slots__ = ("_consumer_secret", "_fixed", "_header", "_token_secret", "consumer_key", "token")

    def __init__(self, consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> None:
        self.consumer_key = consumer_key
        self.token = token
        self._consumer_secret = consumer_secret
        self._token_secret = token_secret
        self._fixed = [
            ("oauth_consumer_key", escape(consumer_key)),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_token", escape(token)),
            ("oauth_version", "1.0"),
        ]
        self._header = ", ".join(f'{k}="{v}"' for k, v in self._fixed)

    def __repr__(self) -> str:
        return f"OAuth1Credential({self.consumer_key!r}, token={self.token!r}, secrets=***)"

    async def authorization(self, method: str, url: str) -> str:
        return self.sign(method, url, secrets.token_hex(16), str(int(time.time())))

    def sign(self, method: str, url: str, nonce: str, timestamp: str) -> str:
        """The header for ``method url`` with this nonce and timestamp (a nonce of letters and digits, which
        like the timestamp's digits escaping leaves as they are)."""
        uri, _, query = url.partition("?")
        escaped = [*self._fixed, ("oauth_nonce", nonce), ("oauth_timestamp", timestamp), *_query_pairs(query)]
        base = signature_base(method, uri, escaped)
        signature = hmac_sha1(base, self._consumer_secret, self._token_secret)
        return (
            f'OAuth {self._header}, oauth_nonce="{nonce}", oauth_timestamp="{timestamp}", '
            f'oauth_signature="{signature.translate(_BASE64_ESCAPED)}"'
        )

    async def renew(self, rejected: str) -> bool:
        return False


#: Percent-encoding of a base64 text: of its characters, only these three are not unreserved.
_BASE64_ESCAPED = str.maketrans({"+": "%2B", "/": "%2F", "=": "%3D"})

#: The longest value ``escape`` keeps; longer than any key, token, nonce or id.
ESCAPE_CACHE_LENGTH = 128


def escape(value: str) -> str:
    """RFC 5849 percent-encoding (section 3.6), each distinct short value encoded once: the keys, consumers,
    tokens, URI segments and query values of a request are mostly those of the requests before it. A long
    value (a caller's form text, say) is encoded each time, so what a caller sends cannot fill memory."""
    return _escape_short(value) if len(value) <= ESCAPE_CACHE_LENGTH else _encoded(value)


@lru_cache(maxsize=4096)
def _escape_short(value: str) -> str:
    return _encoded(value)


#: The characters percent-encoding leaves as they are (RFC 5849, 3.6).
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*")


def _encoded(value: str) -> str:
    """``value`` percent-encoded; one of unreserved characters only (a nonce, an id, a timestamp) is its own
    encoding, found without encoding it."""
    return value if _UNRESERVED.fullmatch(value) else _escape(value)


@lru_cache(maxsize=256)
def _query_pairs(query: str) -> tuple[tuple[str, str], ...]:
    """The parameters of a URL's query, decoded and escaped: a signer's few queries come back and back."""
    return tuple((escape(k), escape(v)) for k, v in url_decode(query))


def escaped_base_uri(uri: str) -> str:
    """The base string URI (RFC 5849, 3.4.1.2), escaped: its scheme and authority normalized and escaped
    once for every path, its path escaped a segment at a time (paths differ by an id, seldom by more). A
    URI with anything that normalizing may change but letter case and a default port is normalized whole."""
    plain = _PLAIN_URI.fullmatch(uri)
    if plain is None:
        return escape(normalize_base_string_uri(uri))
    origin, path = plain.group(1), plain.group(2) or ""
    return "%2F".join((_escaped_origin(origin), *map(escape, path.split("/"))))


#: ``scheme://authority`` and a path (after its first ``/``) that normalizing leaves as they are: no ``;``,
#: ``?``, ``#``, whitespace, control or other character that a URL parser may treat otherwise.
_PLAIN_URI = re.compile(
    r"([A-Za-z][A-Za-z0-9+.\-]*://[A-Za-z0-9\-._~!$&'()*+,=:@%\[\]]*)(?:/([A-Za-z0-9\-._~!$&'()*+,=:@/%]*))?"
)


@lru_cache(maxsize=256)
def _escaped_origin(origin: str) -> str:
    return escape(normalize_base_string_uri(f"{origin}/")).removesuffix("%2F")


def base_string(method: str, uri: str, params: list[tuple[str, str]]) -> str:
    """The signature base string (RFC 5849 section 3.4.1) of a request to ``uri`` (without its query) that
    carries ``params``, each decoded exactly once; ``oauth_signature`` among them is left out."""
    return signature_base(method, uri, [(escape(k), escape(v)) for k, v in params if k != "oauth_signature"])


def signature_base(method: str, uri: str, escaped: list[tuple[str, str]]) -> str:
    """``base_string`` of parameters each escaped already."""
    pairs = "&".join(f"{k}={v}" for k, v in sorted(escaped))
    # Escaped pairs hold nothing but unreserved characters and "%": escaping their text again changes
    # only "%", "=" and "&".
    pairs = pairs.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
    return f"{escape(method.upper())}&{escaped_base_uri(uri)}&{pairs}"


def hmac_sha1(base: str, consumer_secret: str, token_secret: str) -> str:
    """The HMAC-SHA1 signature of a base string (RFC 5849, 3.4.2)."""
    key = f"{escape(consumer_secret)}&{escape(token_secret)}".encode()
    return base64.b64encode(hmac.digest(key, base.encode(), "sha1")).decode("ascii")


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
