"""Inbound authentication: who is calling, proven the way legacy clients prove it, and the upstream
credential that acts for them.

Tried in order, by what the request carries:

1. ``Authorization: Bearer`` — an integrator's own v2 user token, forwarded untouched; v2 judges it.
2. OAuth 1.0a (``Authorization: OAuth``, or ``oauth_*`` parameters in the query or a form body) — HMAC-SHA1
   verified against the consumer and token in the credential store, timestamp within the window, nonce
   never seen before for that token. Upstream, the same consumer and token are re-signed for v2.
3. ``Authorization: Basic`` — a StatusNet-style user whose password hash is in the store; upstream, the
   user's stored v2 grant, refreshed when it expires.
4. Nothing at all — the sidecar credential, only where ``[auth] sidecar = true`` (loopback-bound gateways).

Every refusal is raised before anything reaches upstream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import cache, lru_cache
from urllib.request import parse_http_list, parse_keqv_list

from aiohttp import web
from authlib.oauth1.rfc5849.signature import hmac_sha1_signature, normalize_base_string_uri, normalize_parameters
from authlib.oauth1.rfc5849.util import escape, unescape
from multidict import MultiMapping

from gateway.auth.credentials import BasicUser, CredentialStore, hash_password, verify_password
from gateway.auth.upstream import BearerCredential, GrantRefresher, OAuth1Credential, OAuth2Credential
from gateway.config import Config
from gateway.errors import (
    BadAuthData,
    InvalidToken,
    NotAuthenticated,
    TimestampOutOfBounds,
    UpstreamUnavailable,
)
from gateway.model import Principal
from gateway.store.base import StoreError

_REQUIRED_OAUTH = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature",
                   "oauth_timestamp", "oauth_nonce")  # fmt: skip

Params = list[tuple[str, str]]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None. The scheme is case-insensitive."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # A stripped token splits in two exactly when whitespace is left inside it.
    if scheme.lower() != "bearer" or not token or len(token.split(None, 1)) > 1:
        return None
    return token


@cache
def _decoy_hash() -> str:
    """A hash to verify against when the user does not exist, so timing does not tell who does."""
    return hash_password("decoy password, never a real one")


#: Basic callers whose password was checked, kept so that their next requests skip scrypt, at most.
VERIFIED_BASIC_SIZE = 1024


class Authenticator:
    def __init__(
        self,
        config: Config,
        store: CredentialStore,
        refresher: GrantRefresher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._refresher = refresher
        self._clock = clock
        self._window = config.auth.timestamp_window
        self._sidecar = config.upstream.bearer_token if config.auth.sidecar else None
        self._trusted = tuple(ipaddress.ip_network(p, strict=False) for p in config.auth.trusted_proxies)
        self._public_bases = tuple(url.rstrip("/") for url in config.auth.public_base_urls)
        # A Basic client sends its password with every request, and scrypt costs tens of milliseconds of
        # CPU each time. Once a password matched, its user's stored hash and a keyed digest of the password
        # (never the password; the key is this process's own and dies with it) are kept: a later request
        # whose password has the same digest, for a user whose stored hash is still that one, matches
        # without scrypt. The user is read from the store every time, so a changed password or a removed
        # user takes effect at once; a password that does not match always pays the full scrypt.
        self._verified: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._digest_key = secrets.token_bytes(32)

    async def authenticate(self, request: web.Request, form: MultiMapping[str]) -> Principal:
        header = request.headers.get("Authorization", "").strip()
        scheme, _, rest = header.partition(" ")
        scheme = scheme.lower()
        try:
            if scheme == "bearer":
                token = bearer_token(header)
                if token is None:
                    raise BadAuthData("malformed bearer header")
                return _bearer_principal(token)
            if scheme == "oauth" or _has_oauth(request.query) or _has_oauth(form):
                return await self._oauth1(request, form, header if scheme == "oauth" else "")
            if scheme == "basic":
                return await self._basic(rest.strip())
        except StoreError as exc:
            raise UpstreamUnavailable(f"credential store unavailable: {exc}") from exc
        if header:
            raise BadAuthData(f"unsupported authorization scheme {scheme[:20]!r}")
        if self._sidecar:
            return Principal(BearerCredential(self._sidecar), "sidecar", "sidecar")
        raise NotAuthenticated("no credentials")

    # OAuth 1.0a --------------------------------------------------------------------------------------

    async def _oauth1(self, request: web.Request, form: MultiMapping[str], header: str) -> Principal:
        header_params = _parse_oauth_header(header) if header else []
        query_params: Params = list(request.query.items())
        # Only form-encoded bodies take part in the signature (RFC 5849, 3.4.1.3.1).
        body_params: Params = list(form.items()) if request.content_type == "application/x-www-form-urlencoded" else []
        sources = [p for p in (header_params, query_params, body_params) if any(k.startswith("oauth_") for k, _ in p)]
        if len(sources) != 1:
            raise BadAuthData("oauth_ parameters must come from exactly one place")
        oauth: dict[str, str] = {}
        for key, value in sources[0]:
            if key.startswith("oauth_"):
                if key in oauth:
                    raise BadAuthData(f"{key} given twice")
                oauth[key] = value
        missing = [key for key in _REQUIRED_OAUTH if not oauth.get(key)]
        if missing:
            raise BadAuthData(f"missing {', '.join(missing)}")
        if oauth["oauth_signature_method"] != "HMAC-SHA1" or oauth.get("oauth_version", "1.0") != "1.0":
            raise BadAuthData("only HMAC-SHA1, OAuth 1.0")
        timestamp = oauth["oauth_timestamp"]
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise BadAuthData("malformed oauth_timestamp")
        if abs(self._clock() - int(timestamp)) > self._window:
            raise TimestampOutOfBounds(f"timestamp {timestamp} outside ±{self._window}s")

        consumer = await self._store.get_consumer(oauth["oauth_consumer_key"])
        if consumer is None:
            raise NotAuthenticated("unknown consumer")
        token = await self._store.get_token(oauth["oauth_token"])
        if token is None or token.consumer_key != consumer.key:
            raise InvalidToken("unknown token, or a token of another consumer")

        params = [(k, v) for k, v in header_params if k != "realm"] + query_params + body_params
        signature = oauth["oauth_signature"]
        if not any(
            hmac.compare_digest(
                hmac_sha1_signature(_base_string(request.method, uri, params), consumer.secret, token.secret),
                signature,
            )
            for uri in self._signed_uris(request)
        ):
            raise NotAuthenticated("signature does not match")
        # Only a verified request may spend a nonce, so a forger cannot block a real client's next call.
        scope = f"oauth1:{consumer.key}:{token.token}"
        if not await self._store.remember_nonce(scope, oauth["oauth_nonce"], int(timestamp) + self._window):
            raise NotAuthenticated("nonce replayed")
        credential = OAuth1Credential(consumer.key, consumer.secret, token.token, token.secret)
        return Principal(credential, "oauth1", f"oauth1:{consumer.key}:{token.token}")

    def _signed_uris(self, request: web.Request) -> list[str]:
        """The URLs a client may have signed: as it reached us (or our trusted proxy), then public bases."""
        scheme, host = request.scheme, request.host
        if self._from_trusted_proxy(request):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
        path = request.raw_path.split("?", 1)[0]
        return [f"{scheme}://{host}{path}", *(f"{base}{path}" for base in self._public_bases)]

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        if not self._trusted or request.remote is None:
            return False
        try:
            address = ipaddress.ip_address(request.remote)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    # HTTP Basic --------------------------------------------------------------------------------------

    async def _basic(self, encoded: str) -> Principal:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadAuthData("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise BadAuthData("malformed basic credentials")
        user = await self._store.get_user(username)
        matches = await self._password_matches(user, password)
        if user is None or not matches:
            raise NotAuthenticated("wrong username or password")
        if self._refresher is None:
            return Principal(BearerCredential(user.grant.access_token), "basic", f"basic:{user.username}")
        self._refresher.remember(user.username, user.grant)
        return Principal(OAuth2Credential(user.username, self._refresher), "basic", f"basic:{user.username}")

    async def _password_matches(self, user: BasicUser | None, password: str) -> bool:
        """Whether ``password`` is ``user``'s; for a user that does not exist, checked against a decoy hash
        all the same, so that timing does not tell who does."""
        if user is None:
            await asyncio.to_thread(verify_password, password, _decoy_hash())
            return False
        digest = hmac.digest(self._digest_key, password.encode(), "sha256")
        if self._verified.get(user.username) == (user.password_hash, digest):
            self._verified.move_to_end(user.username)
            return True
        # scrypt is deliberately slow: keep it off the event loop.
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            return False
        self._verified[user.username] = (user.password_hash, digest)
        self._verified.move_to_end(user.username)
        while len(self._verified) > VERIFIED_BASIC_SIZE:
            self._verified.popitem(last=False)
        return True


def _base_string(method: str, uri: str, params: Params) -> str:
    """RFC 5849 section 3.4.1, from parameters already decoded exactly once."""
    pairs = normalize_parameters([(k, v) for k, v in params if k != "oauth_signature"])
    return "&".join((escape(method.upper()), escape(normalize_base_string_uri(uri)), escape(pairs)))


@lru_cache(maxsize=1024)
def _bearer_principal(token: str) -> Principal:
    """The caller a bearer token names, passing it on upstream. A Principal is immutable and the same few
    tokens come back request after request, so the most recent are kept: a lookup costs a request less than
    building one and hashing its token (the tokens are in memory anyway while their requests run)."""
    return Principal(BearerCredential(token), "bearer", _token_identity("bearer", token))


def _token_identity(kind: str, token: str) -> str:
    """A caller named by a token it holds, without the token: a digest is enough to tell callers apart."""
    return f"{kind}:{hashlib.sha256(token.encode()).hexdigest()[:32]}"


def _has_oauth(params: MultiMapping[str]) -> bool:
    return any(key.startswith("oauth_") for key in params)


def _parse_oauth_header(header: str) -> Params:
    try:
        items = parse_keqv_list(parse_http_list(header.partition(" ")[2]))
    except (ValueError, IndexError):
        raise BadAuthData("malformed OAuth header") from None
    return [(unescape(key), unescape(value)) for key, value in items.items()]
