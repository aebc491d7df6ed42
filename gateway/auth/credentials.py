"""Credentials the gateway holds: legacy OAuth 1.0a consumers and tokens, Basic users with their upstream
v2 grant, and replay-protection nonces. Every backend of the message store implements ``CredentialStore``
too, so credentials live where messages live (SQLite by default).

Secrets are kept out of ``repr``. Passwords are stored only as scrypt hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

CredentialKind = Literal["consumer", "token", "user"]


@dataclass(frozen=True, slots=True)
class Consumer:
    """An OAuth 1.0a consumer (a legacy application's key and secret).

    A consumer is either a live X app, re-signed upstream as itself, or (``via_upstream_app``) one X no
    longer knows, whose users act at X through the operator's own app (``[upstream] oauth1_consumer_key``);
    its key never reaches X."""

    key: str
    secret: str = field(repr=False)
    via_upstream_app: bool = False


@dataclass(frozen=True, slots=True)
class Token:
    """An OAuth 1.0a access token, issued to ``consumer_key``.

    Without a mapping it is re-signed upstream as the same identity (a live X app's token). A token of a
    ``via_upstream_app`` consumer is mapped: to an X access token of the operator's app
    (``upstream_token`` and its secret), or to a Basic user whose v2 grant acts for it (``upstream_user``).
    """

    token: str
    consumer_key: str
    secret: str = field(repr=False)
    upstream_token: str | None = None
    upstream_secret: str | None = field(default=None, repr=False)
    upstream_user: str | None = None

    @property
    def mapping(self) -> str:
        """What acts upstream for this token, for listings: never a secret."""
        if self.upstream_user is not None:
            return f"acts as user {self.upstream_user}"
        if self.upstream_token is not None:
            return "mapped to an X token of the upstream app"
        return ""


@dataclass(frozen=True, slots=True)
class RequestToken:
    """A pending OAuth 1.0a request token (the first leg of a login), single use, until ``expires_at``.

    ``callback`` is the client's (a URL or ``oob``). For a ``via_upstream_app`` consumer the token is the
    gateway's own and stands for X's request token of the operator's app (``upstream_token`` and secret);
    once X sent the browser back to the gateway, ``verifier`` is the one the gateway gave the client and
    ``upstream_verifier`` X's."""

    token: str
    consumer_key: str
    secret: str = field(repr=False)
    callback: str
    expires_at: float
    upstream_token: str | None = None
    upstream_secret: str | None = field(default=None, repr=False)
    verifier: str | None = field(default=None, repr=False)
    upstream_verifier: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class OAuth2Grant:
    """A v2 OAuth 2.0 user token, refreshable when ``refresh_token`` is set. ``expires_at`` is epoch seconds.
    ``user_id`` is the X account the grant acts for, when known (a grant made through /connect knows it)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class BasicUser:
    """A StatusNet-style user who signs in with HTTP Basic, and the v2 grant used on their behalf."""

    username: str
    password_hash: str = field(repr=False)
    grant: OAuth2Grant


@dataclass(frozen=True, slots=True)
class CredentialEntry:
    """One line of ``dm-gateway credentials list``: never a secret."""

    kind: CredentialKind
    key: str
    detail: str
    # A user's grant: when it expires (epoch seconds), None when unknown. Not printed (``detail`` says it);
    # the admin status page counts the grants expiring soon from it.
    expires_at: float | None = field(default=None, compare=False)


class CredentialStore(Protocol):
    async def put_consumer(self, consumer: Consumer) -> None: ...

    async def get_consumer(self, key: str) -> Consumer | None: ...

    async def put_token(self, token: Token) -> None: ...

    async def get_token(self, token: str) -> Token | None: ...

    async def put_request_token(self, token: RequestToken) -> None:
        """Keep (or replace) a pending request token until its ``expires_at``."""

    async def get_request_token(self, token: str) -> RequestToken | None:
        """A pending request token, or None once it expired or was taken."""

    async def take_request_token(self, token: str) -> RequestToken | None:
        """Remove and return a pending request token, atomically: of concurrent takers only one gets it."""

    async def put_user(self, user: BasicUser) -> None: ...

    async def get_user(self, username: str) -> BasicUser | None: ...

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        """Replace a user's upstream grant (after a refresh); no-op for an unknown user."""

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        """Remove one credential; removing a consumer removes its tokens. False if it did not exist."""

    async def list_credentials(self) -> list[CredentialEntry]: ...

    async def put_pending(self, key: str, record: bytes, expires_at: float) -> None:
        """Keep a short-lived record (an onboarding session, an invite) until ``expires_at`` (epoch seconds),
        replacing any under ``key``. Callers seal anything secret in it before it gets here."""

    async def get_pending(self, key: str) -> bytes | None:
        """The live record under ``key``, or None when there is none or it expired."""

    async def take_pending(self, key: str) -> bytes | None:
        """``get_pending`` and remove it, in one step: of callers racing for one record, one gets it."""

    async def remember_nonce(
        self, scope: str, nonce: str, expires_at: float, *, now: float | None = None, timestamp: int | None = None
    ) -> bool:
        """True the first time (scope, nonce) is seen before ``expires_at``; False for a replay.

        ``now`` and ``expires_at`` are on the caller's clock (epoch seconds; ``now`` defaults to this host's):
        a nonce is live while ``now < expires_at`` and a live one is never replaced. A backend's own clock
        (Redis's) decides nothing, except when to drop a nonce long dead. ``timestamp`` is the one the request
        signed: a backend may then keep nonces apart by it, as RFC 5849 (3.3) asks them to be unique only per
        timestamp, client and token (SQLite does, which lets it write them in time order); a replay, which
        signed the same timestamp, is refused all the same."""


# Passwords ---------------------------------------------------------------------------------------------

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# A stored hash names its own cost. Anything costlier than four times the default is refused rather than
# computed, so a tampered or corrupted row cannot make each sign-in burn seconds of CPU and memory.
MAX_SCRYPT_WORK = 4 * SCRYPT_N * SCRYPT_R * SCRYPT_P
_PREFIX = "scrypt"


def hash_password(password: str) -> str:
    """An encoded scrypt hash, ``scrypt$n$r$p$salt$key`` (base64), fresh salt each time.

    The empty password is refused: a Basic user without one could never be told apart from a client that
    sent no password at all.
    """
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return "$".join((_PREFIX, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``. Never raises: anything malformed is simply a mismatch."""
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    n, r, p, salt, expected = parsed
    try:
        candidate = _scrypt(password.encode("utf-8"), salt, n, r, p, len(expected))
    except (ValueError, MemoryError):  # UnicodeEncodeError is a ValueError too
        return False
    return hmac.compare_digest(candidate, expected)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses more than 32 MiB unless told; allow what these (already bounded) parameters need.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=maxmem)


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = encoded.split("$") if isinstance(encoded, str) else []
    if len(parts) != 6 or parts[0] != _PREFIX:
        return None
    n, r, p = (_positive_int(part) for part in parts[1:4])
    salt, key = _unb64(parts[4]), _unb64(parts[5])
    if n is None or r is None or p is None or salt is None or key is None:
        return None
    if n < 2 or n & (n - 1) or n * r * p > MAX_SCRYPT_WORK:
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def _positive_int(text: str) -> int | None:
    # Only plain ASCII digits: int() would also take "+8", " 8", "8_0" and other scripts' digits.
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value > 0 else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


# Listing -----------------------------------------------------------------------------------------------


def credential_entries(
    consumers: Iterable[str | tuple[str, bool]],
    tokens: Iterable[tuple[str, str] | tuple[str, str, str]],
    users: Iterable[tuple[str, OAuth2Grant]],
) -> list[CredentialEntry]:
    """The listing every backend returns, built from keys only, so no backend can leak a secret into it.

    ``consumers`` are keys or ``(key, via_upstream_app)`` pairs, ``tokens`` ``(token, consumer_key)`` pairs
    or ``(token, consumer_key, mapping)`` (``Token.mapping``), and ``users`` ``(username, grant)`` pairs.
    Consumers come first, then tokens, then users, each sorted by key.
    """
    token_rows = sorted((row[0], row[1], row[2] if len(row) > 2 else "") for row in tokens)
    issued: dict[str, int] = {}
    for _, consumer_key, _ in token_rows:
        issued[consumer_key] = issued.get(consumer_key, 0) + 1
    via = dict((c, False) if isinstance(c, str) else c for c in consumers)
    entries = []
    for key in sorted(via):
        detail = _count(issued.get(key, 0), "token") + (", via upstream app" if via[key] else "")
        entries.append(CredentialEntry("consumer", key, detail))
    entries += [
        CredentialEntry("token", token, f"consumer {consumer_key}" + (f", {mapping}" if mapping else ""))
        for token, consumer_key, mapping in token_rows
    ]
    entries += [
        CredentialEntry("user", name, grant_summary(grant), grant.expires_at)
        for name, grant in sorted(users, key=lambda u: u[0])
    ]
    return entries


def grant_summary(grant: OAuth2Grant) -> str:
    """What an operator may see of a grant: whether it can be refreshed, and when it expires (UTC)."""
    parts = ["upstream grant"]
    if grant.refresh_token:
        parts.append("refreshable")
    if grant.expires_at is not None:
        try:
            when = datetime.fromtimestamp(grant.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):  # outside what a datetime can hold
            when = f"at {grant.expires_at:.0f}"
        parts.append(f"expires {when}")
    return ", ".join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
