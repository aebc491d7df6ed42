"""Who is calling: the emulator's stand-in for X's credential checks.

Each way of authenticating is one small function to a ``Caller``: ``bearer_caller`` for OAuth 2.0
bearer tokens (the seed's fixed ones and the expiring grants) and ``oauth1_caller`` for OAuth 1.0a user
context. ``authenticate`` picks one by the ``Authorization`` header's scheme, as X does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from gateway.emulator.grants import GrantBook
from gateway.emulator.oauth1 import OAuth1Keys, SignedRequest, is_oauth1, read_signed_request
from gateway.emulator.state import EmulatorState


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user and the credential their quotas are counted against.

    That is the token they presented, except for a refreshed OAuth 2.0 token, which counts against the
    grant it was refreshed from: a refresh does not reset X's quotas.
    """

    user_id: str
    credential: str


CALLER_KEY = web.RequestKey("emulator_caller", Caller)


async def authenticate(request: web.Request, state: EmulatorState) -> Caller | None:
    """The caller behind the request's credentials, or None when X would answer 401."""
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    if is_oauth1(authorization):
        signed = await read_signed_request(request)
        return oauth1_caller(signed, state.oauth1, state.users, state.now())
    return bearer_caller(authorization, state.tokens, state.users, state.oauth2, state.now())


def bearer_caller(
    authorization: str | None,
    tokens: Mapping[str, str],
    users: Mapping[str, object],
    grants: GrantBook | None = None,
    now: float = 0.0,
) -> Caller | None:
    """The caller a ``Bearer`` header names, or None for a missing, unknown, expired or orphaned token.

    A token whose user is no longer in the data set is refused too, as X refuses tokens of
    deleted accounts.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        return None
    if token in tokens:
        user_id, credential = tokens[token], token
    elif grants is not None and (grant := grants.live_access(token, now)) is not None:
        user_id, credential = grant.user_id, grant.lineage
    else:
        return None
    return Caller(user_id, credential) if user_id in users else None


def oauth1_caller(
    signed: SignedRequest | None, keys: OAuth1Keys, users: Mapping[str, object], now: float
) -> Caller | None:
    """The user whose OAuth 1.0a token validly signed the request, or None (malformed, forged, stale,
    replayed, or a token of a deleted account)."""
    if signed is None:
        return None
    token = keys.verify(signed, now)
    if token is None or token.user_id not in users:
        return None
    return Caller(token.user_id, signed.protocol["oauth_token"])
