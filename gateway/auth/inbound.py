"""Inbound authentication: who is calling, proven the way legacy clients prove it, and the upstream
credential that acts for them.

Tried in order, by what the request carries:

1. ``Authorization: Bearer`` — an integrator's own v2 user token, forwarded untouched; v2 judges it.
2. OAuth 1.0a (``Authorization: OAuth``, or ``oauth_*`` parameters in the query or a form body) — HMAC-SHA1
   verified against the consumer and token in the credential store, timestamp within the window, nonce
   never seen before for that token. Upstream, the same consumer and token are re-signed for v2. The URL
   signed may be the one the request reached, an absolute-form target's (a client whose HTTP proxy is the
   gateway), a public base URL or a name of the gateway's certificate; it never decides where the gateway
   connects. ``oauth1_for_v2`` verifies ``/2/...`` pass-through requests the same way. A token of a
   consumer registered ``--via-upstream-app`` acts as what it is mapped to instead (an X token of the
   operator's app, or a Basic user's v2 grant). ``read_oauth``, ``check_signature``, ``spend_nonce`` and
   ``check_login`` serve the login endpoints too (gateway/oauth_provider.py).
3. ``Authorization: Basic`` — a StatusNet-style user whose password hash is in the store; upstream, the
   user's stored v2 grant, refreshed when it expires. Failed sign-ins are limited per client address and
   per username (``LoginThrottle``), and scrypt runs on a small executor of its own.
4. Nothing at all — the sidecar credential, only where ``[auth] sidecar = true`` (loopback-bound gateways).

Every refusal is raised before anything reaches upstream. An ``Authorization`` header is ASCII or it is
refused: every scheme's credentials are (base64, a bearer token, percent-encoded OAuth parameters).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from urllib.parse import urlsplit
from urllib.request import parse_http_list

from aiohttp import web
from authlib.oauth1.rfc5849.util import unescape
from multidict import MultiDict, MultiDictProxy, MultiMapping

from gateway.auth.credentials import BasicUser, Consumer, CredentialStore, Token, hash_password, verify_password
from gateway.auth.throttle import LoginThrottle, address_key
from gateway.auth.upstream import (
    BearerCredential,
    GrantRefresher,
    OAuth1Credential,
    OAuth2Credential,
    base_string,
    hmac_sha1,
)
from gateway.config import Config
from gateway.errors import (
    BadAuthData,
    InvalidToken,
    LoginsThrottled,
    NotAuthenticated,
    TimestampOutOfBounds,
    UpstreamUnavailable,
)
from gateway.model import Principal, RateLimit, UpstreamCredential
from gateway.store.base import StoreError
from gateway.tls import certificate_bases

_REQUIRED_OAUTH = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature",
                   "oauth_timestamp", "oauth_nonce")  # fmt: skip

Params = list[tuple[str, str]]
_FORM_TYPE = "application/x-www-form-urlencoded"
_NO_FORM: MultiDictProxy[str] = MultiDictProxy(MultiDict())
_NOT_IN_KEY = re.compile('[" \t]')  # characters an OAuth header's key cannot hold

log = logging.getLogger("gateway")

#: The longest ``oauth_nonce`` taken; a longer one is refused and never stored.
MAX_NONCE_CHARS = 64
#: Seconds a nonce is kept beyond the last instant its timestamp is accepted (``timestamp_window`` after
#: it): covers the time between the timestamp check and the store's write, and clocks of replicas sharing a
#: store that differ by up to this much.
NONCE_MARGIN = 60
#: Password checks (scrypt) run at once, on the Authenticator's own threads; more wait their turn.
SCRYPT_WORKERS = 2


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
#: OAuth 1.0a callers re-signed upstream whose Principal (and signer) is kept for their next requests, at most.
OAUTH1_PRINCIPALS_SIZE = 1024


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
        # Base URLs a signature may name besides the one a request arrived at: the configured ones, and
        # https://NAME for each name of the gateway's own serving certificate (gateway.tls).
        configured = tuple(url.rstrip("/") for url in config.auth.public_base_urls)
        self._configured_bases = configured
        self._public_bases = tuple(dict.fromkeys((*configured, *certificate_bases(config))))
        upstream = config.upstream
        self._upstream_app = (
            (upstream.oauth1_consumer_key, upstream.oauth1_consumer_secret)
            if upstream.oauth1_consumer_key and upstream.oauth1_consumer_secret
            else None
        )
        # A Basic client sends its password with every request, and scrypt costs tens of milliseconds of
        # CPU each time. Once a password matched, its user's stored hash and a keyed digest of the password
        # (never the password; the key is this process's own and dies with it) are kept: a later request
        # whose password has the same digest, for a user whose stored hash is still that one, matches
        # without scrypt. The user is read from the store every time, so a changed password or a removed
        # user takes effect at once; a password that does not match always pays the full scrypt.
        self._verified: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._digest_key = secrets.token_bytes(32)
        self._throttle = LoginThrottle(config.auth.max_failed_logins, config.auth.failed_login_window)
        # scrypt never runs on the loop's default executor: aiohttp resolves upstream host names there, and a
        # flood of passwords to check must not keep it from doing so.
        self._scrypt = ThreadPoolExecutor(SCRYPT_WORKERS, thread_name_prefix="dmgw-scrypt")
        # A password check under way, by (username, stored hash, digest of the password): the same check
        # asked for again meanwhile (a client's concurrent requests) waits for it instead of hashing again.
        self._checking: dict[tuple[str, str | None, bytes], asyncio.Future[bool]] = {}
        # The Principal of a verified consumer and token that act upstream with a fixed credential (not a
        # Basic user's grant), by the very records the store answered: a changed or removed secret or
        # mapping is another key, and the store is read on every request all the same.
        self._oauth1_principals: OrderedDict[tuple[Consumer, Token], Principal] = OrderedDict()

    def close(self) -> None:
        """Stop the password-checking threads (checks under way finish; none start)."""
        self._scrypt.shutdown(wait=False, cancel_futures=True)

    async def authenticate(self, request: web.Request, form: MultiMapping[str]) -> Principal:
        header = request.headers.get("Authorization", "").strip()
        scheme, _, rest = header.partition(" ")
        scheme = scheme.lower()
        if not header.isascii():
            raise BadAuthData("authorization header is not ASCII")
        try:
            if scheme == "bearer":
                token = bearer_token(header)
                if token is None:
                    raise BadAuthData("malformed bearer header")
                return _bearer_principal(token)
            if scheme == "oauth" or _has_oauth(request.query) or _has_oauth(form):
                return await self._oauth1(request, form, header if scheme == "oauth" else "")
            if scheme == "basic":
                return await self._basic(rest.strip(), self._client_address(request))
        except StoreError as exc:
            raise UpstreamUnavailable(f"credential store unavailable: {exc}") from exc
        if header:
            raise BadAuthData(f"unsupported authorization scheme {scheme[:20]!r}")
        if self._sidecar:
            return Principal(BearerCredential(self._sidecar), "sidecar", "sidecar")
        raise NotAuthenticated("no credentials")

    # OAuth 1.0a --------------------------------------------------------------------------------------

    async def _oauth1(self, request: web.Request, form: MultiMapping[str], header: str) -> Principal:
        signed = _signed_parameters(request, form, header)
        self._check_timestamp(signed.oauth["oauth_timestamp"])
        consumer = await self._store.get_consumer(signed.oauth["oauth_consumer_key"])
        if consumer is None:
            raise NotAuthenticated("unknown consumer")
        token = await self._store.get_token(signed.oauth["oauth_token"])
        if token is None or token.consumer_key != consumer.key:
            raise InvalidToken("unknown token, or a token of another consumer")
        if not self._signature_matches(request, signed, consumer.secret, token.secret):
            raise NotAuthenticated("signature does not match")
        await self.spend_nonce(signed.oauth, consumer.key, token.token)
        return await self._oauth1_principal(consumer, token)

    async def oauth1_for_v2(self, request: web.Request) -> Principal | None:
        """The caller of a ``/2/...`` request signed with OAuth 1.0a for the gateway, or None when the gateway
        cannot verify the signature (it is then X's to judge, and goes upstream untouched).

        "Cannot verify" is anything that may be a signature for another server: malformed or missing
        parameters, an unknown consumer or token, a signature over a URL that is not one of the gateway's.
        A request whose signature the gateway did verify is its own: a stale timestamp or a spent nonce is
        then refused here (raised), never forwarded. Only the header and the query take part: the body of a
        pass-through request is streamed upstream unread, so a signed form body is never verified."""
        header = request.headers.get("Authorization", "").strip()
        is_oauth_header = header.partition(" ")[0].lower() == "oauth"
        if not header.isascii() or not (is_oauth_header or _has_oauth(request.query)):
            return None
        try:
            signed = _signed_parameters(request, _NO_FORM, header if is_oauth_header else "")
            consumer = await self._store.get_consumer(signed.oauth["oauth_consumer_key"])
            token = await self._store.get_token(signed.oauth["oauth_token"])
        except (BadAuthData, NotAuthenticated):  # malformed, or a nonce too long to be one of ours
            return None
        except StoreError as exc:
            raise UpstreamUnavailable(f"credential store unavailable: {exc}") from exc
        if consumer is None or token is None or token.consumer_key != consumer.key:
            return None
        if not self._signature_matches(request, signed, consumer.secret, token.secret):
            return None
        self._check_timestamp(signed.oauth["oauth_timestamp"])
        try:
            await self.spend_nonce(signed.oauth, consumer.key, token.token)
            return await self._oauth1_principal(consumer, token)
        except StoreError as exc:
            raise UpstreamUnavailable(f"credential store unavailable: {exc}") from exc

    async def _oauth1_principal(self, consumer: Consumer, token: Token) -> Principal:
        """Who a verified consumer and token act as upstream (see ``acting_for``): for a fixed credential,
        the one made for an earlier request with the same records, its signer ready."""
        known = self._oauth1_principals.get((consumer, token))
        if known is not None:
            self._oauth1_principals.move_to_end((consumer, token))
            return known
        credential = await self.acting_for(consumer, token)
        principal = Principal(credential, "oauth1", f"oauth1:{consumer.key}:{token.token}")
        if token.upstream_user is None:  # a Basic user's grant is read from the store each time instead
            self._oauth1_principals[consumer, token] = principal
            if len(self._oauth1_principals) > OAUTH1_PRINCIPALS_SIZE:
                self._oauth1_principals.popitem(last=False)
        return principal

    async def acting_for(self, consumer: Consumer, token: Token) -> UpstreamCredential:
        """The upstream credential a verified consumer and token act with: the same consumer and token
        re-signed (a live X app), or what the token is mapped to (a consumer that acts through the
        operator's app): an X token of that app, or a Basic user's v2 grant."""
        if token.upstream_user is not None:
            user = await self._store.get_user(token.upstream_user)
            if user is None:
                raise InvalidToken(f"the token's user {token.upstream_user!r} is no longer registered")
            return self.grant_credential(user)
        if token.upstream_token is not None and token.upstream_secret is not None:
            if self._upstream_app is None:
                raise UpstreamUnavailable("a mapped token, but no [upstream] oauth1_consumer_key to act with")
            key, secret = self._upstream_app
            return OAuth1Credential(key, secret, token.upstream_token, token.upstream_secret)
        if consumer.via_upstream_app:
            raise InvalidToken("a token of a consumer that acts through the upstream app, mapped to nothing")
        return OAuth1Credential(consumer.key, consumer.secret, token.token, token.secret)

    def grant_credential(self, user: BasicUser) -> UpstreamCredential:
        """What acts upstream for a Basic user: their stored v2 grant, refreshed when it expires."""
        if self._refresher is None:
            return BearerCredential(user.grant.access_token)
        self._refresher.remember(user.username, user.grant)
        return OAuth2Credential(user.username, self._refresher)

    # For the login endpoints (gateway/oauth_provider.py) ------------------------------------------------

    def read_oauth(
        self,
        request: web.Request,
        form: MultiMapping[str],
        header: str,
        *,
        token_required: bool = True,
        loose: tuple[str, ...] = (),
    ) -> tuple[dict[str, str], Params]:
        """The ``oauth_*`` parameters of a signed request and every parameter its signature covers, checked
        as for a DM call, the timestamp included. Without ``token_required`` the call may carry no token
        (a request-token or xAuth call); the ``loose`` parameters (``oauth_verifier`` on an access-token
        call) may stand apart from the others, as clients send them."""
        signed = _signed_parameters(request, form, header, token_required=token_required, loose=loose)
        self._check_timestamp(signed.oauth["oauth_timestamp"])
        return signed.oauth, signed.params

    def check_signature(
        self, request: web.Request, params: Params, oauth: dict[str, str], consumer_secret: str, token_secret: str
    ) -> None:
        """Refuse the request unless its signature is right for one of the URLs it may have signed."""
        if not self._signature_matches(request, _Signed(oauth, params), consumer_secret, token_secret):
            raise NotAuthenticated("signature does not match")

    async def check_login(self, request: web.Request, username: str, password: str) -> BasicUser:
        """The Basic user ``username`` if ``password`` is theirs, counted by the failed-login throttle like a
        Basic sign-in (xAuth is a login): ``NotAuthenticated`` or ``LoginsThrottled`` otherwise."""
        address = self._client_address(request)
        self._refuse_if_throttled(address, username)
        user = await self._store.get_user(username)
        if not await self._password_matches(user, username, password, address) or user is None:
            raise NotAuthenticated("wrong username or password")
        return user

    def own_base_url(self, request: web.Request) -> str:
        """Where browsers reach this gateway: the first of ``[auth] public_base_urls``, else as this request
        reached it."""
        return self._configured_bases[0] if self._configured_bases else self._reached_as(request)

    def _check_timestamp(self, timestamp: str) -> None:
        if abs(self._clock() - int(timestamp)) > self._window:
            raise TimestampOutOfBounds(f"timestamp {timestamp} outside ±{self._window}s")

    def _signature_matches(
        self, request: web.Request, signed: _Signed, consumer_secret: str, token_secret: str
    ) -> bool:
        # Compared as bytes: compare_digest refuses a str with anything but ASCII in it, and a percent-encoded
        # signature may decode to anything.
        signature = signed.oauth["oauth_signature"].encode()
        for uri in self._signed_uris(request):
            try:
                base = base_string(request.method, uri, signed.params)
            except ValueError:  # a Host header or target that makes no URI
                continue
            if hmac.compare_digest(hmac_sha1(base, consumer_secret, token_secret).encode(), signature):
                return True
        return False

    async def spend_nonce(self, oauth: dict[str, str], consumer_key: str, token: str) -> None:
        """Refuse a replayed nonce. Only a verified request may spend one, so a forger cannot block a real
        client's next call; it is kept, on this gateway's clock, past the last instant its timestamp could be
        accepted. ``token`` is "" for a call without one (a request token, xAuth)."""
        scope = f"oauth1:{consumer_key}:{token}"
        timestamp = int(oauth["oauth_timestamp"])
        expires_at = timestamp + self._window + NONCE_MARGIN
        spent = self._store.remember_nonce(
            scope, oauth["oauth_nonce"], expires_at, now=self._clock(), timestamp=timestamp
        )
        if not await spent:
            raise NotAuthenticated("nonce replayed")

    def _signed_uris(self, request: web.Request) -> list[str]:
        """The URLs a client may have signed: an absolute-form target as written (what a client that uses
        the gateway as its HTTP proxy signed), the URL as it reached us (or our trusted proxy), then the
        public bases, and ``https://NAME`` for each DNS name of the gateway's own serving certificate.
        Which host a signature names decides nothing but the signature: the request goes to the upstream."""
        target = request.raw_path.split("?", 1)[0]
        uris = []
        if target.startswith("/"):
            path = target
        else:  # absolute form: the scheme and authority the client signed, then its path
            absolute = _absolute_uri(target)
            path = request.rel_url.raw_path
            if absolute is not None:
                uris.append(absolute)
        uris.append(f"{self._reached_as(request)}{path}")
        uris += (f"{base}{path}" for base in self._public_bases)
        return uris

    def _reached_as(self, request: web.Request) -> str:
        """``scheme://host`` as the client reached us, or as our trusted proxy says it reached it."""
        scheme, host = request.scheme, request.host
        if self._from_trusted_proxy(request):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
        return f"{scheme}://{host}"

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        return self._trusted_address(request.remote)

    def _trusted_address(self, remote: str | None) -> bool:
        if not self._trusted or remote is None:
            return False
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def _client_address(self, request: web.Request) -> str:
        """Who failed logins are counted against: the peer, or behind ``trusted_proxies`` the last address
        in ``X-Forwarded-For`` that is not one of them (the ones before it are the client's to write)."""
        address = request.remote
        if self._trusted_address(address):
            for hop in reversed(",".join(request.headers.getall("X-Forwarded-For", [])).split(",")):
                hop = hop.strip()
                if hop:
                    address = hop
                    if not self._trusted_address(hop):
                        break
        return address_key(address)

    # HTTP Basic --------------------------------------------------------------------------------------

    async def _basic(self, encoded: str, address: str) -> Principal:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (ValueError, binascii.Error):  # UnicodeDecodeError, and non-ASCII input, are ValueErrors
            raise BadAuthData("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise BadAuthData("malformed basic credentials")
        self._refuse_if_throttled(address, username)  # before anything costs: no store read, no scrypt
        user = await self._store.get_user(username)
        matches = await self._password_matches(user, username, password, address)
        if user is None or not matches:
            raise NotAuthenticated("wrong username or password")
        return Principal(self.grant_credential(user), "basic", f"basic:{user.username}")

    def _refuse_if_throttled(self, address: str, username: str) -> None:
        wait = self._throttle.refused_for(address, username)
        if wait > 0:
            reset = int(time.time() + wait) + 1
            raise LoginsThrottled(
                f"too many failed logins from {address} or for this username; refused for {wait:.0f}s",
                rate_limit=RateLimit(self._throttle.limit, 0, reset),
            )

    async def _password_matches(self, user: BasicUser | None, username: str, password: str, address: str) -> bool:
        """Whether ``password`` is ``user``'s; for a user that does not exist, checked against a decoy hash
        all the same, so that timing does not tell who does. Each check that hashes is charged to the
        throttle first and forgiven if the password was right."""
        digest = hmac.digest(self._digest_key, password.encode(), "sha256")
        if user is not None and self._verified.get(user.username) == (user.password_hash, digest):
            self._verified.move_to_end(user.username)
            return True
        stored = user.password_hash if user is not None else None
        check = (username, stored, digest)
        pending = self._checking.get(check)
        if pending is not None:
            matches = await asyncio.shield(pending)  # the same check is under way: its answer is ours
        else:
            # Checked again with no await since: concurrent attempts are each counted before the next.
            self._refuse_if_throttled(address, username)
            if self._throttle.charge(address, username):
                log.warning(
                    "%d failed logins from %s within %ss: its logins are refused until that window has passed",
                    self._throttle.limit, address, self._throttle.window,
                )  # fmt: skip
            # scrypt is deliberately slow: keep it off the event loop, on threads of its own.
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._scrypt, _check_password, password, stored)
            self._checking[check] = pending
            try:
                matches = await asyncio.shield(pending)
            finally:
                if self._checking.get(check) is pending:
                    del self._checking[check]
            if matches and user is not None:
                self._throttle.forgive(address, username)
        if user is None or not matches:
            return False
        self._verified[user.username] = (user.password_hash, digest)
        self._verified.move_to_end(user.username)
        while len(self._verified) > VERIFIED_BASIC_SIZE:
            self._verified.popitem(last=False)
        return True


def _check_password(password: str, stored: str | None) -> bool:
    """On a password-checking thread: ``password`` against the stored hash, or the decoy hash."""
    return verify_password(password, stored if stored is not None else _decoy_hash())


@dataclass(frozen=True, slots=True)
class _Signed:
    """The OAuth 1.0a parameters of a request (``oauth``) and every parameter its signature covers."""

    oauth: dict[str, str]
    params: Params


def _signed_parameters(
    request: web.Request,
    form: MultiMapping[str],
    header: str,
    *,
    token_required: bool = True,
    loose: tuple[str, ...] = (),
) -> _Signed:
    """The signature's parameters, checked for form (one place, nothing twice, nothing missing, HMAC-SHA1,
    a sane nonce and timestamp), from the header, the query and a form-encoded ``form`` body. The ``loose``
    ``oauth_*`` parameters may come from any of them, apart from the others."""
    header_params = _parse_oauth_header(header) if header else []
    query_params: Params = list(request.query.items())
    # Only form-encoded bodies take part in the signature (RFC 5849, 3.4.1.3.1).
    body_params: Params = list(form.items()) if form and request.content_type == _FORM_TYPE else []
    everywhere = (header_params, query_params, body_params)
    sources = [p for p in everywhere if any(k.startswith("oauth_") and k not in loose for k, _ in p)]
    if len(sources) != 1:
        raise BadAuthData("oauth_ parameters must come from exactly one place")
    oauth: dict[str, str] = {}
    for source in everywhere:
        for key, value in source:
            if key.startswith("oauth_") and (source is sources[0] or key in loose):
                if key in oauth:
                    raise BadAuthData(f"{key} given twice")
                oauth[key] = value
    required = _REQUIRED_OAUTH if token_required else tuple(k for k in _REQUIRED_OAUTH if k != "oauth_token")
    missing = [key for key in required if not oauth.get(key)]
    if missing:
        raise BadAuthData(f"missing {', '.join(missing)}")
    if len(oauth["oauth_nonce"]) > MAX_NONCE_CHARS:
        raise NotAuthenticated(f"oauth_nonce over {MAX_NONCE_CHARS} characters")
    if oauth["oauth_signature_method"] != "HMAC-SHA1" or oauth.get("oauth_version", "1.0") != "1.0":
        raise BadAuthData("only HMAC-SHA1, OAuth 1.0")
    timestamp = oauth["oauth_timestamp"]
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise BadAuthData("malformed oauth_timestamp")
    params = [(k, v) for k, v in header_params if k != "realm"] + query_params + body_params
    return _Signed(oauth, params)


def _absolute_uri(target: str) -> str | None:
    """An absolute-form request target's ``scheme://authority/path`` (RFC 9112, 3.2.2), or None when it is
    not an http(s) URI with a host and no user information."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


@lru_cache(maxsize=1024)
def _bearer_principal(token: str) -> Principal:
    """The caller a bearer token names, passing it on upstream. A Principal is immutable and the same few
    tokens come back request after request, so the most recent are kept (the tokens are in memory anyway
    while their requests run)."""
    return Principal(BearerCredential(token), "bearer", token_identity("bearer", token))


def token_identity(kind: str, token: str) -> str:
    """A caller named by a token it holds, without the token: a digest is enough to tell callers apart. (A
    header's undecodable bytes, which aiohttp keeps as surrogates, are digested as they came.)"""
    return f"{kind}:{hashlib.sha256(token.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"


def oauth1_signed(request: web.BaseRequest) -> bool:
    """Whether the request says it is signed with OAuth 1.0a, by its header or its query string (a
    form-encoded body may say so too, but only once it has been read)."""
    scheme = request.headers.get("Authorization", "").strip().partition(" ")[0]
    return scheme.lower() == "oauth" or _has_oauth(request.query)


def _has_oauth(params: MultiMapping[str]) -> bool:
    return any(key.startswith("oauth_") for key in params)


def _header_items(text: str) -> list[str]:
    """The comma-separated items of a header, as ``parse_http_list`` reads them (a comma inside quotes
    belongs to its item). Without a backslash to escape anything, and no quoted comma, that is a split."""
    items = text.split(",")
    if "\\" in text or any(item.count('"') % 2 for item in items):
        return parse_http_list(text)
    if items[-1] == "":  # as parse_http_list: nothing after a last comma is no item
        items.pop()
    return [item.strip() for item in items]


def _unescape(text: str) -> str:
    """Percent-decoded (RFC 5849, 3.6); most of a header's keys and values hold no ``%`` at all."""
    return unescape(text) if "%" in text else text


def _parse_oauth_header(header: str) -> Params:
    """The parameters of ``Authorization: OAuth k="v", ...`` (RFC 5849 section 3.5.1), percent-decoded.

    Each item is a key, ``=`` and a quoted value (an unquoted one is taken too, as many clients send
    them); an item without ``=``, a key that is empty or holds a space or a quote, a value with a quote left
    unbalanced, or a key given twice is a malformed header."""
    params: Params = []
    seen: set[str] = set()
    for item in _header_items(header.partition(" ")[2]):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or _NOT_IN_KEY.search(key):
            raise BadAuthData("malformed OAuth header")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if '"' in value:
            raise BadAuthData("malformed OAuth header: unbalanced quotes")
        key, value = _unescape(key), _unescape(value)
        if key in seen:
            raise BadAuthData(f"OAuth header gives {key[:40]!r} twice")
        seen.add(key)
        params.append((key, value))
    return params
