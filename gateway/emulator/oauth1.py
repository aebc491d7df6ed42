"""OAuth 1.0a user context: HMAC-SHA1 signatures checked against the request exactly as it arrived.

v2 still accepts the legacy scheme, and the gateway re-signs its legacy clients' calls with it. A signer
that covers the wrong URL, drops a query parameter, runs on a skewed clock or reuses a nonce must be
refused here as X refuses it, so the emulator recomputes every signature rather than trusting the
header. The RFC 5849 arithmetic (encoding, base string URI, parameter normalisation, HMAC) is authlib's.
"""

from __future__ import annotations

import heapq
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from urllib.request import parse_http_list

from aiohttp import hdrs, web
from authlib.oauth1.rfc5849.signature import (
    hmac_sha1_signature,
    normalize_base_string_uri,
    normalize_parameters,
)
from authlib.oauth1.rfc5849.util import escape, unescape

from gateway.emulator.wire import read_form

SIGNATURE_METHOD = "HMAC-SHA1"
# How far a request's oauth_timestamp may stray from the emulator's clock, either way, as at X.
TIMESTAMP_TOLERANCE = 300.0

_REQUIRED = (
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
)
_CONSUMER_REQUIRED = tuple(name for name in _REQUIRED if name != "oauth_token")
_TOKEN_KEYS = ("secret", "consumer", "user_id")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An OAuth 1.0a token: its secret, the consumer it was issued to and the user it acts for."""

    secret: str = field(repr=False)
    consumer: str
    user_id: str


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What an HMAC-SHA1 signature covers: method, URL as received, query and form pairs, header pairs.

    ``protocol`` holds the ``Authorization`` header's parameters, already percent-decoded once.
    """

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    protocol: Mapping[str, str]

    def base_string(self) -> str:
        """RFC 5849 section 3.4.1, built from authlib's pieces.

        authlib's ``construct_base_string`` percent-decodes ``oauth_*`` values a second time, which
        would accept a signature over a doubly encoded value; the header was decoded once already.
        """
        pairs = [*self.params, *((k, v) for k, v in self.protocol.items() if k != "oauth_signature")]
        parts = (self.method.upper(), normalize_base_string_uri(self.url), normalize_parameters(pairs))
        return "&".join(escape(part) for part in parts)


class OAuth1Keys:
    """The consumers and tokens X would know, and the nonces it has already seen."""

    consumers: dict[str, str]
    tokens: dict[str, AccessToken]
    # The name each app shows its users on the authorization page, by consumer key (the key if absent).
    app_names: dict[str, str]

    def __init__(
        self,
        consumers: Mapping[str, str],
        tokens: Mapping[str, AccessToken],
        app_names: Mapping[str, str] | None = None,
    ) -> None:
        self.consumers = dict(consumers)
        self.tokens = dict(tokens)
        self.app_names = dict(app_names or {})
        # ((consumer, token), nonce) pairs still inside the timestamp window, and a heap to forget them in
        # time order.
        self._nonces: set[tuple[tuple[str, str], str]] = set()
        self._expiry: list[tuple[int, tuple[str, str], str]] = []

    @classmethod
    def from_seed(cls, section: Any) -> OAuth1Keys:
        """Keys from a seed's ``"oauth1"`` object; ``ValueError`` names what is malformed.

        Shape: ``{"consumers": {KEY: SECRET}, "app_names": {KEY: NAME}, "tokens": {TOKEN: {"secret": S,
        "consumer": KEY, "user_id": ID}}}``, all strings, ``app_names`` optional. A token's consumer must
        be listed; its user need not exist (such a token is refused like one of a deleted account).
        """
        if not isinstance(section, dict):
            raise ValueError('seed "oauth1" must be an object')
        consumers = section.get("consumers", {})
        if not _is_str_map(consumers):
            raise ValueError('seed "oauth1.consumers" must map consumer keys to secrets')
        app_names = section.get("app_names", {})
        if not _is_str_map(app_names):
            raise ValueError('seed "oauth1.app_names" must map consumer keys to names')
        raw_tokens = section.get("tokens", {})
        if not isinstance(raw_tokens, dict):
            raise ValueError('seed "oauth1.tokens" must be an object')
        tokens: dict[str, AccessToken] = {}
        for token, entry in raw_tokens.items():
            if not isinstance(entry, dict):
                raise ValueError(f"seed oauth1 token {token!r} must be an object")
            missing = [key for key in _TOKEN_KEYS if not isinstance(entry.get(key), str)]
            if missing:
                raise ValueError(f"seed oauth1 token {token!r} lacks {', '.join(missing)} (strings)")
            if entry["consumer"] not in consumers:
                raise ValueError(f"seed oauth1 token {token!r} names unknown consumer {entry['consumer']!r}")
            tokens[token] = AccessToken(entry["secret"], entry["consumer"], entry["user_id"])
        return cls(consumers, tokens, app_names)

    def verify(self, signed: SignedRequest, now: float) -> AccessToken | None:
        """The access token that validly signed this request, or None; a valid nonce is spent on success.

        Spending the nonce only after the signature checks out keeps a forger from burning a real
        client's nonces.
        """
        token_key = signed.protocol.get("oauth_token")
        token = self.tokens.get(token_key) if token_key else None
        if token is None or token.consumer != signed.protocol.get("oauth_consumer_key"):
            return None
        return token if self.check_signature(signed, now, token.secret) else None

    def check_signature(self, signed: SignedRequest, now: float, token_secret: str | None) -> bool:
        """Whether a known consumer signed this request with ``token_secret``; spends the nonce if so.

        ``token_secret`` None is a request signed by the consumer alone (a request-token request):
        it carries no token, or an empty one as some old clients send. Which token the request names,
        and whether it belongs to the consumer, is the caller's to check.
        """
        protocol = signed.protocol
        required = _REQUIRED if token_secret is not None else _CONSUMER_REQUIRED
        if any(name not in protocol for name in required):
            return False
        if token_secret is None and protocol.get("oauth_token"):
            return False
        if protocol["oauth_signature_method"] != SIGNATURE_METHOD:
            return False
        if protocol.get("oauth_version", "1.0") != "1.0":
            return False
        raw_timestamp = protocol["oauth_timestamp"]
        if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
            return False
        timestamp = int(raw_timestamp)
        if abs(now - timestamp) > TIMESTAMP_TOLERANCE:
            return False
        consumer_key = protocol["oauth_consumer_key"]
        consumer_secret = self.consumers.get(consumer_key)
        if consumer_secret is None:
            return False
        try:
            base_string = signed.base_string()
        except ValueError:  # a Host header no URL can hold, such as "["
            return False
        expected = hmac_sha1_signature(base_string, consumer_secret, token_secret or "")
        if not hmac.compare_digest(expected.encode(), protocol["oauth_signature"].encode()):
            return False
        credential = (consumer_key, protocol.get("oauth_token", ""))
        return self._spend_nonce(credential, protocol["oauth_nonce"], timestamp, now)

    def _spend_nonce(self, credential: tuple[str, str], nonce: str, timestamp: int, now: float) -> bool:
        """False for a nonce this (consumer, token) pair already used; forgets nonces gone stale.

        A forgotten nonce cannot be replayed: its signed timestamp now fails the tolerance check.
        """
        while self._expiry and self._expiry[0][0] < now - TIMESTAMP_TOLERANCE:
            _, old_credential, old_nonce = heapq.heappop(self._expiry)
            self._nonces.discard((old_credential, old_nonce))
        if (credential, nonce) in self._nonces:
            return False
        self._nonces.add((credential, nonce))
        heapq.heappush(self._expiry, (timestamp, credential, nonce))
        return True


def is_oauth1(authorization: str | None) -> bool:
    scheme, _, _ = (authorization or "").partition(" ")
    return scheme.lower() == "oauth"


async def read_signed_request(request: web.Request) -> SignedRequest | None:
    """The request as its signer saw it, or None when the ``OAuth`` header is malformed.

    The URL is rebuilt from what arrived (scheme, ``Host`` header, raw path and query), never from
    what the emulator thinks its own address is, so a signer that signs a different URL is caught.
    """
    protocol = _header_parameters(request.headers.get(hdrs.AUTHORIZATION, ""))
    if protocol is None:
        return None
    params = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
    params += await read_form(request) or []
    host = request.headers.get(hdrs.HOST) or request.host
    url = f"{request.scheme}://{host}{request.rel_url.raw_path}"
    return SignedRequest(request.method, url, tuple(params), protocol)


def _header_parameters(authorization: str) -> dict[str, str] | None:
    """The ``name="value"`` pairs of an ``OAuth`` header, decoded; None if malformed or repeated."""
    _, _, rest = authorization.partition(" ")
    parameters: dict[str, str] = {}
    for item in parse_http_list(rest):
        name, equals, value = item.strip().partition("=")
        if not equals or len(value) < 2 or not value.startswith('"') or not value.endswith('"'):
            return None
        name = unescape(name)
        if name in parameters:
            return None
        parameters[name] = unescape(value[1:-1])
    parameters.pop("realm", None)  # names a protection space; never part of the signature
    return parameters


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
